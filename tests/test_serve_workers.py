"""`guanhao serve --workers 2` (issue 8, items 10 and 11): every process — the parent and each spawned
worker — writes one JSON object per line, and whichever worker answers a scrape of /metrics reports
the requests of both (prometheus-client's multiprocess mode, set up by `serve`)."""

import json
import os
import time
import uuid

import httpx
import pytest

from tests.serving import guanhao_serve
from tests.test_metrics import value


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-workers")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {
        "GUANHAO_DATABASE_URL": f"sqlite:///{tmp / 'serve.sqlite3'}",
        "GUANHAO_VAR_DIR": str(tmp / "var"),
        "GUANHAO_LOG_LEVEL": "INFO",
    }
    log_path = tmp / "serve.log"
    with guanhao_serve(env, log_path, args=("--workers", "2")) as (base, _proc):
        yield base, log_path


def _records(log_path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


def _answered_by(log_path, request_ids: set[str]) -> dict[str, int]:
    return {
        r["request_id"]: r["pid"]
        for r in _records(log_path)
        if r.get("event") == "request" and r.get("request_id") in request_ids
    }


def _pid_of(log_path, rid: str) -> int:
    """The worker that answered request `rid` (its access line is written just after the response)."""
    deadline = time.monotonic() + 10
    while (pid := _answered_by(log_path, {rid}).get(rid)) is None:
        assert time.monotonic() < deadline, f"no access line for {rid}"
        time.sleep(0.02)
    return pid


def _get(url: str, rid: str) -> httpx.Response:
    # A new connection each time, so that either worker may accept it.
    return httpx.get(url, headers={"X-Request-ID": rid}, timeout=10)


def test_every_worker_reports_the_requests_of_all(two_workers):
    base, log_path = two_workers
    sent: set[str] = set()
    # Until both workers have answered some of them (each request's pid is in its access line).
    for _ in range(400):
        rid = f"req-health-{uuid.uuid4().hex}"
        assert _get(f"{base}/healthz", rid).status_code == 200
        sent.add(rid)
        if len(sent) % 10 == 0 and len(set(_answered_by(log_path, sent).values())) == 2:
            break
    assert len(set(_answered_by(log_path, sent).values())) == 2, "one worker answered every request"

    scrapers: set[int] = set()
    for _ in range(200):
        rid = f"req-scrape-{uuid.uuid4().hex}"
        r = _get(f"{base}/metrics", rid)
        assert r.status_code == 200
        assert value(r.text, "guanhao_http_requests_total", method="GET", route="/healthz", status=200) == len(sent)
        scrapers.add(_pid_of(log_path, rid))
        if len(scrapers) == 2:
            break
    assert len(scrapers) == 2, "one worker answered every scrape"


def test_every_process_writes_json_lines_with_a_request_id_on_request_lines(two_workers):
    base, log_path = two_workers
    assert _get(f"{base}/api/v1/shops/s-1/official-account?phone=13800138000", "req-json-lines-0001").status_code == 401
    text = log_path.read_text()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]  # fails on a line not one JSON object
    assert len(records) == len(text.splitlines())
    pids = {r["pid"] for r in records}
    assert len(pids) >= 3, "the parent and both workers"
    started = [r for r in records if r["event"].startswith("Started server process")]
    assert len({r["pid"] for r in started}) == 2
    for r in records:
        if r["event"] == "request":
            assert r["request_id"], r
    assert "13800138000" not in text and "s-1" not in text
