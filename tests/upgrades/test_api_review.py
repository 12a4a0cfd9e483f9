"""The upgrade workflow through the HTTP API: holder consent, review and the staff queue."""

import datetime as dt

from tests import factories
from tests.upgrades.helpers import EN, T0, approve, codes, has_cjk, quotas, review_queue, staff_reject, submitted

# ---------------------------------------------------------------- holder consent and review


def test_r15_holder_decline_rejects_and_frees_the_slot(api, shop):
    """R-15 decline → rejected with HOLDER_DECLINED; R-33 the slot is freed."""
    subject_id, shop_id, _, _ = shop
    merchant = api.merchant(subject_id)
    app = submitted(api, shop_id, merchant)
    r = api.decline(app["application_id"])
    assert r.status_code == 200, r.text
    done = api.application(app["application_id"], merchant)
    assert done["status"] == "rejected"
    assert codes(done["reasons"]) == ["HOLDER_DECLINED"]
    assert done["reasons"][0]["message"]
    assert quotas(api, subject_id)["main"] == (1, 0)
    assert api.official_account(shop_id)["upgrade_status"] == "not_upgraded"
    assert api.accept(app["application_id"]).status_code == 409  # R-20 a closed confirmation stays closed
    assert api.application(app["application_id"])["status"] == "rejected"


def test_r16_review_reruns_checks_account_banned_after_submit(api, shop):
    """R-16 the world changed between submit and accept: rejected with that reason, slot and operator place freed."""
    subject_id, shop_id, account_id, holder = shop
    app = submitted(api, shop_id)
    api.account(account_id, holder=holder, status="banned")
    r = api.accept(app["application_id"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "rejected"
    done = api.application(app["application_id"])
    assert done["status"] == "rejected"
    assert codes(done["reasons"]) == ["ACCOUNT_NOT_NORMAL"]
    assert quotas(api, subject_id)["main"] == (1, 0)
    view = api.official_account(shop_id)
    assert view["upgrade_status"] == "not_upgraded" and view["ownership"] == "personal"
    assert [e["type"] for e in api.events(shop_id=shop_id)][-2:] == ["upgrade.reviewing", "upgrade.rejected"]
    assert api.events(shop_id=shop_id)[-1]["data"]["reasons"] == ["ACCOUNT_NOT_NORMAL"]


def test_r16_review_lists_every_failed_reason(api, shop):
    """R-16 any fail → rejected with every failed reason."""
    subject_id, shop_id, account_id, holder = shop
    app = submitted(api, shop_id)
    api.subject(subject_id, license_valid_until="2020-01-01")
    api.account(account_id, holder=holder, real_name_verified=False, violations_90d=4)
    api.accept(app["application_id"])
    done = api.application(app["application_id"], headers=api.admin | EN)
    assert codes(done["reasons"]) == ["LICENSE_EXPIRED", "ACCOUNT_NOT_VERIFIED", "ACCOUNT_HAS_VIOLATIONS"]
    assert all(not has_cjk(r["message"]) for r in done["reasons"])


def test_r16_review_does_not_count_the_applications_own_reservations(api):
    """R-16 the re-check ignores the application's own slot and operator place: the last slot and the 5th place pass."""
    subject_id = api.subject(subject_type="individual_business")
    operator = factories.person()
    for _ in range(4):
        submitted(api, api.ready_shop(api.subject())[1], operator=operator)
    _, shop_id, _ = api.ready_shop(subject_id)
    app = submitted(api, shop_id, operator=operator, account_type="main")
    assert api.accept(app["application_id"]).status_code == 200
    assert api.application(app["application_id"])["status"] == "succeeded"


def test_r16_staff_review_queue_for_big_accounts_then_approve(api, shop):
    """R-16 followers ≥ 1,000,000 wait for staff; approve → succeeded."""
    subject_id, shop_id, _, _ = shop
    _, big_shop, _ = api.ready_shop(subject_id, account_fields={"followers": 1_000_000})
    _, small_shop, _ = api.ready_shop(subject_id, account_fields={"followers": 999_999})
    big = submitted(api, big_shop)
    api.set_clock(T0 + dt.timedelta(hours=1))
    assert api.accept(big["application_id"]).status_code == 200
    waiting = api.application(big["application_id"])
    assert waiting["status"] == "reviewing"
    assert waiting["awaiting_staff_review"] is True
    assert waiting["current_step"] == "review"
    assert api.official_account(big_shop)["upgrade_status"] == "in_progress"
    small = api.upgrade(small_shop)
    assert small["status"] == "succeeded"
    assert review_queue(api) == [big["application_id"]]

    assert dt.datetime.fromisoformat(waiting["steps"][2]["at"]) == T0 + dt.timedelta(hours=1)
    api.set_clock(T0 + dt.timedelta(hours=5))
    r = approve(api, big["application_id"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    # R-17 the review step is done when staff decided, not when it entered the queue
    assert [(s["state"], dt.datetime.fromisoformat(s["at"])) for s in r.json()["steps"][2:]] == [
        ("done", T0 + dt.timedelta(hours=5)),
        ("done", T0 + dt.timedelta(hours=5)),
    ]
    assert review_queue(api) == []
    assert api.official_account(big_shop)["upgrade_status"] == "upgraded"
    trail = api.audit(big["application_id"])
    assert (trail[-1]["from"], trail[-1]["to"]) == ("reviewing", "succeeded")
    assert trail[-1]["actor"] != "system"


def test_r16_staff_reject_with_reason(api, shop):
    """R-16 staff reject with a reason → rejected, reasons has STAFF_REJECTED with the text; slot freed."""
    subject_id, shop_id, _, _ = shop
    _, big_shop, _ = api.ready_shop(subject_id, account_fields={"followers": 2_000_000})
    app = submitted(api, big_shop)
    api.accept(app["application_id"])
    for blank in ("", "   "):
        r = staff_reject(api, app["application_id"], blank)
        assert r.status_code == 422
        assert r.json()["code"] == "VALIDATION_ERROR"
    assert api.application(app["application_id"])["status"] == "reviewing"
    r = staff_reject(api, app["application_id"], "账号主体信息与店铺不一致")
    assert r.status_code == 200, r.text
    done = api.application(app["application_id"], api.merchant(subject_id))
    assert done["status"] == "rejected"
    assert done["reasons"] == [{"code": "STAFF_REJECTED", "message": "账号主体信息与店铺不一致", "fix": None}]
    # R-20 the audit trail records why
    assert api.audit(app["application_id"])[-1]["detail"]["reasons"] == [
        {"code": "STAFF_REJECTED", "text": "账号主体信息与店铺不一致"}
    ]
    assert review_queue(api) == []
    assert quotas(api, subject_id)["main"] == (1, 0)
    assert approve(api, app["application_id"]).status_code == 409


def test_r16_approve_when_a_check_now_fails_rejects_with_every_failed_reason(api, shop):
    """R-16 staff approve after the account got restricted: the re-check fails, so the application is rejected with
    every failed reason — it does not stay stuck in the queue holding its slot."""
    subject_id, _, _, _ = shop
    holder = factories.person()
    _, big_shop, account_id = api.ready_shop(subject_id, account_fields={"followers": 1_500_000}, holder=holder)
    app = submitted(api, big_shop)
    api.accept(app["application_id"])
    api.account(account_id, holder=holder, followers=1_500_000, status="restricted", violations_90d=2)
    r = approve(api, app["application_id"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "rejected"
    assert codes(r.json()["reasons"]) == ["ACCOUNT_NOT_NORMAL", "ACCOUNT_HAS_VIOLATIONS"]
    assert r.json()["awaiting_staff_review"] is False
    assert api.application(app["application_id"])["status"] == "rejected"
    assert review_queue(api) == []
    assert quotas(api, subject_id)["main"] == (1, 0)
    assert api.events(shop_id=big_shop)[-1]["type"] == "upgrade.rejected"
    trail = api.audit(app["application_id"])
    assert [(a["action"], a["from"], a["to"]) for a in trail[-2:]] == [
        ("upgrade.review.rejected", "reviewing", "reviewing"),
        ("upgrade.rejected", "reviewing", "rejected"),
    ]
    assert api.official_account(big_shop)["upgrade_status"] == "not_upgraded"


def test_r62_merchant_cannot_use_staff_review(api, shop):
    """R-62 a merchant calling staff-only paths gets 403 and changes nothing."""
    subject_id, _, _, _ = shop
    _, big_shop, _ = api.ready_shop(subject_id, account_fields={"followers": 1_000_000})
    app = submitted(api, big_shop)
    api.accept(app["application_id"])
    merchant = api.merchant(subject_id)
    r = api.client.post(f"/api/v1/admin/upgrade-applications/{app['application_id']}/approve", headers=merchant)
    assert r.status_code == 403
    assert api.client.get("/api/v1/admin/review-queue", headers=merchant).status_code == 403
    assert api.application(app["application_id"])["status"] == "reviewing"
