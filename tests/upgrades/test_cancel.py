"""取消升级 (SPEC R-12, R-13, R-18, R-33): who may cancel, until when, and what a cancel restores."""

import datetime as dt

import pytest

from guanhao import pii
from tests import factories
from tests.factories import Api

T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
PHONE_BEFORE = "13800001111"
PHONE_AFTER = "13700002222"


def cancel(api: Api, shop_id: str, headers: dict | None = None):
    return api.client.post(f"/api/v1/shops/{shop_id}/official-account/cancel-upgrade", headers=headers or api.admin)


def quotas(api: Api, subject_id: str) -> dict:
    r = api.client.get(f"/api/v1/subjects/{subject_id}/quotas", headers=api.admin)
    assert r.status_code == 200, r.text
    return {t: v["used"] for t, v in r.json().items()}


def posting_quota(api: Api, account_id: str) -> dict:
    r = api.client.get(f"/api/v1/accounts/{account_id}/posting-quota", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()


def post(api: Api, account_id: str):
    return api.client.post(f"/api/v1/accounts/{account_id}/posts", headers=api.admin)


def latest_application(api: Api, shop_id: str) -> dict:
    r = api.client.get(f"/api/v1/shops/{shop_id}/upgrade-applications", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()["items"][0]


def eligibility_check(api: Api, shop_id: str, code: str) -> bool:
    r = api.client.get(f"/api/v1/shops/{shop_id}/eligibility", headers=api.admin)
    assert r.status_code == 200, r.text
    return next(c["passed"] for c in r.json()["checks"] if c["code"] == code)


def rebind_phone(api: Api, shop_id: str, new_phone: str, headers: dict) -> None:
    base = f"/api/v1/shops/{shop_id}/official-account/phone-rebinds"
    r = api.client.post(base, json={"new_phone": new_phone}, headers=headers)
    assert r.status_code == 201, r.text
    rebind_id = r.json()["rebind_id"]
    sms = api.client.get("/api/v1/sandbox/sms", params={"phone": new_phone}, headers=api.admin).json()["items"]
    r = api.client.post(f"{base}/{rebind_id}/verify", json={"code": sms[0]["code"]}, headers=headers)
    assert r.status_code == 200, r.text


def auto_upgraded(api: Api, **ready) -> tuple[str, str, str, dict]:
    """(subject_id, shop_id, account_id, merchant headers) of a shop a wave upgraded at T0."""
    api.set_clock(T0)
    subject_id, shop_id, account_id = api.ready_shop(**ready)
    wave = api.wave(1)
    assert wave["upgraded"] == 1, wave
    return subject_id, shop_id, account_id, api.merchant(subject_id)


def test_cancel_within_the_window_restores_the_account_as_before(api):
    """R-12, R-13, R-33, R-41: personal ownership, no operator, the login phone from before the upgrade (even
    after a rebind), limit 75, the slot and the operator's place freed; recorded and announced."""
    api.set_clock(T0)
    holder = factories.person()
    subject_id, shop_id, account_id = api.ready_shop(holder=holder, account_fields={"login_phone": PHONE_BEFORE})
    for _ in range(4):  # four more accounts of the same person: five places used after the wave
        api.ready_shop(holder=holder)
    assert api.wave(10)["upgraded"] == 5
    sixth = api.ready_shop(holder=holder)[1]
    assert eligibility_check(api, sixth, "OPERATOR_LIMIT_REACHED") is False
    merchant = api.merchant(subject_id)
    rebind_phone(api, shop_id, PHONE_AFTER, merchant)
    assert api.official_account(shop_id)["account"]["login_phone"] == pii.mask_phone(PHONE_AFTER)
    assert quotas(api, subject_id) == {"main": 1, "vertical": 0, "dedicated": 0}
    app_id = latest_application(api, shop_id)["application_id"]
    deadline = dt.datetime.fromisoformat(api.official_account(shop_id)["cancel_deadline"])

    api.set_clock(deadline - dt.timedelta(seconds=1))
    r = cancel(api, shop_id, merchant)

    assert r.status_code == 200, r.text
    for view in (r.json(), api.official_account(shop_id, merchant)):
        assert view["upgrade_status"] == "not_upgraded" and view["ownership"] == "personal"
        assert view["operator"] is None and view["origin"] is None and view["account_type"] is None
        assert view["upgraded_at"] is None and view["cancel_deadline"] is None and view["can_cancel"] is False
        assert view["daily_post_limit"] == 75
        assert view["account"]["login_phone"] == pii.mask_phone(PHONE_BEFORE)
    assert posting_quota(api, account_id)["limit"] == 75
    assert quotas(api, subject_id) == {"main": 0, "vertical": 0, "dedicated": 0}
    assert eligibility_check(api, sixth, "OPERATOR_LIMIT_REACHED") is True

    app = latest_application(api, shop_id)
    assert (app["status"], app["origin"]) == ("cancelled", "auto")
    cancelled = [e for e in api.events() if e["type"] == "upgrade.cancelled"]
    assert [(e["shop_id"], e["data"]["application_id"]) for e in cancelled] == [(shop_id, app_id)]
    assert [(a["action"], a["from"], a["to"]) for a in api.audit(app_id)] == [
        ("upgrade.succeeded", None, "succeeded"),
        ("upgrade.cancelled", "succeeded", "cancelled"),
    ]
    on_account = [(a["action"], a["from"], a["to"]) for a in api.audit(account_id)]
    assert ("official_account.cancelled", "upgraded", "not_upgraded") in on_account
    assert on_account.index(("official_account.cancelled", "upgraded", "not_upgraded")) > next(
        i for i, a in enumerate(on_account) if a[0] == "login_phone.changed"
    )


def test_cancel_after_the_window_is_refused_and_changes_nothing(api):
    """R-12: 30 days after the success, never."""
    subject_id, shop_id, account_id, merchant = auto_upgraded(api)
    before = api.official_account(shop_id)
    deadline = dt.datetime.fromisoformat(before["cancel_deadline"])

    for at in (deadline, deadline + dt.timedelta(days=200)):
        api.set_clock(at)
        r = cancel(api, shop_id, merchant)
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "CANCEL_WINDOW_CLOSED"
        view = api.official_account(shop_id)
        assert view["upgrade_status"] == "upgraded" and view["can_cancel"] is False
        assert {k: view[k] for k in ("origin", "account_type", "operator", "upgraded_at")} == {
            k: before[k] for k in ("origin", "account_type", "operator", "upgraded_at")
        }
    assert quotas(api, subject_id)["main"] == 1
    assert not [e for e in api.events() if e["type"] == "upgrade.cancelled"]


def test_a_manual_upgrade_cannot_be_cancelled(api):
    """R-12: a manual upgrade cannot be cancelled (policy)."""
    api.set_clock(T0)
    subject_id, shop_id, _ = api.ready_shop()
    assert api.upgrade(shop_id)["status"] == "succeeded"
    view = api.official_account(shop_id)
    assert view["can_cancel"] is False and view["cancel_deadline"] is None

    r = cancel(api, shop_id, api.merchant(subject_id))
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "CANCEL_NOT_ALLOWED"
    assert api.official_account(shop_id)["upgrade_status"] == "upgraded"


def test_a_shop_not_upgraded_has_nothing_to_cancel(api):
    """R-12: not upgraded (cancelled already, never, or in progress) → NOT_UPGRADED."""
    _, shop_id, _, merchant = auto_upgraded(api)
    assert cancel(api, shop_id, merchant).status_code == 200
    r = cancel(api, shop_id, merchant)
    assert (r.status_code, r.json()["code"]) == (409, "NOT_UPGRADED")
    assert len([e for e in api.events() if e["type"] == "upgrade.cancelled"]) == 1

    subject_id, never, _ = api.ready_shop()
    in_progress = api.ready_shop(subject_id)[1]
    assert api.submit(in_progress).status_code == 201
    merchant = api.merchant(subject_id)
    for shop_id in (never, in_progress):
        r = cancel(api, shop_id, merchant)
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "NOT_UPGRADED"
    assert latest_application(api, in_progress)["status"] == "submitted"


def test_another_subjects_merchant_gets_not_found(api):
    """R-62: a merchant touching another subject's shop → 404, and nothing changes."""
    _, shop_id, _, _ = auto_upgraded(api)
    stranger = api.merchant(api.subject())
    r = cancel(api, shop_id, stranger)
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "NOT_FOUND"
    assert api.official_account(shop_id)["upgrade_status"] == "upgraded"
    assert cancel(api, "shop-does-not-exist", stranger).status_code == 404
    assert api.client.post(f"/api/v1/shops/{shop_id}/official-account/cancel-upgrade").status_code == 401


def test_after_a_cancel_the_merchant_may_apply_again_but_waves_leave_the_shop_alone(api):
    """R-18, R-11: cancelling opts the shop out of waves; a manual application is still accepted."""
    subject_id, shop_id, _, merchant = auto_upgraded(api)
    api.set_clock(T0 + dt.timedelta(days=2))
    assert cancel(api, shop_id, merchant).status_code == 200

    wave = api.wave(10)
    assert (wave["scanned"], wave["upgraded"], wave["skip_reasons"]) == (1, 0, {"AUTO_UPGRADE_CANCELLED": 1})
    assert api.official_account(shop_id)["upgrade_status"] == "not_upgraded"

    r = api.submit(shop_id, merchant)
    assert r.status_code == 201, r.text
    assert r.json()["attempt"] == 2 and r.json()["origin"] == "manual"
    assert api.accept(r.json()["application_id"]).status_code == 200
    view = api.official_account(shop_id)
    assert (view["upgrade_status"], view["origin"], view["can_cancel"]) == ("upgraded", "manual", False)
    assert quotas(api, subject_id)["main"] == 1


def test_a_pending_phone_rebind_dies_with_the_cancel(api):
    """R-13, R-24: a code requested before the cancel cannot change the login phone afterwards."""
    _, shop_id, account_id, merchant = auto_upgraded(api, account_fields={"login_phone": PHONE_BEFORE})
    base = f"/api/v1/shops/{shop_id}/official-account/phone-rebinds"
    r = api.client.post(base, json={"new_phone": PHONE_AFTER}, headers=merchant)
    assert r.status_code == 201, r.text
    rebind_id = r.json()["rebind_id"]
    code = api.client.get("/api/v1/sandbox/sms", params={"phone": PHONE_AFTER}, headers=api.admin).json()["items"][0][
        "code"
    ]
    assert cancel(api, shop_id, merchant).status_code == 200

    r = api.client.post(f"{base}/{rebind_id}/verify", json={"code": code}, headers=merchant)
    assert r.status_code == 409, r.text
    # Upgraded again at once (manually): the old code still does not work.
    r = api.submit(shop_id, merchant)
    assert api.accept(r.json()["application_id"]).status_code == 200
    r = api.client.post(f"{base}/{rebind_id}/verify", json={"code": code}, headers=merchant)
    assert (r.status_code, r.json()["code"]) == (409, "CODE_EXPIRED"), r.text
    assert api.official_account(shop_id)["account"]["login_phone"] == pii.mask_phone(PHONE_BEFORE)


@pytest.mark.parametrize("posts", [80, 100])
def test_posts_already_made_today_leave_zero_remaining_after_a_cancel(api, posts):
    """R-13, R-23: the limit drops to 75; a day already past it shows 0 remaining, never negative, and refuses more."""
    _, shop_id, account_id, merchant = auto_upgraded(api)
    for _ in range(posts):
        r = post(api, account_id)
        assert r.status_code == 201, r.text
    assert posting_quota(api, account_id) | {"day": None} == {
        "account_id": account_id,
        "limit": 100,
        "used": posts,
        "remaining": 100 - posts,
        "day": None,
    }

    assert cancel(api, shop_id, merchant).status_code == 200

    quota = posting_quota(api, account_id)
    assert (quota["limit"], quota["used"], quota["remaining"]) == (75, posts, 0)
    r = post(api, account_id)
    assert r.status_code == 429 and r.json()["code"] == "DAILY_POST_LIMIT_REACHED"
    assert posting_quota(api, account_id)["used"] == posts
    # The next Asia/Shanghai day starts afresh at 75.
    api.set_clock(T0 + dt.timedelta(days=1))
    assert post(api, account_id).json()["remaining"] == 74


def test_the_audit_chain_verifies_after_waves_and_cancels(api):
    """R-60: bulk wave rows and the cancel rows keep the hash chain intact."""
    from typer.testing import CliRunner

    from guanhao.cli import app as cli
    from tests.conftest import reset_caches

    api.set_clock(T0)
    subject_id = api.subject()
    shops = [api.ready_shop(subject_id)[1] for _ in range(3)]
    assert api.wave(10)["upgraded"] == 3
    assert cancel(api, shops[0], api.merchant(subject_id)).status_code == 200
    reset_caches()
    result = CliRunner().invoke(cli, ["audit", "verify"])
    reset_caches()
    assert result.exit_code == 0, result.output
    assert "intact" in result.output
