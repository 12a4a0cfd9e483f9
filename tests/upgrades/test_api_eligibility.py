"""The upgrade workflow through the HTTP API: eligibility and quotas."""

from tests.upgrades.helpers import (
    CHECK_CODES,
    EN,
    ZH,
    applications,
    codes,
    eligibility,
    has_cjk,
    quotas,
    submitted,
    withdraw,
)

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
        assert not has_cjk(c_en["message"]) and has_cjk(c_zh["message"])
    failed_en = next(c for c in en["checks"] if c["code"] == "ACCOUNT_NOT_NORMAL")
    failed_zh = next(c for c in zh["checks"] if c["code"] == "ACCOUNT_NOT_NORMAL")
    assert "normal" in failed_en["message"] and not has_cjk(failed_en["fix"])
    assert has_cjk(failed_zh["fix"])

    r = api.client.post(
        f"/api/v1/shops/{shop_id}/upgrade-applications", json={"agree_terms": True}, headers=api.admin | EN
    )
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert not has_cjk(r.json()["title"]) and not has_cjk(r.json()["reasons"][0]["message"])
    r = api.submit(shop_id)
    assert has_cjk(r.json()["title"]) and has_cjk(r.json()["reasons"][0]["message"])


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
