"""Fixtures of the upgrade workflow's HTTP tests: a ready shop, an app with a changed policy."""

import pytest
from fastapi.testclient import TestClient

from tests import factories
from tests.conftest import reset_caches
from tests.factories import Api
from tests.upgrades.helpers import T0


@pytest.fixture
def shop(api):
    """(subject_id, shop_id, account_id, holder) of a ready shop, clock frozen at T0."""
    api.set_clock(T0)
    holder = factories.person()
    subject_id, shop_id, account_id = api.ready_shop(holder=holder)
    return subject_id, shop_id, account_id, holder


@pytest.fixture
def policy_api(database, tmp_path, monkeypatch, admin_headers):
    """Builds an Api against a fresh app whose policy file is the default with some lines replaced."""
    from contextlib import ExitStack

    from guanhao.app import create_app
    from guanhao.policy import DEFAULT_POLICY_PATH

    stack = ExitStack()

    def build(**replacements: str) -> Api:
        text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
        for old, new in replacements.items():
            assert old in text, old
            text = text.replace(old, new)
        path = tmp_path / "policy.toml"
        path.write_text(text, encoding="utf-8")
        monkeypatch.setenv("GUANHAO_POLICY", str(path))
        reset_caches()
        client = stack.enter_context(TestClient(create_app(), raise_server_exceptions=False))
        return Api(client, admin_headers)

    with stack:
        yield build
    reset_caches()


@pytest.fixture
def deadline_api(policy_api):
    """An Api whose policy sets upgrade_deadline = 2026-06-30T00:00:00+08:00 (R-14)."""
    return policy_api(
        **{"# upgrade_deadline = 2027-06-30T00:00:00+08:00": "upgrade_deadline = 2026-06-30T00:00:00+08:00"}
    )
