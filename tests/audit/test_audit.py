"""The audit trail (SPEC R-20, R-60): every change recorded, readable by staff, append-only at the database."""

import pytest
import sqlalchemy as sa

from tests.factories import person


def test_r60_sync_is_audited(api):
    subject_id, shop_id, account_id = api.ready_shop()
    api.subject(subject_id, name="改名后的主体")
    [created, updated] = api.audit(subject_id)
    assert (created["action"], updated["action"]) == ("subject.created", "subject.updated")
    assert created["actor"].startswith("admin:")
    shop_trail = [a["action"] for a in api.audit(shop_id)]
    assert shop_trail == ["shop.created", "shop.official_account_bound"]
    bound = api.audit(shop_id)[1]
    assert (bound["from"], bound["to"]) == (None, account_id)
    assert [a["action"] for a in api.audit(account_id)] == ["account.created"]
    for row in api.audit(shop_id) + api.audit(account_id):
        assert {"at", "actor", "action", "target_id", "from", "to"} <= set(row)
        assert row["at"].endswith(("Z", "+00:00"))


def test_r50_account_audit_holds_the_holder_masked_only(api):
    holder = person(name="赵钱孙")
    _, _, account_id = api.ready_shop(holder=holder)
    [row] = api.audit(account_id)
    text = str(row)
    assert holder["id_number"] not in text and holder["phone"] not in text and "赵钱孙" not in text
    assert row["detail"]["holder"]["name"] == "赵**"


def test_r20_transitions_are_audited_with_who_when_from_to_why(api):
    subject_id, shop_id, _ = api.ready_shop()
    merchant = api.merchant(subject_id)
    app_id = api.submit(shop_id, merchant).json()["application_id"]
    assert api.decline(app_id).status_code == 200
    trail = api.audit(app_id)
    assert [(a["from"], a["to"]) for a in trail] == [(None, "submitted"), ("submitted", "rejected")]
    assert trail[0]["actor"].startswith("merchant:")
    assert trail[1]["actor"] == "holder"
    assert all(a["target_id"] == app_id for a in trail)
    assert "HOLDER_DECLINED" in str(trail[1]["detail"])

    second = api.submit(shop_id, merchant).json()["application_id"]
    r = api.client.post(f"/api/v1/upgrade-applications/{second}/withdraw", headers=merchant)
    assert r.status_code == 200, r.text
    assert [(a["from"], a["to"]) for a in api.audit(second)] == [(None, "submitted"), ("submitted", "withdrawn")]


def test_r20_staff_decisions_are_audited(api):
    subject_id, shop_id, _ = api.ready_shop(account_fields={"followers": 2_000_000})
    app = api.upgrade(shop_id)
    assert app["status"] == "reviewing"
    r = api.client.post(
        f"/api/v1/admin/upgrade-applications/{app['application_id']}/reject",
        json={"reason": "资料不符"},
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    last = api.audit(app["application_id"])[-1]
    assert (last["from"], last["to"]) == ("reviewing", "rejected")
    assert last["actor"].startswith("admin:")


def test_r60_a_refused_transition_writes_no_audit_row(api):
    subject_id, shop_id, _ = api.ready_shop()
    app_id = api.submit(shop_id).json()["application_id"]
    before = api.audit(app_id)
    r = api.client.post(f"/api/v1/admin/upgrade-applications/{app_id}/approve", headers=api.admin)
    assert r.status_code == 409
    assert api.audit(app_id) == before


def test_audit_is_staff_only(api):
    subject_id = api.subject()
    r = api.client.get("/api/v1/admin/audit", params={"target_id": subject_id}, headers=api.merchant(subject_id))
    assert r.status_code == 403


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET action = 'forged'",
        "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 1",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE seq = 1",
    ],
)
def test_r60_audit_log_is_append_only_at_the_database(api, engine, statement):
    subject_id = api.subject()
    before = api.audit(subject_id)
    assert before
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text(statement))
    assert api.audit(subject_id) == before
    # appending still works
    api.subject(subject_id, name="再次同步")
    assert len(api.audit(subject_id)) == len(before) + 1


def test_r60_consents_are_in_the_hash_chain_with_party_version_and_where_the_answer_came_from(api):
    """R-15, R-60: the merchant's consent and the holder's answer are audit rows of the subject's chain, with the
    agreement version, the party and decision, and (for the holder) the client address and user agent."""
    subject_id, shop_id, _ = api.ready_shop()
    app_id = api.submit(shop_id).json()["application_id"]
    token = api.token(app_id)
    r = api.client.post(f"/api/v1/confirmations/{token}/accept", headers={"User-Agent": "Douyin/31.2 (iPhone)"})
    assert r.status_code == 200, r.text
    submitted, answered = api.audit(app_id)[:2]
    assert submitted["detail"]["consent"] == {
        "party": "merchant",
        "decision": "agreed",
        "agreement_version": "2025-09-30",
    }
    assert answered["detail"]["consent"] == {
        "party": "holder",
        "decision": "accepted",
        "agreement_version": "2025-09-30",
    }
    assert answered["detail"]["client"]["user_agent"] == "Douyin/31.2 (iPhone)"
    assert answered["detail"]["client"]["address"]
    assert answered["chain"] == subject_id == submitted["chain"]


def test_r60_pending_change_expiry_and_failure_are_audited(api):
    """R-60: an SMS change that expires (by the sweep) or fails on too many wrong codes leaves a row with from/to."""
    import datetime as dt

    _, shop_id, account_id = api.ready_shop()
    assert api.upgrade(shop_id)["status"] == "succeeded"
    base = f"/api/v1/shops/{shop_id}/official-account/phone-rebinds"
    rebind = api.client.post(base, json={"new_phone": "13700137000"}, headers=api.admin).json()["rebind_id"]
    for _ in range(5):
        api.client.post(f"{base}/{rebind}/verify", json={"code": "000000"}, headers=api.admin)
    failed = [a for a in api.audit(account_id) if a["action"] == "login_phone.change_failed"]
    assert [(a["from"], a["to"], a["detail"]["change_id"]) for a in failed] == [("pending", "failed", rebind)]

    api.set_clock(api.now() + dt.timedelta(minutes=2))
    second = api.client.post(base, json={"new_phone": "13700137001"}, headers=api.admin).json()["rebind_id"]
    api.set_clock(api.now() + dt.timedelta(minutes=10))
    r = api.client.post("/api/v1/admin/jobs/expire-pending-changes/run", headers=api.admin)
    assert (r.status_code, r.json()["processed"]) == (200, 1)
    expired = [a for a in api.audit(account_id) if a["action"] == "login_phone.change_expired"]
    assert [(a["from"], a["to"], a["actor"], a["detail"]["change_id"]) for a in expired] == [
        ("pending", "expired", "job:expire-pending-changes", second)
    ]
