"""R-62: the holder's confirmation link is a capability for the holder alone. Outside sandbox mode it travels only
towards the holder — the SMS to the holder's phone and the `upgrade.confirmation_requested` event — and never
appears in staff-facing responses, other events, the audit trail or stored SMS text. In sandbox mode staff can
read it (to test). Both modes, over HTTP."""

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from guanhao import sms
from tests.conftest import reset_caches
from tests.factories import Api

API = "/api/v1"


class Provider:
    """An SMS provider plugged in with `sms.use`: what it was asked to send."""

    def __init__(self):
        self.sent: list[dict] = []

    def send(self, session, *, phone, text, code, purpose, now):
        self.sent.append({"phone": phone, "text": text, "purpose": purpose})


@pytest.fixture
def production(database, monkeypatch):
    """The API outside sandbox mode, against this test's database."""
    monkeypatch.setenv("GUANHAO_SANDBOX", "0")
    reset_caches()
    from guanhao.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client
    reset_caches()


def _requested(api: Api, application_id: str) -> tuple[dict, list[dict]]:
    events = api.events()
    [asked] = [
        e
        for e in events
        if e["type"] == "upgrade.confirmation_requested" and e["data"]["application_id"] == application_id
    ]
    return asked, [e for e in events if e is not asked]


def test_r62_outside_sandbox_the_link_travels_only_towards_the_holder(production, admin_headers, engine):
    api = Api(production, admin_headers)
    provider = Provider()
    sms.use(provider)
    try:
        subject_id, shop_id, _ = api.ready_shop()
        merchant = api.merchant(subject_id)
        r = api.submit(shop_id, merchant)
        assert r.status_code == 201, r.text
        app_id = r.json()["application_id"]
    finally:
        sms.use(None)

    asked, others = _requested(api, app_id)
    link = asked["data"]["confirmation_url"]
    token = link.rsplit("/", 1)[1]
    assert len(token) >= 20
    # towards the holder: the event the platform's app asks with, and the SMS handed to the provider
    assert [m["purpose"] for m in provider.sent] == ["holder_confirmation"] and link in provider.sent[0]["text"]

    # staff-facing responses: no link, not even as null
    staff = production.get(f"{API}/admin/upgrade-applications/{app_id}", headers=api.admin)
    assert staff.status_code == 200
    assert "confirmation_url" not in staff.json()
    reads = [
        staff,
        production.get(f"{API}/upgrade-applications/{app_id}", headers=merchant),
        production.get(f"{API}/shops/{shop_id}/upgrade-applications", headers=merchant),
        production.get(f"{API}/subjects/{subject_id}/upgrade-applications", headers=api.admin),
        production.get(f"{API}/shops/{shop_id}/official-account", headers=api.admin),
        production.get(f"{API}/admin/audit", headers=api.admin),
    ]
    for r in reads:
        assert r.status_code == 200, r.text
        assert token not in r.text, r.request.url
    # the sandbox paths are not there
    assert production.get(f"{API}/sandbox/sms", params={"phone": "13900000000"}, headers=api.admin).status_code == 404

    # the holder answers with it; afterwards no other event, audit row or stored SMS text holds it
    assert production.post(f"{API}/confirmations/{token}/accept").status_code == 200
    _, others = _requested(api, app_id)
    assert others and all(token not in str(e) for e in others)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sandbox_sms")).scalar_one() == 0
        trail = conn.execute(sa.text("SELECT detail FROM audit_log")).scalars().all()
    assert trail and all(token not in str(detail) for detail in trail)


def test_r62_in_sandbox_mode_staff_can_read_the_link_to_test(api, engine):
    subject_id, shop_id, account_id = api.ready_shop()
    app_id = api.submit(shop_id).json()["application_id"]
    asked, others = _requested(api, app_id)
    link = asked["data"]["confirmation_url"]
    staff = api.client.get(f"{API}/admin/upgrade-applications/{app_id}", headers=api.admin).json()
    assert staff["confirmation_url"] == link
    # the sandbox keeps the SMS it 'sent', link included, for tests
    with engine.connect() as conn:
        texts = conn.execute(sa.text("SELECT text FROM sandbox_sms WHERE purpose = 'holder_confirmation'")).scalars()
        assert any(link in t for t in texts)
    # still: no other event carries it
    token = link.rsplit("/", 1)[1]
    assert all(token not in str(e) for e in others)
