"""Login-phone rebinding (登录手机号换绑, SPEC R-24) through the HTTP API: an SMS code to the new phone
confirms it; codes expire, allow a few tries, and a new request supersedes the old one."""

import datetime as dt

from tests import factories
from tests.operators.helpers import (
    T0,
    latest_code,
    mask_phone,
    problem,
    request_rebind,
    requested,
    sms,
    verify_change,
    verify_rebind,
    wrong,
)

# ---------------------------------------------------------------- 登录手机号换绑


def test_r24_phone_rebind_before_the_upgrade_is_refused(api):
    """R-24 only after the upgrade → 409 NOT_UPGRADED."""
    api.set_clock(T0)
    subject_id, shop_id, _ = api.ready_shop()
    new_phone = factories.phone()
    problem(request_rebind(api, shop_id, new_phone, api.merchant(subject_id)), 409, "NOT_UPGRADED")
    assert sms(api, new_phone) == []


def test_r24_login_phone_rebind_confirmed_by_sms_code_to_the_new_phone(api, shop):
    """R-24 the code goes to the new login phone only; verifying it changes the login phone (masked in the view),
    with a login_phone.changed event and an audit row on the account."""
    merchant, shop_id, account_id = shop["merchant"], shop["shop_id"], shop["account_id"]
    old_phone_masked = api.official_account(shop_id, merchant)["account"]["login_phone"]
    new_phone = factories.phone()
    r = request_rebind(api, shop_id, new_phone, merchant)
    assert r.status_code == 201, r.text
    rebind_id = r.json()["rebind_id"]
    assert dt.datetime.fromisoformat(r.json()["expires_at"]) == T0 + dt.timedelta(minutes=5)
    messages = sms(api, new_phone)
    assert len(messages) == 1
    assert api.official_account(shop_id, merchant)["account"]["login_phone"] == old_phone_masked

    r = verify_rebind(api, shop_id, rebind_id, messages[0]["code"], merchant)
    assert r.status_code == 200, r.text
    assert r.json()["login_phone"] == mask_phone(new_phone)
    assert api.official_account(shop_id, merchant)["account"]["login_phone"] == mask_phone(new_phone)
    changed = [e for e in api.events(shop_id=shop_id) if e["type"] == "login_phone.changed"]
    assert len(changed) == 1 and changed[0]["data"]["login_phone"] == mask_phone(new_phone)
    rows = [a for a in api.audit(account_id) if a["action"] == "login_phone.changed"]
    assert len(rows) == 1
    assert new_phone not in str(rows) + str(changed) + r.text


def test_r24_phone_rebind_wrong_code_counts_then_too_many_attempts(api, shop):
    """R-24 wrong codes → 422 CODE_INVALID, the 5th → 429 TOO_MANY_ATTEMPTS, then the right code is refused too."""
    shop_id = shop["shop_id"]
    before = api.official_account(shop_id)["account"]["login_phone"]
    new_phone = factories.phone()
    rebind_id = request_rebind(api, shop_id, new_phone).json()["rebind_id"]
    code = latest_code(api, new_phone)
    for _ in range(4):
        problem(verify_rebind(api, shop_id, rebind_id, wrong(code)), 422, "CODE_INVALID")
    problem(verify_rebind(api, shop_id, rebind_id, wrong(code)), 429, "TOO_MANY_ATTEMPTS")
    problem(verify_rebind(api, shop_id, rebind_id, code), 429, "TOO_MANY_ATTEMPTS")
    assert api.official_account(shop_id)["account"]["login_phone"] == before


def test_r24_phone_rebind_expiry_and_resend(api, shop):
    """R-24 resend within 60 s → 429; after it a new code supersedes the old; a code expires after 5 minutes."""
    shop_id = shop["shop_id"]
    new_phone = factories.phone()
    first = request_rebind(api, shop_id, new_phone).json()["rebind_id"]
    old_code = latest_code(api, new_phone)
    api.set_clock(T0 + dt.timedelta(seconds=30))
    problem(request_rebind(api, shop_id, new_phone), 429, "TOO_MANY_ATTEMPTS")
    api.set_clock(T0 + dt.timedelta(seconds=60))
    second = request_rebind(api, shop_id, new_phone).json()["rebind_id"]
    problem(verify_rebind(api, shop_id, first, old_code), 409, "CODE_EXPIRED")
    code = latest_code(api, new_phone)
    api.set_clock(T0 + dt.timedelta(seconds=60 + 300))
    problem(verify_rebind(api, shop_id, second, code), 409, "CODE_EXPIRED")


def test_r24_rebind_and_operator_change_are_independent(api, shop):
    """R-24 a pending operator change does not hold back a login-phone rebind (and vice versa)."""
    shop_id = shop["shop_id"]
    new = factories.person()
    change_id = requested(api, shop_id, new)
    new_phone = factories.phone()
    r = request_rebind(api, shop_id, new_phone)
    assert r.status_code == 201, r.text
    assert verify_rebind(api, shop_id, r.json()["rebind_id"], latest_code(api, new_phone)).status_code == 200
    assert verify_change(api, shop_id, change_id, latest_code(api, new["phone"])).status_code == 200


def test_r24_rebind_codes_are_not_operator_codes(api, shop):
    """R-24 a rebind id is not accepted on the operator-change path → 404."""
    new_phone = factories.phone()
    rebind_id = request_rebind(api, shop["shop_id"], new_phone).json()["rebind_id"]
    problem(verify_change(api, shop["shop_id"], rebind_id, latest_code(api, new_phone)), 404, "NOT_FOUND")


def test_r50_phone_rebind_bad_phone_is_refused(api, shop):
    """R-50 a bad mobile → 422 INVALID_PHONE."""
    problem(request_rebind(api, shop["shop_id"], "12345678901"), 422, "INVALID_PHONE")
    problem(request_rebind(api, shop["shop_id"], "1380013800"), 422, "INVALID_PHONE")


def test_r62_another_merchant_cannot_rebind_the_login_phone(api, shop):
    """R-62 another subject's merchant → 404."""
    stranger = api.merchant(api.subject())
    new_phone = factories.phone()
    problem(request_rebind(api, shop["shop_id"], new_phone, stranger), 404, "NOT_FOUND")
    assert sms(api, new_phone) == []


def test_r24_after_too_many_wrong_codes_a_new_rebind_code_waits_for_the_cooldown(api, shop):
    """R-24 the same for the login phone."""
    shop_id = shop["shop_id"]
    new_phone = factories.phone()
    rebind_id = request_rebind(api, shop_id, new_phone).json()["rebind_id"]
    code = latest_code(api, new_phone)
    for _ in range(5):
        verify_rebind(api, shop_id, rebind_id, wrong(code))
    problem(request_rebind(api, shop_id, new_phone), 429, "TOO_MANY_ATTEMPTS")
    api.set_clock(T0 + dt.timedelta(seconds=60))
    assert request_rebind(api, shop_id, new_phone).status_code == 201
