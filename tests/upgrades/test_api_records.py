"""The upgrade workflow through the HTTP API: consents, the audit trail and events."""

import datetime as dt

from tests.upgrades.helpers import T0, admin_view, approve, snapshot, staff_reject, submitted

# ---------------------------------------------------------------- consents, audit, events


def test_r15_consents_recorded_with_agreement_version(api, shop):
    """R-15 the merchant's and the holder's consent, with the agreement version they saw, visible to staff."""
    subject_id, shop_id, _, _ = shop
    app = submitted(api, shop_id, api.merchant(subject_id))
    view = admin_view(api, app["application_id"])
    assert view["confirmation_url"].startswith("http://testserver/confirm/")
    assert [(c["party"], c["decision"]) for c in view["consents"]] == [("merchant", "agreed")]
    confirmation = api.client.get(f"/api/v1/confirmations/{api.token(app['application_id'])}").json()
    assert confirmation["agreement_version"] == "2025-09-30"
    assert confirmation["status"] == "submitted"
    api.set_clock(T0 + dt.timedelta(hours=2))
    api.accept(app["application_id"])
    view = admin_view(api, app["application_id"])
    assert [(c["party"], c["decision"], c["agreement_version"]) for c in view["consents"]] == [
        ("merchant", "agreed", "2025-09-30"),
        ("holder", "accepted", "2025-09-30"),
    ]
    assert dt.datetime.fromisoformat(view["consents"][0]["at"]) == T0
    assert dt.datetime.fromisoformat(view["consents"][1]["at"]) == T0 + dt.timedelta(hours=2)
    assert view["consents"][0]["actor"] != view["consents"][1]["actor"]


def test_r15_holder_decline_is_recorded_as_consent(api, shop):
    """R-15 a declined confirmation is recorded too."""
    _, shop_id, _, _ = shop
    app = submitted(api, shop_id)
    api.decline(app["application_id"])
    view = admin_view(api, app["application_id"])
    assert [(c["party"], c["decision"]) for c in view["consents"]] == [("merchant", "agreed"), ("holder", "declined")]


def test_r62_admin_view_is_staff_only(api, shop):
    """R-62 the confirmation link is for staff only."""
    subject_id, shop_id, _, _ = shop
    app = submitted(api, shop_id)
    r = api.client.get(f"/api/v1/admin/upgrade-applications/{app['application_id']}", headers=api.merchant(subject_id))
    assert r.status_code == 403
    assert "confirmation_url" not in api.application(app["application_id"])


def test_r20_r61_every_transition_is_audited_and_emits_an_event(api, shop):
    """R-20 who/when/from/to for each transition; R-61 one outbox event per state change, in order."""
    subject_id, shop_id, _, _ = shop
    merchant = api.merchant(subject_id)
    _, big_shop, _ = api.ready_shop(subject_id, account_fields={"followers": 1_000_000})
    app = submitted(api, big_shop, merchant)
    api.set_clock(T0 + dt.timedelta(hours=1))
    api.accept(app["application_id"])
    api.set_clock(T0 + dt.timedelta(hours=2))
    staff_reject(api, app["application_id"], "资料不全")

    trail = api.audit(app["application_id"])
    transitions = [(a["from"], a["to"]) for a in trail if a["from"] != a["to"]]
    assert transitions == [(None, "submitted"), ("submitted", "reviewing"), ("reviewing", "rejected")]
    moves = [a for a in trail if a["from"] != a["to"]]
    assert [dt.datetime.fromisoformat(a["at"]) for a in moves] == [
        T0,
        T0 + dt.timedelta(hours=1),
        T0 + dt.timedelta(hours=2),
    ]
    assert moves[0]["actor"] != "holder" and moves[1]["actor"] == "holder"
    assert moves[2]["actor"] not in ("holder", "system", moves[0]["actor"])
    assert all(a["target_id"] == app["application_id"] for a in trail)

    events = api.events(shop_id=big_shop)
    assert [e["type"] for e in events] == [
        "upgrade.submitted",
        "upgrade.confirmation_requested",
        "upgrade.reviewing",
        "upgrade.rejected",
    ]
    assert all(e["data"]["application_id"] == app["application_id"] for e in events)
    assert events[-1]["data"]["reasons"] == ["STAFF_REJECTED"]
    assert len({e["event_id"] for e in events}) == 4


def test_r61_refused_verbs_emit_nothing(api, shop):
    """R-20, R-61 a refused transition leaves no audit row and no event."""
    _, shop_id, _, _ = shop
    app = submitted(api, shop_id)
    api.decline(app["application_id"])
    before = snapshot(api, shop_id, app["application_id"])
    assert api.accept(app["application_id"]).status_code == 409
    assert api.decline(app["application_id"]).status_code == 409
    assert approve(api, app["application_id"]).status_code == 409
    assert staff_reject(api, app["application_id"], "x").status_code == 409
    assert snapshot(api, shop_id, app["application_id"]) == before
