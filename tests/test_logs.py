"""Logs (issue 8, item 11; SPEC R-50): one JSON line per event — a traceback is a field of its line —
uvicorn's own loggers through the same formatter, a request id on every line written while a request
runs and in the X-Request-ID response header, and never a personal value: the access line names the
route template, never the raw path or the query, and a request id shaped like personal data is
replaced."""

import io
import json
import logging

import pytest
import structlog
from fastapi.testclient import TestClient

from guanhao import logs

PHONE = "13800138000"


@pytest.fixture
def log_lines():
    buffer = io.StringIO()
    logs.configure("INFO", stream=buffer)
    yield lambda: [line for line in buffer.getvalue().splitlines() if line]
    structlog.reset_defaults()


def _events(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_a_request_id_is_on_every_line_of_the_request_and_in_the_response(app, log_lines, admin_headers):
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get(
            "/api/v1/shops/shop-404/official-account",
            params={"phone": PHONE},
            headers=admin_headers | {"X-Request-ID": "req-7f3a9c01-edge"},
        )
        assert r.status_code == 404
        assert r.headers["x-request-id"] == "req-7f3a9c01-edge"
        generated = client.get("/healthz").headers["x-request-id"]
    lines = log_lines()
    [access] = [e for e in _events(lines) if e["event"] == "request" and e["status"] == 404]
    assert access["request_id"] == "req-7f3a9c01-edge"
    assert access["route"] == "/api/v1/shops/{shop_id}/official-account"
    assert access["method"] == "GET" and access["level"] == "info" and access["pid"]
    [health] = [e for e in _events(lines) if e["event"] == "request" and e["route"] == "/healthz"]
    assert health["request_id"] == generated and len(generated) == 32
    text = "\n".join(lines)
    assert "shop-404" not in text and PHONE not in text


@pytest.mark.parametrize("sent", [PHONE, "ID-11010519491231002X", "has a space in it", "short", "x" * 200, "<script>"])
def test_a_request_id_that_is_not_a_sane_opaque_id_is_replaced(client, log_lines, sent):
    r = client.get("/healthz", headers={"X-Request-ID": sent})
    assert r.headers["x-request-id"] != sent
    assert len(r.headers["x-request-id"]) == 32
    assert sent not in "\n".join(log_lines())


def test_a_traceback_is_a_field_of_its_one_json_line(app, log_lines):
    def explode():
        raise RuntimeError("boom in a route")

    app.add_api_route("/api/v1/explode", explode)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/api/v1/explode", headers={"X-Request-ID": "req-explode-0001"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-request-id"] == "req-explode-0001"
    events = _events(log_lines())
    [error] = [e for e in events if e["event"] == "unhandled"]
    assert error["level"] == "error"
    assert error["request_id"] == "req-explode-0001"
    assert error["route"] == "/api/v1/explode"
    [exception] = error["exception"]
    assert exception["exc_type"] == "RuntimeError"
    assert exception["exc_value"] == "boom in a route"
    assert any(frame["name"] == "explode" for frame in exception["frames"])
    assert all("locals" not in frame for frame in exception["frames"])  # locals may hold personal data
    [access] = [e for e in events if e["event"] == "request"]
    assert access["status"] == 500 and access["request_id"] == "req-explode-0001"


def test_uvicorn_loggers_go_through_the_same_json_formatter(log_lines):
    try:
        raise ValueError("uvicorn saw this")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("uvicorn").info("Started server process [%d]", 4242)
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /x?phone=%s HTTP/1.1" 200', PHONE)
    events = _events(log_lines())
    assert [e["logger"] for e in events] == ["uvicorn.error", "uvicorn"]
    assert events[0]["exception"][0]["exc_type"] == "ValueError"
    assert events[1]["event"] == "Started server process [4242]"


def test_the_app_factory_sets_up_json_logs_in_its_process(database):
    """Each `serve --workers N` process is spawned afresh and only builds the app: that must be enough."""
    from guanhao.app import create_app

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_guanhao", False):
            root.removeHandler(handler)
    structlog.reset_defaults()
    create_app()
    assert any(getattr(h, "_guanhao", False) for h in root.handlers)
    assert structlog.get_config()["logger_factory"].__class__ is structlog.stdlib.LoggerFactory
