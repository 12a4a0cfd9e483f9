"""Signed webhooks (SPEC R-61): the ways to run the delivery worker (serve --deliver-webhooks, the CLI)."""

import os
import time

import httpx
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from guanhao.webhooks import service
from tests.conftest import reset_caches
from tests.factories import Api
from tests.serving import guanhao_serve
from tests.webhooks.helpers import API, register

# ---------------------------------------------------------------- the ways to run the worker


def _policy_env(tmp_path, monkeypatch, **values):
    from guanhao.policy import DEFAULT_POLICY_PATH

    values = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2} | values
    head, section = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").split("[webhooks]", 1)
    lines = section.splitlines()
    for key, value in values.items():
        [i] = [n for n, line in enumerate(lines) if line.startswith(f"{key} =")]
        lines[i] = f"{key} = {value}"
    path = tmp_path / "policy.toml"
    path.write_text(head + "[webhooks]" + "\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("GUANHAO_POLICY", str(path))


def test_r61_serve_with_deliver_webhooks_delivers(database, tmp_path, monkeypatch, admin_headers, receiver):
    from guanhao.app import create_app

    _policy_env(tmp_path, monkeypatch)
    monkeypatch.setenv("GUANHAO_DELIVER_WEBHOOKS", "1")
    reset_caches()
    receiver.start()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        api = Api(client, admin_headers)
        _, secret = register(api, receiver.url())
        _, shop_id, _ = api.ready_shop()
        api.upgrade(shop_id)
        events = api.events()
        deadline = time.monotonic() + 20
        while len(receiver.received(ok_only=True)) < len(events) and time.monotonic() < deadline:
            time.sleep(0.1)
    got = receiver.received(ok_only=True)
    assert [r["headers"]["webhook-id"] for r in got] == [e["event_id"] for e in events]
    assert all(service.verify(secret, r["headers"], r["body"], now=int(time.time())) for r in got)
    reset_caches()


def test_r61_guanhao_serve_deliver_webhooks(database, tmp_path, monkeypatch, admin_headers, receiver):
    """The real command in its own process, against this test's database."""
    _policy_env(tmp_path, monkeypatch)
    receiver.start()
    env = os.environ | {"NO_PROXY": "127.0.0.1"}
    with (
        guanhao_serve(
            env, tmp_path / "serve.log", args=("--deliver-webhooks",), ready=f"{API}/health", timeout=120
        ) as (base, _proc),
        httpx.Client(base_url=base, trust_env=False, timeout=10) as client,
    ):
        api = Api(client, admin_headers)
        _, secret = register(api, receiver.url())
        _, shop_id, _ = api.ready_shop()
        api.upgrade(shop_id)
        events = api.events()
        deadline = time.monotonic() + 60  # the embedded worker is a process starting beside the server
        while len(receiver.received(ok_only=True)) < len(events) and time.monotonic() < deadline:
            time.sleep(0.1)
    got = receiver.received(ok_only=True)
    assert [r["headers"]["webhook-id"] for r in got] == [e["event_id"] for e in events]
    assert all(service.verify(secret, r["headers"], r["body"], now=int(time.time())) for r in got)


def test_r61_serve_without_the_flag_delivers_nothing(api, receiver):
    receiver.start()
    register(api, receiver.url())
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    time.sleep(1.5)
    assert receiver.received() == []


def test_r61_cli_events_deliver_once(hooks, receiver):
    from guanhao.cli import app as cli

    api, _ = hooks()
    register(api, receiver.url())
    receiver.start()
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    result = CliRunner().invoke(cli, ["events", "deliver", "--once"])
    assert result.exit_code == 0, result.output
    assert "queued" in result.output and "delivered" in result.output
    # one round sends each shop's head: the first event
    assert [r["headers"]["webhook-id"] for r in receiver.received()] == [api.events()[0]["event_id"]]
