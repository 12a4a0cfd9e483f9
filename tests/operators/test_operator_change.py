"""Operator changes (更换运营人, SPEC R-42, R-41, R-13) through the HTTP API: an SMS code to the new
phone confirms each; codes expire, allow a few tries, and a new request supersedes the old one; one person
operates at most 5 official accounts (R-41)."""

import datetime as dt

from tests import factories
from tests.operators.helpers import (
    API,
    T0,
    change_operator,
    latest_code,
    mask_phone,
    masked,
    problem,
    request_change,
    request_rebind,
    requested,
    sms,
    upgraded_shop,
    verify_change,
    verify_rebind,
    wrong,
)

# ---------------------------------------------------------------- 更换运营人


def test_r42_operator_change_before_the_upgrade_is_refused(api):
    """R-42 only an upgraded official account has an operator to replace → 409 NOT_UPGRADED, no SMS."""
    api.set_clock(T0)
    subject_id, shop_id, _ = api.ready_shop()
    new = factories.person()
    problem(request_change(api, shop_id, new, api.merchant(subject_id)), 409, "NOT_UPGRADED")
    assert sms(api, new["phone"]) == []


def test_r42_operator_change_confirmed_by_sms_code_to_the_new_phone(api, shop):
    """R-42, R-24 the code goes to the new operator's phone only; verifying it makes them the operator,
    masked in the answer and the view (R-50), with an operator.changed event and an audit row (R-60, R-61)."""
    merchant, shop_id, account_id, holder = shop["merchant"], shop["shop_id"], shop["account_id"], shop["holder"]
    new = factories.person(name="钱多多")
    r = request_change(api, shop_id, new, merchant)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["change_id"]
    assert dt.datetime.fromisoformat(body["expires_at"]) == T0 + dt.timedelta(minutes=5)
    messages = sms(api, new["phone"])
    assert len(messages) == 1 and len(messages[0]["code"]) == 6 and messages[0]["code"].isdigit()
    assert messages[0]["phone"] == mask_phone(new["phone"])
    # the old operator (the holder) got only the consent link of the upgrade, no code
    assert [m for m in sms(api, holder["phone"]) if m["code"]] == []
    # nothing changes until the code is verified
    assert api.official_account(shop_id, merchant)["operator"] == masked(holder)

    r = verify_change(api, shop_id, body["change_id"], messages[0]["code"], merchant)
    assert r.status_code == 200, r.text
    assert r.json()["operator"] == masked(new)
    assert r.json()["account_id"] == account_id
    assert api.official_account(shop_id, merchant)["operator"] == masked(new)

    changed = [e for e in api.events(shop_id=shop_id) if e["type"] == "operator.changed"]
    assert len(changed) == 1 and changed[0]["data"]["operator"] == masked(new)
    rows = [a for a in api.audit(account_id) if a["action"] == "operator.changed"]
    assert len(rows) == 1
    text = str(rows) + str(changed)
    assert masked(holder)["id_number"] in text and masked(new)["id_number"] in text
    for secret in (new["name"], new["id_number"], new["phone"], holder["id_number"], holder["phone"]):
        assert secret not in text + r.text


def test_r42_verified_code_cannot_be_used_twice(api, shop):
    """R-42 a verified change is finished: the same code again changes nothing."""
    new = factories.person()
    change_id = requested(api, shop["shop_id"], new)
    code = latest_code(api, new["phone"])
    assert verify_change(api, shop["shop_id"], change_id, code).status_code == 200
    r = verify_change(api, shop["shop_id"], change_id, code)
    assert r.status_code == 409
    assert len([e for e in api.events(shop_id=shop["shop_id"]) if e["type"] == "operator.changed"]) == 1


def test_r42_wrong_code_is_refused_and_counted(api, shop):
    """R-42 a wrong code → 422 CODE_INVALID, operator unchanged; the tries are counted across requests, and
    the 5th wrong code → 429 TOO_MANY_ATTEMPTS, after which even the right code is refused."""
    shop_id, holder = shop["shop_id"], shop["holder"]
    new = factories.person()
    change_id = requested(api, shop_id, new)
    code = latest_code(api, new["phone"])
    for left in (4, 3, 2, 1):
        body = problem(verify_change(api, shop_id, change_id, wrong(code)), 422, "CODE_INVALID")
        assert str(left) in body["detail"]
    problem(verify_change(api, shop_id, change_id, wrong(code)), 429, "TOO_MANY_ATTEMPTS")
    problem(verify_change(api, shop_id, change_id, code), 429, "TOO_MANY_ATTEMPTS")
    assert api.official_account(shop_id)["operator"] == masked(holder)
    assert not [e for e in api.events(shop_id=shop_id) if e["type"] == "operator.changed"]


def test_r42_right_code_after_a_few_wrong_ones_still_works(api, shop):
    """R-42 fewer than 5 wrong tries leave the code usable."""
    new = factories.person()
    change_id = requested(api, shop["shop_id"], new)
    code = latest_code(api, new["phone"])
    for _ in range(4):
        problem(verify_change(api, shop["shop_id"], change_id, wrong(code)), 422, "CODE_INVALID")
    assert verify_change(api, shop["shop_id"], change_id, code).status_code == 200
    assert api.official_account(shop["shop_id"])["operator"] == masked(new)


def test_r42_code_expires_after_five_minutes(api, shop):
    """R-42 the code is valid 5 minutes (policy sms.code_ttl_seconds): at T0+5 min → 409 CODE_EXPIRED."""
    shop_id, holder = shop["shop_id"], shop["holder"]
    new = factories.person()
    change_id = requested(api, shop_id, new)
    code = latest_code(api, new["phone"])
    api.set_clock(T0 + dt.timedelta(minutes=5))
    problem(verify_change(api, shop_id, change_id, code), 409, "CODE_EXPIRED")
    problem(verify_change(api, shop_id, change_id, code), 409, "CODE_EXPIRED")
    assert api.official_account(shop_id)["operator"] == masked(holder)


def test_r42_code_still_valid_just_before_expiry(api, shop):
    """R-42 at T0+4:59 the code still works."""
    new = factories.person()
    change_id = requested(api, shop["shop_id"], new)
    code = latest_code(api, new["phone"])
    api.set_clock(T0 + dt.timedelta(minutes=4, seconds=59))
    assert verify_change(api, shop["shop_id"], change_id, code).status_code == 200


def test_r42_resend_within_60_seconds_is_refused(api, shop):
    """R-42 a new code for the same account within 60 s (policy sms.resend_cooldown_seconds) → 429, no SMS."""
    new = factories.person()
    requested(api, shop["shop_id"], new)
    api.set_clock(T0 + dt.timedelta(seconds=59))
    assert problem(request_change(api, shop["shop_id"], new), 429, "TOO_MANY_ATTEMPTS")["retry_after"] == 1
    problem(request_change(api, shop["shop_id"], factories.person()), 429, "TOO_MANY_ATTEMPTS")
    assert len(sms(api, new["phone"])) == 1


def test_r42_new_request_after_60_seconds_supersedes_the_old_code(api, shop):
    """R-42 after the cooldown a new request sends a new code; the old one no longer works."""
    shop_id = shop["shop_id"]
    new = factories.person()
    first = requested(api, shop_id, new)
    old_code = latest_code(api, new["phone"])
    api.set_clock(T0 + dt.timedelta(seconds=60))
    second = requested(api, shop_id, new)
    assert second != first
    messages = sms(api, new["phone"])
    assert len(messages) == 2
    new_code = messages[0]["code"]
    problem(verify_change(api, shop_id, first, old_code), 409, "CODE_EXPIRED")
    if new_code != old_code:
        problem(verify_change(api, shop_id, second, old_code), 422, "CODE_INVALID")
    assert verify_change(api, shop_id, second, new_code).status_code == 200
    assert api.official_account(shop_id)["operator"] == masked(new)


def test_r41_new_operator_at_capacity_is_refused(api):
    """R-41 a person who already operates 5 official accounts cannot take a 6th → 409 OPERATOR_LIMIT_REACHED."""
    api.set_clock(T0)
    busy = factories.person(name="孙忙忙")
    subject_id = api.subject()
    for _ in range(5):
        upgraded_shop(api, subject_id, operator=busy)
    _, shop_id, _, holder = upgraded_shop(api)
    problem(request_change(api, shop_id, busy), 409, "OPERATOR_LIMIT_REACHED")
    assert sms(api, busy["phone"]) == []
    assert api.official_account(shop_id)["operator"] == masked(holder)


def test_r41_capacity_is_checked_again_when_the_code_is_verified(api):
    """R-41 the new person reaches 5 between request and verify → 409 OPERATOR_LIMIT_REACHED, nothing changes."""
    api.set_clock(T0)
    busy = factories.person(name="孙忙忙")
    subject_id = api.subject()
    for _ in range(4):
        upgraded_shop(api, subject_id, operator=busy)
    _, shop_id, account_id, holder = upgraded_shop(api)
    change_id = requested(api, shop_id, busy)
    code = latest_code(api, busy["phone"])
    upgraded_shop(api, subject_id, operator=busy)  # the 5th
    problem(verify_change(api, shop_id, change_id, code), 409, "OPERATOR_LIMIT_REACHED")
    assert api.official_account(shop_id)["operator"] == masked(holder)
    # the old operator still holds their place: they can be named elsewhere as before
    assert not [a for a in api.audit(account_id) if a["action"] == "operator.changed"]


def test_r41_capacity_moves_from_the_old_operator_to_the_new(api):
    """R-41 after a change the old person has a place free (they may take another account) and the new one
    counts it."""
    api.set_clock(T0)
    first = factories.person(name="周一")
    second = factories.person(name="吴二")
    subject_id = api.subject()
    shops = [upgraded_shop(api, subject_id, operator=first)[1] for _ in range(5)]
    _, other_shop, _ = api.ready_shop()
    assert api.submit(other_shop, operator=first).json()["code"] in ("OPERATOR_LIMIT_REACHED", "NOT_ELIGIBLE")

    change_operator(api, shops[0], second)
    assert api.official_account(shops[0])["operator"] == masked(second)
    app = api.upgrade(other_shop, operator=first)
    assert app["status"] == "succeeded"
    assert api.official_account(other_shop)["operator"] == masked(first)
    # first is at 5 again; second operates 1 and can take 4 more
    _, extra_shop, _, _ = upgraded_shop(api)
    problem(request_change(api, extra_shop, first), 409, "OPERATOR_LIMIT_REACHED")
    change_operator(api, extra_shop, second)


def test_r42_replacing_with_the_same_person_works_at_capacity(api):
    """R-42, R-41 naming the current operator again (e.g. with a new phone) does not need a 6th place."""
    api.set_clock(T0)
    busy = factories.person(name="郑满满")
    subject_id = api.subject()
    shops = [upgraded_shop(api, subject_id, operator=busy)[1] for _ in range(5)]
    same = busy | {"phone": factories.phone()}
    out = change_operator(api, shops[0], same)
    assert out["operator"] == masked(same)
    assert api.official_account(shops[0])["operator"] == masked(same)
    # still 5, not 6 and not 4
    _, other_shop, _, _ = upgraded_shop(api)
    problem(request_change(api, other_shop, busy), 409, "OPERATOR_LIMIT_REACHED")


def test_r62_another_merchant_cannot_change_the_operator(api, shop):
    """R-62 another subject's merchant → 404 NOT_FOUND, for the request and the verification; no SMS."""
    stranger = api.merchant(api.subject())
    new = factories.person()
    problem(request_change(api, shop["shop_id"], new, stranger), 404, "NOT_FOUND")
    assert sms(api, new["phone"]) == []
    change_id = requested(api, shop["shop_id"], new, shop["merchant"])
    problem(verify_change(api, shop["shop_id"], change_id, latest_code(api, new["phone"]), stranger), 404, "NOT_FOUND")
    assert api.official_account(shop["shop_id"])["operator"] == masked(shop["holder"])


def test_r42_unknown_change_or_shop_is_not_found(api, shop):
    """R-63 an unknown change id or shop → 404."""
    problem(verify_change(api, shop["shop_id"], "opc_nope", "123456"), 404, "NOT_FOUND")
    problem(request_change(api, "shop-nope", factories.person()), 404, "NOT_FOUND")


def test_r50_bad_id_number_or_phone_is_refused(api, shop):
    """R-50, R-63 a bad ID card number → 422 INVALID_ID_NUMBER, a bad mobile → 422 INVALID_PHONE; nothing sent."""
    new = factories.person()
    problem(request_change(api, shop["shop_id"], new | {"id_number": "110105199003070000"}), 422, "INVALID_ID_NUMBER")
    problem(request_change(api, shop["shop_id"], new | {"phone": "12345678901"}), 422, "INVALID_PHONE")
    assert sms(api, new["phone"]) == []
    # nothing pending either: a valid request right away is not held back by a cooldown
    assert request_change(api, shop["shop_id"], new).status_code == 201


def test_r63_code_must_be_six_digits(api, shop):
    """R-63 a code that is not 6 digits is a payload error (422 VALIDATION_ERROR) and is not counted."""
    new = factories.person()
    change_id = requested(api, shop["shop_id"], new)
    for _ in range(6):
        problem(verify_change(api, shop["shop_id"], change_id, "12ab"), 422, "VALIDATION_ERROR")
    assert verify_change(api, shop["shop_id"], change_id, latest_code(api, new["phone"])).status_code == 200


def test_r42_after_too_many_wrong_codes_a_new_code_waits_for_the_cooldown(api, shop):
    """R-42 5 wrong codes end the change; a new code is not sent at once but after the 60 s cooldown, so
    guessing cannot go on at the pace of requests (5 guesses a minute at most)."""
    shop_id = shop["shop_id"]
    new = factories.person()
    change_id = requested(api, shop_id, new)
    code = latest_code(api, new["phone"])
    for _ in range(5):
        verify_change(api, shop_id, change_id, wrong(code))
    problem(request_change(api, shop_id, new), 429, "TOO_MANY_ATTEMPTS")
    assert len(sms(api, new["phone"])) == 1
    api.set_clock(T0 + dt.timedelta(seconds=60))
    change_operator(api, shop_id, new)


def test_r42_successive_changes_need_no_cooldown(api, shop):
    """R-42 once a change is verified, the merchant may start the next one right away."""
    first, second = factories.person(), factories.person()
    change_operator(api, shop["shop_id"], first)
    change_operator(api, shop["shop_id"], second)
    assert api.official_account(shop["shop_id"])["operator"] == masked(second)


def test_r41_cancel_frees_the_new_operators_place(api):
    """R-13, R-41 an auto upgrade whose operator was changed, then cancelled: the account has no operator any
    more, so the new operator's place is free again."""
    api.set_clock(T0)
    busy = factories.person(name="陈忙碌")
    subject_id = api.subject()
    for _ in range(4):
        upgraded_shop(api, subject_id, operator=busy)
    other_subject, auto_shop, _ = api.ready_shop()
    r = api.client.post(f"{API}/admin/auto-upgrade-waves", json={"limit": 10}, headers=api.admin)
    assert r.status_code == 202, r.text
    wave_id = r.json()["wave_id"]
    for _ in range(400):
        wave = api.client.get(f"{API}/admin/auto-upgrade-waves/{wave_id}", headers=api.admin).json()
        if wave["status"] != "running":
            break
    assert wave["status"] == "done" and api.official_account(auto_shop)["origin"] == "auto", wave
    change_operator(api, auto_shop, busy)  # busy now operates 5
    _, spare_shop, _, _ = upgraded_shop(api)
    problem(request_change(api, spare_shop, busy), 409, "OPERATOR_LIMIT_REACHED")
    r = api.client.post(f"{API}/shops/{auto_shop}/official-account/cancel-upgrade", headers=api.merchant(other_subject))
    assert r.status_code == 200, r.text
    assert api.official_account(auto_shop)["operator"] is None
    change_operator(api, spare_shop, busy)


def test_r13_a_change_requested_before_a_cancel_does_not_apply_to_a_later_upgrade(api):
    """R-13, R-42 a cancel ends the upgrade the code was asked for: after a new (manual) upgrade, the old code
    → 409 CODE_EXPIRED and the new upgrade keeps its own operator."""
    api.set_clock(T0)
    holder = factories.person(name="褚守成")
    subject_id, shop_id, _ = api.ready_shop(holder=holder)
    r = api.client.post(f"{API}/admin/auto-upgrade-waves", json={"limit": 10}, headers=api.admin)
    assert r.status_code == 202, r.text
    for _ in range(400):
        wave = api.client.get(f"{API}/admin/auto-upgrade-waves/{r.json()['wave_id']}", headers=api.admin).json()
        if wave["status"] != "running":
            break
    assert api.official_account(shop_id)["origin"] == "auto", wave
    new = factories.person()
    change_id = requested(api, shop_id, new)
    rebind = request_rebind(api, shop_id, new["phone"]).json()["rebind_id"]
    merchant = api.merchant(subject_id)
    assert (
        api.client.post(f"{API}/shops/{shop_id}/official-account/cancel-upgrade", headers=merchant).status_code == 200
    )
    r = verify_change(api, shop_id, change_id, latest_code(api, new["phone"]))
    assert r.status_code == 409 and r.json()["code"] in ("NOT_UPGRADED", "CODE_EXPIRED"), r.text
    assert api.upgrade(shop_id)["status"] == "succeeded"
    codes = [m["code"] for m in sms(api, new["phone"]) if m["code"]]
    problem(verify_change(api, shop_id, change_id, codes[1]), 409, "CODE_EXPIRED")
    problem(verify_rebind(api, shop_id, rebind, codes[0]), 409, "CODE_EXPIRED")
    assert api.official_account(shop_id)["operator"] == masked(holder)
    assert api.official_account(shop_id)["account"]["login_phone"] != mask_phone(new["phone"])
