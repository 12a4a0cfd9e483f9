"""The upgrade workflow through the HTTP API: eligibility, quotas, submit, holder consent, review, staff queue,
withdraw, expiry, re-apply, progress steps, consents, audit and events, the official-account view."""

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from tests import factories
from tests.conftest import reset_caches
from tests.factories import Api

T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
CHECK_CODES = [
    "SHOP_TYPE_NOT_ELIGIBLE",
    "SHOP_NOT_ACTIVE",
    "LICENSE_EXPIRED",
    "ACCOUNT_NOT_BOUND",
    "ACCOUNT_NOT_VERIFIED",
    "ACCOUNT_NOT_NORMAL",
    "ACCOUNT_HAS_VIOLATIONS",
    "ALREADY_UPGRADED",
    "APPLICATION_IN_PROGRESS",
    "QUOTA_EXHAUSTED",
    "OPERATOR_LIMIT_REACHED",
]
EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def submitted(api: Api, shop_id: str, headers: dict | None = None, **body) -> dict:
    r = api.submit(shop_id, headers, **body)
    assert r.status_code == 201, r.text
    return r.json()


def eligibility(api: Api, shop_id: str, headers: dict | None = None, **params) -> dict:
    r = api.client.get(f"/api/v1/shops/{shop_id}/eligibility", params=params, headers=headers or api.admin)
    assert r.status_code == 200, r.text
    return r.json()


def quotas(api: Api, subject_id: str, headers: dict | None = None) -> dict:
    r = api.client.get(f"/api/v1/subjects/{subject_id}/quotas", headers=headers or api.admin)
    assert r.status_code == 200, r.text
    return {t: (v["total"], v["used"]) for t, v in r.json().items()}


def applications(api: Api, shop_id: str, headers: dict | None = None) -> list[dict]:
    r = api.client.get(f"/api/v1/shops/{shop_id}/upgrade-applications", headers=headers or api.admin)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def withdraw(api: Api, application_id: str, headers: dict | None = None):
    return api.client.post(f"/api/v1/upgrade-applications/{application_id}/withdraw", headers=headers or api.admin)


def approve(api: Api, application_id: str):
    return api.client.post(f"/api/v1/admin/upgrade-applications/{application_id}/approve", headers=api.admin)


def staff_reject(api: Api, application_id: str, reason: str):
    return api.client.post(
        f"/api/v1/admin/upgrade-applications/{application_id}/reject", json={"reason": reason}, headers=api.admin
    )


def review_queue(api: Api) -> list[str]:
    r = api.client.get("/api/v1/admin/review-queue", headers=api.admin)
    assert r.status_code == 200, r.text
    return [a["application_id"] for a in r.json()["items"]]


def run_expiry(api: Api) -> int:
    r = api.client.post("/api/v1/admin/jobs/expire-confirmations/run", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()["processed"]


def admin_view(api: Api, application_id: str) -> dict:
    r = api.client.get(f"/api/v1/admin/upgrade-applications/{application_id}", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()


def snapshot(api: Api, shop_id: str, application_id: str | None = None) -> tuple:
    """What a user could see change: the applications, the shop's events, the audit trail, the account view."""
    return (
        applications(api, shop_id),
        [e["event_id"] for e in api.events(shop_id=shop_id)],
        api.audit(application_id) if application_id else None,
        api.official_account(shop_id),
    )


def states(app: dict) -> list[tuple[str, str]]:
    return [(s["step"], s["state"]) for s in app["steps"]]


def codes(reasons: list[dict]) -> list[str]:
    return [r["code"] for r in reasons]


@pytest.fixture
def shop(api):
    """(subject_id, shop_id, account_id, holder) of a ready shop, clock frozen at T0."""
    api.set_clock(T0)
    holder = factories.person()
    subject_id, shop_id, account_id = api.ready_shop(holder=holder)
    return subject_id, shop_id, account_id, holder


# ---------------------------------------------------------------- eligibility


def test_r04_eligibility_lists_every_check_passed_with_null_fix(api, shop):
    """R-03, R-04 a ready shop: every check listed and passed, fix null, resolved main."""
    subject_id, shop_id, _, _ = shop
    body = eligibility(api, shop_id, api.merchant(subject_id))
    assert body["eligible"] is True
    assert body["resolved_account_type"] == "main"
    assert [c["code"] for c in body["checks"]] == CHECK_CODES
    for check in body["checks"]:
        assert check["passed"] is True
        assert check["fix"] is None
        assert check["message"]


def test_r04_eligibility_lists_every_failure_with_a_fix(api, shop):
    """R-04 several failures at once, each failed check with what to do; passed ones stay passed."""
    subject_id, shop_id, account_id, holder = shop
    api.shop(subject_id, shop_id, status="suspended")
    api.account(account_id, holder=holder, status="banned", violations_90d=3, real_name_verified=False)
    body = eligibility(api, shop_id)
    assert body["eligible"] is False
    assert body["resolved_account_type"] is None
    by_code = {c["code"]: c for c in body["checks"]}
    assert list(by_code) == CHECK_CODES
    failed = [c for c, v in by_code.items() if not v["passed"]]
    assert failed == ["SHOP_NOT_ACTIVE", "ACCOUNT_NOT_VERIFIED", "ACCOUNT_NOT_NORMAL", "ACCOUNT_HAS_VIOLATIONS"]
    for code in failed:
        assert by_code[code]["fix"], code
    assert by_code["SHOP_TYPE_NOT_ELIGIBLE"]["passed"] is True


def test_r01_personal_shop_is_not_eligible(api, shop):
    """R-01 个人店 is never eligible."""
    subject_id, _, _, _ = shop
    personal_shop = api.shop(subject_id, shop_type="personal")
    assert api.bind(personal_shop, api.account()).status_code == 200
    body = eligibility(api, personal_shop)
    assert body["eligible"] is False
    assert [c["code"] for c in body["checks"] if not c["passed"]] == ["SHOP_TYPE_NOT_ELIGIBLE"]


def test_r03_licence_expired_yesterday_china_time_is_not_eligible(api, shop):
    """R-03 subject licence valid, judged on the Asia/Shanghai calendar day."""
    subject_id, shop_id, _, _ = shop
    api.subject(subject_id, license_valid_until="2026-03-09")
    assert [c["code"] for c in eligibility(api, shop_id)["checks"] if not c["passed"]] == ["LICENSE_EXPIRED"]
    api.subject(subject_id, license_valid_until="2026-03-10")
    assert eligibility(api, shop_id)["eligible"] is True


def test_r03_shop_without_bound_account_is_not_eligible(api, shop):
    """R-03 the account must be the shop's bound official account; unchecked items are not shown as passed."""
    subject_id, _, _, _ = shop
    bare = api.shop(subject_id)
    body = eligibility(api, bare)
    assert body["eligible"] is False
    by_code = {c["code"]: c for c in body["checks"]}
    assert by_code["ACCOUNT_NOT_BOUND"]["passed"] is False
    assert by_code["ACCOUNT_NOT_BOUND"]["fix"]
    assert by_code["ACCOUNT_NOT_NORMAL"]["passed"] is False
    r = api.submit(bare)
    assert r.status_code == 409
    assert r.json()["code"] == "NOT_ELIGIBLE"
    assert codes(r.json()["reasons"]) == ["ACCOUNT_NOT_BOUND"]


def test_r32_eligibility_with_account_type_query(api, shop):
    """R-32 ?account_type= resolves the chosen type, and a full chosen type is not eligible."""
    subject_id, shop_id, _, _ = shop
    body = eligibility(api, shop_id, account_type="dedicated")
    assert body["eligible"] is True
    assert body["resolved_account_type"] == "dedicated"
    other_shop = api.ready_shop(subject_id)[1]
    submitted(api, other_shop)  # takes main
    body = eligibility(api, shop_id, account_type="main")
    assert body["eligible"] is False
    assert body["resolved_account_type"] is None
    assert [c["code"] for c in body["checks"] if not c["passed"]] == ["TYPE_QUOTA_EXHAUSTED"]
    assert eligibility(api, shop_id)["resolved_account_type"] == "vertical"
    r = api.client.get(f"/api/v1/shops/{shop_id}/eligibility", params={"account_type": "gold"}, headers=api.admin)
    assert r.status_code == 422


def test_r31_eligibility_vertical_on_cross_border(api):
    """R-31, R-32 a cross-border subject asking for vertical sees VERTICAL_NOT_AVAILABLE."""
    subject_id = api.subject(cross_border=True)
    _, shop_id, _ = api.ready_shop(subject_id)
    assert eligibility(api, shop_id)["eligible"] is True
    body = eligibility(api, shop_id, account_type="vertical")
    assert body["eligible"] is False
    assert [c["code"] for c in body["checks"] if not c["passed"]] == ["VERTICAL_NOT_AVAILABLE"]


def test_r62_merchant_cannot_see_another_subjects_eligibility(api, shop):
    """R-62 another subject's shop is 404, never data."""
    _, shop_id, _, _ = shop
    stranger = api.merchant(api.subject())
    r = api.client.get(f"/api/v1/shops/{shop_id}/eligibility", headers=stranger)
    assert r.status_code == 404
    assert api.submit(shop_id, stranger).status_code == 404
    assert applications(api, shop_id) == []


def test_r03_messages_follow_accept_language(api, shop):
    """R-03 every check has a zh-CN (default) and an en message and fix."""
    subject_id, shop_id, account_id, holder = shop
    api.account(account_id, holder=holder, status="restricted")
    merchant = api.merchant(subject_id)
    en = eligibility(api, shop_id, merchant | EN)
    zh = eligibility(api, shop_id, merchant | ZH)
    default = eligibility(api, shop_id, merchant)
    assert default == zh
    for c_en, c_zh in zip(en["checks"], zh["checks"], strict=False):
        assert c_en["code"] == c_zh["code"]
        assert not _has_cjk(c_en["message"]) and _has_cjk(c_zh["message"])
    failed_en = next(c for c in en["checks"] if c["code"] == "ACCOUNT_NOT_NORMAL")
    failed_zh = next(c for c in zh["checks"] if c["code"] == "ACCOUNT_NOT_NORMAL")
    assert "normal" in failed_en["message"] and not _has_cjk(failed_en["fix"])
    assert _has_cjk(failed_zh["fix"])

    r = api.client.post(
        f"/api/v1/shops/{shop_id}/upgrade-applications", json={"agree_terms": True}, headers=api.admin | EN
    )
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert not _has_cjk(r.json()["title"]) and not _has_cjk(r.json()["reasons"][0]["message"])
    r = api.submit(shop_id)
    assert _has_cjk(r.json()["title"]) and _has_cjk(r.json()["reasons"][0]["message"])


# ---------------------------------------------------------------- quotas


def test_r30_quotas_count_reservations_of_submitted_applications(api, shop):
    """R-30, R-33 the enterprise table; `used` counts the slot reserved at submit, freed on withdraw."""
    subject_id, shop_id, _, _ = shop
    merchant = api.merchant(subject_id)
    assert quotas(api, subject_id, merchant) == {"main": (1, 0), "vertical": (2, 0), "dedicated": (3, 0)}
    app = submitted(api, shop_id, merchant)
    assert quotas(api, subject_id, merchant) == {"main": (1, 1), "vertical": (2, 0), "dedicated": (3, 0)}
    other = api.ready_shop(subject_id)[1]
    assert submitted(api, other, merchant)["account_type"] == "vertical"
    assert quotas(api, subject_id)["vertical"] == (2, 1)
    assert withdraw(api, app["application_id"], merchant).status_code == 200
    assert quotas(api, subject_id) == {"main": (1, 0), "vertical": (2, 1), "dedicated": (3, 0)}


def test_r30_r31_quotas_cross_border_and_follower_bonus(api):
    """R-30 follower bonus at 1,000,000 bound followers; R-31 cross-border: no vertical, even with the bonus."""
    individual = api.subject(subject_type="individual_business")
    assert quotas(api, individual) == {"main": (1, 0), "vertical": (1, 0), "dedicated": (1, 0)}
    api.ready_shop(individual, account_fields={"followers": 600_000})
    api.ready_shop(individual, account_fields={"followers": 400_000})
    assert quotas(api, individual) == {"main": (1, 0), "vertical": (2, 0), "dedicated": (2, 0)}

    cross = api.subject(cross_border=True)
    assert quotas(api, cross) == {"main": (1, 0), "vertical": (0, 0), "dedicated": (2, 0)}
    api.ready_shop(cross, account_fields={"followers": 1_000_000})
    assert quotas(api, cross) == {"main": (1, 0), "vertical": (0, 0), "dedicated": (3, 0)}


def test_r62_merchant_cannot_read_another_subjects_quotas(api, shop):
    """R-62 another subject's quotas are 404."""
    subject_id, _, _, _ = shop
    stranger = api.merchant(api.subject())
    assert api.client.get(f"/api/v1/subjects/{subject_id}/quotas", headers=stranger).status_code == 404


# ---------------------------------------------------------------- submit


def test_r63_submit_without_agreeing_to_terms_is_refused_and_changes_nothing(api, shop):
    """R-15, R-63 agree_terms false → 422 TERMS_NOT_ACCEPTED; no application, slot, event."""
    subject_id, shop_id, _, _ = shop
    before = snapshot(api, shop_id)
    r = api.submit(shop_id, api.merchant(subject_id), agree_terms=False)
    assert r.status_code == 422
    assert r.json()["code"] == "TERMS_NOT_ACCEPTED"
    r = api.client.post(f"/api/v1/shops/{shop_id}/upgrade-applications", json={}, headers=api.admin)
    assert r.status_code == 422
    assert snapshot(api, shop_id) == before
    assert quotas(api, subject_id)["main"] == (1, 0)


def test_r32_submit_with_explicit_type(api, shop):
    """R-32 the merchant chooses dedicated; that slot is reserved and kept after success."""
    subject_id, shop_id, _, _ = shop
    app = submitted(api, shop_id, account_type="dedicated")
    assert app["account_type"] == "dedicated"
    assert quotas(api, subject_id) == {"main": (1, 0), "vertical": (2, 0), "dedicated": (3, 1)}
    assert api.accept(app["application_id"]).status_code == 200
    assert api.official_account(shop_id)["account_type"] == "dedicated"
    assert quotas(api, subject_id)["dedicated"] == (3, 1)


def test_r32_explicit_full_type_is_refused_and_changes_nothing(api, shop):
    """R-32 an explicitly chosen full type → 409 TYPE_QUOTA_EXHAUSTED, no silent fallback."""
    subject_id, shop_id, _, _ = shop
    submitted(api, api.ready_shop(subject_id)[1])  # takes main
    before = snapshot(api, shop_id)
    r = api.submit(shop_id, account_type="main")
    assert r.status_code == 409
    assert r.json()["code"] == "TYPE_QUOTA_EXHAUSTED"
    assert codes(r.json()["reasons"]) == ["TYPE_QUOTA_EXHAUSTED"]
    assert snapshot(api, shop_id) == before
    assert quotas(api, subject_id)["vertical"] == (2, 0)


def test_r32_fallback_main_vertical_dedicated_then_quota_exhausted(api):
    """R-32 按序后补 through the API: main, vertical, dedicated, then QUOTA_EXHAUSTED (R-33)."""
    subject_id = api.subject(subject_type="individual_business")
    got = [submitted(api, api.ready_shop(subject_id)[1])["account_type"] for _ in range(3)]
    assert got == ["main", "vertical", "dedicated"]
    r = api.submit(api.ready_shop(subject_id)[1])
    assert r.status_code == 409
    assert r.json()["code"] == "QUOTA_EXHAUSTED"
    assert quotas(api, subject_id) == {"main": (1, 1), "vertical": (1, 1), "dedicated": (1, 1)}


def test_r31_cross_border_explicit_vertical_is_refused(api):
    """R-31, R-32 cross-border + vertical → 409 VERTICAL_NOT_AVAILABLE; without a choice main → dedicated."""
    subject_id = api.subject(cross_border=True)
    _, shop_id, _ = api.ready_shop(subject_id)
    r = api.submit(shop_id, account_type="vertical")
    assert r.status_code == 409
    assert r.json()["code"] == "VERTICAL_NOT_AVAILABLE"
    assert applications(api, shop_id) == []
    assert submitted(api, shop_id)["account_type"] == "main"
    assert submitted(api, api.ready_shop(subject_id)[1])["account_type"] == "dedicated"


def test_r40_named_operator_is_masked_and_becomes_the_operator(api, shop):
    """R-40 the merchant names another operator; R-50 it is shown masked everywhere."""
    subject_id, shop_id, _, holder = shop
    operator = factories.person(name="李四娃")
    app = submitted(api, shop_id, api.merchant(subject_id), operator=operator)
    expected = {
        "name": "李**",
        "id_number": operator["id_number"][:3] + "*" * 11 + operator["id_number"][-4:],
        "phone": operator["phone"][:3] + "****" + operator["phone"][-4:],
    }
    assert app["operator"] == expected
    assert api.accept(app["application_id"]).status_code == 200
    assert api.official_account(shop_id)["operator"] == expected
    seen = (
        str(applications(api, shop_id))
        + str(api.events(shop_id=shop_id))
        + str(api.audit(app["application_id"]))
        + str(admin_view(api, app["application_id"]))
        + str(api.official_account(shop_id))
    )
    for secret in (operator["id_number"], operator["phone"], operator["name"], holder["id_number"], holder["phone"]):
        assert secret not in seen


def test_r40_default_operator_is_the_holder(api, shop):
    """R-40 with no operator named, the holder's identity (masked) operates the account."""
    _, shop_id, _, holder = shop
    app = api.upgrade(shop_id)
    assert app["operator"]["id_number"] == holder["id_number"][:3] + "*" * 11 + holder["id_number"][-4:]
    assert api.official_account(shop_id)["operator"] == app["operator"]


def test_r63_named_operator_with_bad_id_number_is_refused(api, shop):
    """R-50, R-63 a bad ID card number → 422 INVALID_ID_NUMBER, nothing reserved."""
    subject_id, shop_id, _, _ = shop
    bad = factories.person() | {"id_number": "110105199003070000"}
    r = api.submit(shop_id, operator=bad)
    assert r.status_code == 422
    assert r.json()["code"] == "INVALID_ID_NUMBER"
    assert applications(api, shop_id) == []
    assert quotas(api, subject_id)["main"] == (1, 0)


def test_r04_submit_refused_lists_every_failed_check_and_changes_nothing(api, shop):
    """R-04, R-63 submit refused → 409 NOT_ELIGIBLE with every failed check in `reasons`."""
    subject_id, shop_id, account_id, holder = shop
    api.shop(subject_id, shop_id, status="closed")
    api.account(account_id, holder=holder, violations_90d=2)
    before = snapshot(api, shop_id)
    r = api.submit(shop_id, api.merchant(subject_id))
    assert r.status_code == 409
    body = r.json()
    assert body["code"] == "NOT_ELIGIBLE"
    assert codes(body["reasons"]) == ["SHOP_NOT_ACTIVE", "ACCOUNT_HAS_VIOLATIONS"]
    assert all(reason["message"] for reason in body["reasons"])
    assert snapshot(api, shop_id) == before
    assert quotas(api, subject_id)["main"] == (1, 0)


def test_r19_second_submit_while_one_in_progress_is_refused(api, shop):
    """R-19 at most one application per shop in progress → 409 APPLICATION_IN_PROGRESS."""
    subject_id, shop_id, _, _ = shop
    first = submitted(api, shop_id)
    before = snapshot(api, shop_id)
    r = api.submit(shop_id, account_type="dedicated")
    assert r.status_code == 409
    assert r.json()["code"] == "APPLICATION_IN_PROGRESS"
    assert snapshot(api, shop_id) == before
    assert quotas(api, subject_id)["dedicated"] == (3, 0)
    assert api.official_account(shop_id)["active_application_id"] == first["application_id"]
    assert [c["code"] for c in eligibility(api, shop_id)["checks"] if not c["passed"]] == ["APPLICATION_IN_PROGRESS"]


def test_r41_operator_limit_reached_on_submit(api):
    """R-41 one person operates at most 5 official accounts; an in-progress application holds a place."""
    operator = factories.person()
    subject_id = api.subject()
    for _ in range(5):
        submitted(api, api.ready_shop(api.subject())[1], operator=operator)
    _, shop_id, _ = api.ready_shop(subject_id)
    r = api.submit(shop_id, operator=operator)
    assert r.status_code == 409
    assert r.json()["code"] == "OPERATOR_LIMIT_REACHED"
    assert applications(api, shop_id) == []
    assert quotas(api, subject_id)["main"] == (1, 0)
    assert submitted(api, shop_id)["status"] == "submitted"  # the holder as operator has room


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
    assert all(not _has_cjk(r["message"]) for r in done["reasons"])


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


# ---------------------------------------------------------------- re-apply


def test_r18_reapply_after_rejected_expired_withdrawn_counts_attempts(api, shop):
    """R-18 rejected, expired, withdrawn → apply again; attempt 1, 2, 3, 4; after success ALREADY_UPGRADED."""
    subject_id, shop_id, _, _ = shop
    merchant = api.merchant(subject_id)
    first = submitted(api, shop_id, merchant)
    api.decline(first["application_id"])
    second = submitted(api, shop_id, merchant)
    api.set_clock(T0 + dt.timedelta(days=8))
    assert run_expiry(api) == 1
    third = submitted(api, shop_id, merchant)
    withdraw(api, third["application_id"], merchant)
    fourth = submitted(api, shop_id, merchant)
    assert [a["attempt"] for a in (first, second, third, fourth)] == [1, 2, 3, 4]
    assert api.accept(fourth["application_id"]).status_code == 200

    before = snapshot(api, shop_id)
    r = api.submit(shop_id, merchant)
    assert r.status_code == 409
    assert r.json()["code"] == "ALREADY_UPGRADED"
    assert snapshot(api, shop_id) == before
    assert quotas(api, subject_id) == {"main": (1, 1), "vertical": (2, 0), "dedicated": (3, 0)}


def test_r18_list_is_newest_first(api, shop):
    """R-18, API list ordering: the shop's applications newest first, by creation sequence (same clock time)."""
    _, shop_id, _, _ = shop
    ids = []
    for _ in range(3):
        app = submitted(api, shop_id)
        ids.append(app["application_id"])
        withdraw(api, app["application_id"])
    items = applications(api, shop_id)
    assert [a["application_id"] for a in items] == ids[::-1]
    assert [a["attempt"] for a in items] == [3, 2, 1]


# ---------------------------------------------------------------- progress


def test_r17_steps_for_every_state(api, shop):
    """R-17 steps with timestamps and the current step, for every state a manual application can be in."""
    subject_id, _, _, _ = shop

    def app_in(end: str, followers: int = 10) -> dict:
        _, target, account_id = api.ready_shop(subject_id, account_fields={"followers": followers})
        app = submitted(api, target, account_type="dedicated")
        api.set_clock(T0 + dt.timedelta(hours=1))
        if end in ("succeeded", "reviewing"):
            api.accept(app["application_id"])
        elif end == "declined":
            api.decline(app["application_id"])
        elif end == "withdrawn":
            withdraw(api, app["application_id"])
        elif end == "review_failed":
            api.account(account_id, status="banned")
            api.accept(app["application_id"])
        elif end == "staff_rejected":
            api.accept(app["application_id"])
            staff_reject(api, app["application_id"], "no")
        elif end == "expired":
            api.set_clock(T0 + dt.timedelta(hours=169))
            run_expiry(api)
        result = api.application(app["application_id"])
        api.set_clock(T0)
        return result

    expected = {
        "submitted": ("submitted", "holder_confirmation", ["done", "current", "pending", "pending"]),
        "succeeded": ("succeeded", "result", ["done", "done", "done", "done"]),
        "reviewing": ("reviewing", "review", ["done", "done", "current", "pending"]),
        "declined": ("rejected", "result", ["done", "failed", "skipped", "failed"]),
        "review_failed": ("rejected", "result", ["done", "done", "failed", "failed"]),
        "staff_rejected": ("rejected", "result", ["done", "done", "failed", "failed"]),
        "withdrawn": ("withdrawn", "result", ["done", "skipped", "skipped", "done"]),
        "expired": ("expired", "result", ["done", "failed", "skipped", "failed"]),
    }
    for end, (status, current, step_states) in expected.items():
        followers = 1_000_000 if end in ("reviewing", "staff_rejected") else 10
        app = app_in(end, followers)
        assert app["status"] == status, end
        assert app["current_step"] == current, end
        assert [s["step"] for s in app["steps"]] == ["submitted", "holder_confirmation", "review", "result"]
        assert [s["state"] for s in app["steps"]] == step_states, end
        for s in app["steps"]:
            if s["state"] in ("pending", "skipped"):
                assert s["at"] is None, (end, s)
            elif s["state"] != "current" or s["step"] == "review":
                assert s["at"] is not None, (end, s)
        assert dt.datetime.fromisoformat(app["steps"][0]["at"]) == T0
        if end not in ("submitted", "reviewing"):
            assert dt.datetime.fromisoformat(app["steps"][3]["at"]) > T0, end


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


# ---------------------------------------------------------------- the official-account view


def test_official_account_view_before_and_after(api, shop):
    """R-22, R-23 personal with limit 75 before; enterprise, main, manual, 100 after; not cancellable (R-12)."""
    subject_id, shop_id, account_id, _ = shop
    merchant = api.merchant(subject_id)
    before = api.official_account(shop_id, merchant)
    assert before["upgrade_status"] == "not_upgraded"
    assert before["ownership"] == "personal"
    assert before["account_type"] is None and before["origin"] is None and before["upgraded_at"] is None
    assert before["operator"] is None
    assert before["daily_post_limit"] == 75
    assert before["can_sell_as_official"] is True
    assert before["active_application_id"] is None
    assert before["account"]["account_id"] == account_id
    assert before["account"]["login_phone"].count("*") == 4

    api.set_clock(T0 + dt.timedelta(minutes=5))
    api.upgrade(shop_id)
    after = api.official_account(shop_id, merchant)
    assert after["upgrade_status"] == "upgraded"
    assert after["ownership"] == "enterprise"
    assert after["account_type"] == "main"
    assert after["origin"] == "manual"
    assert dt.datetime.fromisoformat(after["upgraded_at"]) == T0 + dt.timedelta(minutes=5)
    assert after["daily_post_limit"] == 100
    assert after["can_cancel"] is False and after["cancel_deadline"] is None
    assert after["active_application_id"] is None
    assert after["account"]["followers"] == before["account"]["followers"]


def test_r62_merchant_cannot_see_another_subjects_official_account(api, shop):
    """R-62 404 for another subject's shop."""
    _, shop_id, _, _ = shop
    stranger = api.merchant(api.subject())
    assert api.client.get(f"/api/v1/shops/{shop_id}/official-account", headers=stranger).status_code == 404


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


def test_r14_upgrade_deadline_ends_selling_for_accounts_not_upgraded(deadline_api):
    """R-14 after the deadline a not-upgraded official account cannot sell as official; an upgraded one still can."""
    api = deadline_api
    deadline = dt.datetime(2026, 6, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    api.set_clock(deadline - dt.timedelta(days=1))
    subject_id, upgraded_shop, _ = api.ready_shop()
    _, plain_shop, _ = api.ready_shop(subject_id)
    api.upgrade(upgraded_shop)

    view = api.official_account(plain_shop)
    assert view["can_sell_as_official"] is True
    assert dt.datetime.fromisoformat(view["upgrade_deadline"]) == deadline

    api.set_clock(deadline - dt.timedelta(seconds=1))
    assert api.official_account(plain_shop)["can_sell_as_official"] is True
    api.set_clock(deadline)
    assert api.official_account(plain_shop)["can_sell_as_official"] is False
    assert api.official_account(upgraded_shop)["can_sell_as_official"] is True
    api.upgrade(plain_shop)
    assert api.official_account(plain_shop)["can_sell_as_official"] is True


def test_r14_without_a_deadline_every_bound_account_can_sell(api, shop):
    """R-14 the default policy sets no deadline."""
    _, shop_id, _, _ = shop
    api.set_clock(dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    view = api.official_account(shop_id)
    assert view["upgrade_deadline"] is None
    assert view["can_sell_as_official"] is True


# ---------------------------------------------------------------- under concurrency


def _race(live_server: str, calls: list[tuple[str, dict]], headers: dict) -> list:
    """POST every (path, body) at once from its own connection; the responses in order."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    barrier = threading.Barrier(len(calls))

    def one(call):
        path, body = call
        with httpx.Client(base_url=live_server, timeout=60) as c:
            barrier.wait()
            return c.post(path, json=body, headers=headers)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


@pytest.fixture
def live_api(live_server, admin_headers):
    import httpx

    with httpx.Client(base_url=live_server, timeout=60) as c:
        yield Api(c, admin_headers)


def test_r19_concurrent_submits_for_one_shop_make_one_application(live_server, live_api, admin_headers):
    """R-19 eight submits at once for one shop: exactly one 201, the rest APPLICATION_IN_PROGRESS, one slot used."""
    api = live_api
    subject_id, shop_id, _ = api.ready_shop()
    responses = _race(
        live_server, [(f"/api/v1/shops/{shop_id}/upgrade-applications", {"agree_terms": True})] * 8, admin_headers
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 7, [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"APPLICATION_IN_PROGRESS"}
    assert len(applications(api, shop_id)) == 1
    assert sum(used for _, used in quotas(api, subject_id).values()) == 1


def test_r33_concurrent_submits_never_reserve_beyond_the_quota(live_server, live_api, admin_headers):
    """R-33 eight shops of an individual business (1+1+1 slots) submit at once: three succeed, one per type."""
    api = live_api
    subject_id = api.subject(subject_type="individual_business")
    shops = [api.ready_shop(subject_id)[1] for _ in range(8)]
    responses = _race(
        live_server, [(f"/api/v1/shops/{s}/upgrade-applications", {"agree_terms": True}) for s in shops], admin_headers
    )
    created = [r.json() for r in responses if r.status_code == 201]
    assert sorted(a["account_type"] for a in created) == ["dedicated", "main", "vertical"], [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code != 201} == {"QUOTA_EXHAUSTED"}
    assert quotas(api, subject_id) == {"main": (1, 1), "vertical": (1, 1), "dedicated": (1, 1)}


def test_r41_concurrent_submits_never_exceed_operator_capacity(live_server, live_api, admin_headers):
    """R-41 eight subjects name the same operator at once: exactly five applications hold a place."""
    api = live_api
    operator = factories.person()
    shops = [api.ready_shop()[1] for _ in range(8)]
    responses = _race(
        live_server,
        [(f"/api/v1/shops/{s}/upgrade-applications", {"agree_terms": True, "operator": operator}) for s in shops],
        admin_headers,
    )
    assert sorted(r.status_code for r in responses) == [201] * 5 + [409] * 3, [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"OPERATOR_LIMIT_REACHED"}


def test_r20_accept_and_withdraw_at_once_one_wins_cleanly(live_server, live_api, admin_headers):
    """R-20, R-33 the holder accepts while the merchant withdraws: one wins, the other is 409, slots match the winner."""
    api = live_api
    for _ in range(3):
        subject_id, shop_id, _ = api.ready_shop()
        app_id = submitted(api, shop_id)["application_id"]
        token = api.token(app_id)
        accept_r, withdraw_r = _race(
            live_server,
            [(f"/api/v1/confirmations/{token}/accept", {}), (f"/api/v1/upgrade-applications/{app_id}/withdraw", {})],
            admin_headers,
        )
        assert sorted([accept_r.status_code, withdraw_r.status_code]) == [200, 409], (accept_r.text, withdraw_r.text)
        status = api.application(app_id)["status"]
        assert status == ("succeeded" if accept_r.status_code == 200 else "withdrawn")
        assert quotas(api, subject_id)["main"] == (1, 1 if status == "succeeded" else 0)
        moves = [(a["from"], a["to"]) for a in api.audit(app_id)]
        assert moves[-1] == ("reviewing" if status == "succeeded" else "submitted", status)
        assert ("submitted", "withdrawn") not in moves or status == "withdrawn"


def test_r18_r17_reapply_after_cancel(policy_api):
    """R-12 (policy allow_manual), R-17 a cancelled application's steps, R-18 cancelled → apply again as attempt 2."""
    api = policy_api(**{"allow_manual = false": "allow_manual = true"})
    api.set_clock(T0)
    subject_id, shop_id, _ = api.ready_shop()
    first = api.upgrade(shop_id)
    assert api.official_account(shop_id)["can_cancel"] is True
    api.set_clock(T0 + dt.timedelta(days=1))
    r = api.client.post(f"/api/v1/shops/{shop_id}/official-account/cancel-upgrade", headers=api.merchant(subject_id))
    assert r.status_code == 200, r.text
    cancelled = api.application(first["application_id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["current_step"] == "result"
    assert [s["state"] for s in cancelled["steps"]] == ["done", "done", "done", "done"]
    assert quotas(api, subject_id)["main"] == (1, 0)
    second = submitted(api, shop_id)
    assert second["attempt"] == 2
    assert second["account_type"] == "main"
    assert [(a["from"], a["to"]) for a in api.audit(first["application_id"])][-1] == ("succeeded", "cancelled")
    assert "upgrade.cancelled" in [e["type"] for e in api.events(shop_id=shop_id)]
