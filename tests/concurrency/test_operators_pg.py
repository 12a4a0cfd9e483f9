"""Operator capacity (SPEC R-41) under operator changes (更换运营人, R-42): many verifications at once, on
different accounts, all naming the same new person; the slots table must hold the bound of 5."""

import pytest

from guanhao import pii
from guanhao.upgrades import quotas
from tests.concurrency.test_races import assert_clean, race, rows, scalar, seed
from tests.factories import Api, person

pytestmark = pytest.mark.postgres

API = "/api/v1"
ACCOUNTS = 22


def latest_code(driver: Api, phone: str) -> str:
    r = driver.client.get(f"{API}/sandbox/sms", params={"phone": phone}, headers=driver.admin)
    assert r.status_code == 200, r.text
    return r.json()["items"][0]["code"]


def test_r41_capacity_holds_under_22_concurrent_operator_change_verifications(live_server, driver, admin_headers, sql):
    """R-41, R-42: 22 upgraded accounts of 22 subjects each have a pending change to the same new person (who
    operates nothing yet); all 22 codes are verified at once → exactly 5 succeed, the rest 409
    OPERATOR_LIMIT_REACHED, and the person holds exactly 5 operator slots."""
    shops = seed(driver, subjects=ACCOUNTS, shops_per_subject=1)
    for _, shop_id, _ in shops:
        assert driver.upgrade(shop_id)["status"] == "succeeded"
    newcomer = person(name="冯抢手")
    pending = []
    for _, shop_id, account_id in shops:
        r = driver.client.post(
            f"{API}/shops/{shop_id}/official-account/operator-changes", json=newcomer, headers=admin_headers
        )
        assert r.status_code == 201, r.text
        pending.append((shop_id, account_id, r.json()["change_id"], latest_code(driver, newcomer["phone"])))

    def verify(shop_id, change_id, code):
        return lambda client: client.post(
            f"{API}/shops/{shop_id}/official-account/operator-changes/{change_id}/verify",
            json={"code": code},
            headers=admin_headers,
        )

    responses = race(live_server, [verify(shop_id, change_id, code) for shop_id, _, change_id, code in pending])

    outcome = assert_clean(responses, ok={200}, refused={"OPERATOR_LIMIT_REACHED"})
    assert outcome[200] == 5, outcome
    winners = {r.json()["account_id"] for r in responses if r.status_code == 200}

    pool = quotas.operator_pool(pii.Person(**newcomer).id_hash)
    assert scalar(sql, "SELECT count(*) FROM slots WHERE pool = :p", p=pool) == 5
    assert scalar(sql, "SELECT held FROM pools WHERE key = :p", p=pool) == 5
    assert {a for (a,) in rows(sql, "SELECT account_id FROM slots WHERE pool = :p", p=pool)} == winners
    operated = rows(
        sql, "SELECT account_id FROM official_accounts WHERE operator_id_hash = :h", h=pii.Person(**newcomer).id_hash
    )
    assert {a for (a,) in operated} == winners
    # every account still has exactly one operator slot: the winners moved theirs, the losers kept the holder's
    per_account = rows(sql, "SELECT account_id, count(*) FROM slots WHERE pool LIKE 'operator:%' GROUP BY account_id")
    assert sorted(c for _, c in per_account) == [1] * ACCOUNTS
    assert scalar(sql, "SELECT count(*) FROM pending_changes WHERE status = 'verified'") == 5
    assert scalar(sql, "SELECT count(*) FROM pending_changes WHERE status = 'pending'") == ACCOUNTS - 5
    events = [e for e in driver.events() if e["type"] == "operator.changed"]
    assert {e["data"]["account_id"] for e in events} == winners and len(events) == 5


@pytest.fixture
def upgraded(driver):
    ((_, shop_id, account_id),) = seed(driver, subjects=1, shops_per_subject=1)
    assert driver.upgrade(shop_id)["status"] == "succeeded"
    return shop_id, account_id


def test_r42_20_concurrent_wrong_codes_count_to_exactly_5(live_server, driver, admin_headers, sql, upgraded):
    """R-42: 20 wrong guesses at once on one change → 4 CODE_INVALID then TOO_MANY_ATTEMPTS; no guess escapes
    the count, and afterwards even the right code is refused."""
    shop_id, _ = upgraded
    newcomer = person()
    r = driver.client.post(
        f"{API}/shops/{shop_id}/official-account/operator-changes", json=newcomer, headers=admin_headers
    )
    assert r.status_code == 201, r.text
    change_id = r.json()["change_id"]
    code = latest_code(driver, newcomer["phone"])
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    path = f"{API}/shops/{shop_id}/official-account/operator-changes/{change_id}/verify"

    responses = race(live_server, [lambda client: client.post(path, json={"code": wrong}, headers=admin_headers)] * 20)

    outcome = assert_clean(responses, ok=set(), refused={"CODE_INVALID", "TOO_MANY_ATTEMPTS"})
    assert outcome == {"CODE_INVALID": 4, "TOO_MANY_ATTEMPTS": 16}, outcome
    assert scalar(sql, "SELECT attempts FROM pending_changes WHERE id = :c", c=change_id) == 5
    r = driver.client.post(path, json={"code": code}, headers=admin_headers)
    assert r.status_code == 429 and r.json()["code"] == "TOO_MANY_ATTEMPTS", r.text


def test_r42_20_concurrent_requests_send_one_code(live_server, driver, admin_headers, sql, upgraded):
    """R-42: 20 operator-change requests at once on one account → one code sent, the rest 429 (cooldown)."""
    shop_id, account_id = upgraded
    newcomer = person()
    path = f"{API}/shops/{shop_id}/official-account/operator-changes"

    responses = race(live_server, [lambda client: client.post(path, json=newcomer, headers=admin_headers)] * 20)

    outcome = assert_clean(responses, ok={201}, refused={"TOO_MANY_ATTEMPTS"})
    assert outcome == {201: 1, "TOO_MANY_ATTEMPTS": 19}, outcome
    assert scalar(sql, "SELECT count(*) FROM pending_changes WHERE account_id = :a", a=account_id) == 1
    assert scalar(sql, "SELECT count(*) FROM sandbox_sms WHERE purpose = 'operator'") == 1


def test_r42_20_concurrent_right_codes_change_the_operator_once(live_server, driver, admin_headers, sql, upgraded):
    """R-42: the right code sent 20 times at once → one 200, one operator.changed event, one slot moved."""
    shop_id, account_id = upgraded
    newcomer = person()
    r = driver.client.post(
        f"{API}/shops/{shop_id}/official-account/operator-changes", json=newcomer, headers=admin_headers
    )
    change_id = r.json()["change_id"]
    code = latest_code(driver, newcomer["phone"])
    path = f"{API}/shops/{shop_id}/official-account/operator-changes/{change_id}/verify"

    responses = race(live_server, [lambda client: client.post(path, json={"code": code}, headers=admin_headers)] * 20)

    outcome = assert_clean(responses, ok={200}, refused={"INVALID_TRANSITION"})
    assert outcome == {200: 1, "INVALID_TRANSITION": 19}, outcome
    assert len([e for e in driver.events() if e["type"] == "operator.changed"]) == 1
    pool = quotas.operator_pool(pii.Person(**newcomer).id_hash)
    assert rows(sql, "SELECT account_id FROM slots WHERE pool = :p", p=pool) == [(account_id,)]
    assert scalar(sql, "SELECT held FROM pools WHERE key = :p", p=pool) == 1
    assert scalar(sql, "SELECT count(*) FROM slots WHERE pool LIKE 'operator:%'") == 1
