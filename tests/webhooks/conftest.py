"""Fixtures of the webhook tests: a receiver, a service with a fast retry policy, the worker's clock."""

from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient

from tests.conftest import reset_caches
from tests.factories import Api
from tests.webhooks.helpers import WORKER_CLOCK
from tests.webhooks.receiver import Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    if r.hold is not None:
        r.hold.set()
    r.stop()


@pytest.fixture
def hooks(database, tmp_path, monkeypatch, admin_headers):
    """Builds (Api, policy) against a fresh app whose policy [webhooks] section has the given values."""
    from guanhao.app import create_app
    from guanhao.policy import DEFAULT_POLICY_PATH, get_policy

    stack = ExitStack()

    def build(**values) -> tuple[Api, object]:
        values = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2, "timeout_seconds": 2.0} | values
        head, section = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").split("[webhooks]", 1)
        lines = section.splitlines()
        for key, value in values.items():
            [i] = [n for n, line in enumerate(lines) if line.startswith(f"{key} =")]
            lines[i] = f"{key} = {value}"
        path = tmp_path / "policy.toml"
        path.write_text(head + "[webhooks]" + "\n".join(lines) + "\n", encoding="utf-8")
        monkeypatch.setenv("GUANHAO_POLICY", str(path))
        reset_caches()
        client = stack.enter_context(TestClient(create_app(), raise_server_exceptions=False))
        return Api(client, admin_headers), get_policy()

    with stack:
        yield build
    reset_caches()


@pytest.fixture(autouse=True)
def _worker_clock():
    WORKER_CLOCK.reset()
