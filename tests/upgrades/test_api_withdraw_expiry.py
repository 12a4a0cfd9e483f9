"""The upgrade workflow through the HTTP API: withdrawing, and confirmations that expire."""

import datetime as dt

import pytest

from tests import factories
from tests.upgrades.helpers import (
    T0,
    applications,
    codes,
    eligibility,
    quotas,
    run_expiry,
    snapshot,
    submitted,
    withdraw,
)

# ---------------------------------------------------------------- withdraw


def test_r20_withdraw_while_submitted(api, shop):
    """R-20 the merchant withdraws a submitted application: withdrawn, slot freed, audited, event."""
    subject_id, shop_id, _, _ = shop
    merchant = api.merchant(subject_id)
    app = submitted(api, shop_id, merchant)
    r = withdraw(api, app["application_id"], merchant)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "withdrawn"
    assert quotas(api, subject_id)["main"] == (1, 0)
    assert api.official_account(shop_id)["active_application_id"] is None
    assert api.events(shop_id=shop_id)[-1]["type"] == "upgrade.withdrawn"
    assert (api.audit(app["application_id"])[-1]["from"], api.audit(app["application_id"])[-1]["to"]) == (
        "submitted",
        "withdrawn",
    )
    assert api.accept(app["application_id"]).status_code == 409


@pytest.mark.parametrize("end", ["reviewing", "succeeded", "rejected", "withdrawn"])
def test_r20_withdraw_in_any_other_state_is_invalid_and_changes_nothing(api, shop, end):
    """R-20 withdraw is only for `submitted`; otherwise 409 INVALID_TRANSITION and status, audit, events unchanged."""
    subject_id, shop_id, _, _ = shop
    followers = 1_000_000 if end == "reviewing" else 10
    _, target, _ = api.ready_shop(subject_id, account_fields={"followers": followers})
    app = submitted(api, target)
    if end == "reviewing" or end == "succeeded":
        api.accept(app["application_id"])
    elif end == "rejected":
        api.decline(app["application_id"])
    else:
        withdraw(api, app["application_id"])
    assert api.application(app["application_id"])["status"] == end
    before = snapshot(api, target, app["application_id"])
    quotas_before = quotas(api, subject_id)
    r = withdraw(api, app["application_id"], api.merchant(subject_id))
    assert r.status_code == 409
    assert r.json()["code"] == "INVALID_TRANSITION"
    assert snapshot(api, target, app["application_id"]) == before
    assert quotas(api, subject_id) == quotas_before


def test_r62_merchant_cannot_withdraw_another_subjects_application(api, shop):
    """R-62 another subject's application is 404 and stays as it was."""
    _, shop_id, _, _ = shop
    app = submitted(api, shop_id)
    stranger = api.merchant(api.subject())
    assert withdraw(api, app["application_id"], stranger).status_code == 404
    assert api.client.get(f"/api/v1/upgrade-applications/{app['application_id']}", headers=stranger).status_code == 404
    assert api.application(app["application_id"])["status"] == "submitted"


# ---------------------------------------------------------------- expiry


def test_r15_confirmation_expires_after_168_hours_as_a_fact_of_time(api, shop):
    """R-15 no answer in 7 days → expired from the deadline on, whether or not the job has run: every read shows it,
    the holder's answer is refused with CONFIRMATION_EXPIRED, its slot and operator place count as free; the job
    then records it (audit, event) and counts what it processed."""
    subject_id, shop_id, _, _ = shop
    operator = factories.person()
    app = submitted(api, shop_id, operator=operator)
    other = submitted(api, api.ready_shop(subject_id)[1])
    assert dt.datetime.fromisoformat(app["confirmation_expires_at"]) == T0 + dt.timedelta(hours=168)

    api.set_clock(T0 + dt.timedelta(hours=167, minutes=59))
    assert run_expiry(api) == 0
    assert api.application(app["application_id"])["status"] == "submitted"

    api.set_clock(T0 + dt.timedelta(hours=168, minutes=1))
    # Before the job: every read shows it expired, and nothing counts it as in progress.
    seen = api.application(app["application_id"])
    assert (seen["status"], codes(seen["reasons"])) == ("expired", ["CONFIRMATION_EXPIRED"])
    assert [s["state"] for s in seen["steps"]] == ["done", "failed", "skipped", "failed"]
    assert applications(api, shop_id)[0]["status"] == "expired"
    assert api.official_account(shop_id)["upgrade_status"] == "not_upgraded"
    assert api.official_account(shop_id)["active_application_id"] is None
    assert quotas(api, subject_id) == {"main": (1, 0), "vertical": (2, 0), "dedicated": (3, 0)}
    checks = {c["code"]: c["passed"] for c in eligibility(api, shop_id)["checks"]}
    assert checks["APPLICATION_IN_PROGRESS"] is True
    for answer in (api.accept, api.decline):
        r = answer(app["application_id"])
        assert (r.status_code, r.json()["code"]) == (409, "CONFIRMATION_EXPIRED")
    assert api.events(shop_id=shop_id)[-1]["type"] == "upgrade.confirmation_requested"  # not recorded yet

    assert run_expiry(api) == 2
    assert run_expiry(api) == 0
    done = api.application(app["application_id"])
    assert done["status"] == "expired"
    assert [s["state"] for s in done["steps"]] == ["done", "failed", "skipped", "failed"]
    assert api.application(other["application_id"])["status"] == "expired"
    assert quotas(api, subject_id) == {"main": (1, 0), "vertical": (2, 0), "dedicated": (3, 0)}
    assert api.events(shop_id=shop_id)[-1]["type"] == "upgrade.expired"
    trail = api.audit(app["application_id"])
    assert (trail[-1]["from"], trail[-1]["to"]) == ("submitted", "expired")
    assert trail[-1]["actor"] == "job:expire-confirmations"
    assert [r["code"] for r in trail[-1]["detail"]["reasons"]] == ["CONFIRMATION_EXPIRED"]  # R-20 why

    r = api.accept(app["application_id"])
    assert (r.status_code, r.json()["code"]) == (409, "CONFIRMATION_EXPIRED")
    assert api.decline(app["application_id"]).status_code == 409
    assert api.application(app["application_id"])["status"] == "expired"
    # the operator's place is free again: the same person can be named 5 times
    for _ in range(5):
        submitted(api, api.ready_shop(api.subject())[1], operator=operator)


def test_r15_a_new_application_ends_the_lapsed_one_in_the_same_transaction(api, shop):
    """R-15 past the deadline a new application for the shop is accepted; the stale one is recorded expired in the
    same transaction, and its slot and operator place are free for the new one — no job needed."""
    subject_id, shop_id, _, _ = shop
    stale = submitted(api, shop_id, account_type="main")
    api.set_clock(T0 + dt.timedelta(hours=169))
    fresh = submitted(api, shop_id, account_type="main")
    assert fresh["attempt"] == 2
    assert api.application(stale["application_id"])["status"] == "expired"
    assert quotas(api, subject_id)["main"] == (1, 1)
    trail = api.audit(stale["application_id"])
    assert (trail[-1]["from"], trail[-1]["to"], trail[-1]["actor"]) == (
        "submitted",
        "expired",
        "job:expire-confirmations",
    )
    types = [e["type"] for e in api.events(shop_id=shop_id)]
    assert types[-3:] == ["upgrade.expired", "upgrade.submitted", "upgrade.confirmation_requested"]
    assert run_expiry(api) == 0


def test_r15_accept_just_before_the_deadline_succeeds(api, shop):
    """R-15 the holder has the full 168 h."""
    _, shop_id, _, _ = shop
    app = submitted(api, shop_id)
    api.set_clock(T0 + dt.timedelta(hours=167, minutes=59))
    assert api.accept(app["application_id"]).status_code == 200
    api.set_clock(T0 + dt.timedelta(hours=200))
    assert run_expiry(api) == 0
    assert api.application(app["application_id"])["status"] == "succeeded"


def test_r15_expire_job_is_staff_only(api, shop):
    """R-62 merchants cannot run jobs."""
    subject_id, _, _, _ = shop
    r = api.client.post("/api/v1/admin/jobs/expire-confirmations/run", headers=api.merchant(subject_id))
    assert r.status_code == 403
