"""R-33, R-41: "held ≤ capacity now", for each kind of pool, under concurrency — also after the capacity
was lowered while places above it were held (a sync that lowers a subject's quota, a policy that lowers the
operator limit). Raced over real HTTP on PostgreSQL; every figure is read back in SQL."""

import tomllib
from collections import Counter
from pathlib import Path

import pytest

from guanhao import pii
from guanhao.policy import DEFAULT_POLICY_PATH, get_policy
from guanhao.settings import get_settings
from guanhao.upgrades import quotas
from tests.concurrency.test_races import API, assert_clean, race, refusal_codes, rows, scalar, seed, submit
from tests.factories import person

pytestmark = pytest.mark.postgres


def _big_account(driver, account_id: str, followers: int) -> None:
    driver.account(account_id, followers=followers, holder=BIG_HOLDER)


BIG_HOLDER = person(name="钱大号")


def _lowered_vertical(driver, admin_headers, sql):
    """The issue's reproduction: an enterprise whose bound accounts reach 1,000,000 followers (vertical 3),
    three vertical applications, the first two withdrawn, then a sync takes the big account to 0 followers:
    vertical total 2, one held."""
    shops = seed(driver, subjects=1, shops_per_subject=25)
    subject_id = shops[0][0]
    big_shop, big_account = shops[0][1], shops[0][2]
    _big_account(driver, big_account, 1_000_000)
    assert driver.client.get(f"{API}/subjects/{subject_id}/quotas", headers=admin_headers).json()["vertical"] == {
        "total": 3,
        "used": 0,
    }
    held = []
    for _, shop_id, _ in shops[1:4]:
        r = driver.submit(shop_id, account_type="vertical")
        assert r.status_code == 201, r.text
        held.append(r.json()["application_id"])
    for app_id in held[:2]:
        r = driver.client.post(f"{API}/upgrade-applications/{app_id}/withdraw", headers=admin_headers)
        assert r.status_code == 200, r.text
    _big_account(driver, big_account, 0)
    quota = driver.client.get(f"{API}/subjects/{subject_id}/quotas", headers=admin_headers).json()
    assert quota["vertical"] == {"total": 2, "used": 1}
    return subject_id, [s for _, s, _ in shops[4:24]], big_shop


def test_r33_a_lowered_quota_takes_one_more_explicit_type_under_20_concurrent_submits(
    live_server, driver, admin_headers, sql
):
    subject_id, racers, _ = _lowered_vertical(driver, admin_headers, sql)
    responses = race(live_server, [submit(shop, admin_headers, account_type="vertical") for shop in racers])
    outcome = assert_clean(responses, ok={201}, refused={"TYPE_QUOTA_EXHAUSTED"})
    assert outcome == {201: 1, "TYPE_QUOTA_EXHAUSTED": 19}, outcome
    quota = driver.client.get(f"{API}/subjects/{subject_id}/quotas", headers=admin_headers).json()
    assert quota["vertical"] == {"total": 2, "used": 2}
    pool = quotas.quota_pool(subject_id, "vertical")
    assert scalar(sql, "SELECT held FROM pools WHERE key = :p", p=pool) == 2
    assert scalar(sql, "SELECT count(*) FROM slots WHERE pool = :p", p=pool) == 2


def test_r33_a_lowered_quota_and_the_fallback_order_under_20_concurrent_submits(
    live_server, driver, admin_headers, sql
):
    subject_id, racers, _ = _lowered_vertical(driver, admin_headers, sql)
    responses = race(live_server, [submit(shop, admin_headers) for shop in racers])
    outcome = assert_clean(responses, ok={201}, refused={"QUOTA_EXHAUSTED", "NOT_ELIGIBLE"})
    accepted = Counter(r.json()["account_type"] for r in responses if r.status_code == 201)
    assert accepted == {"main": 1, "vertical": 1, "dedicated": 3}, accepted
    assert outcome[201] == 5
    for r in responses:
        if r.status_code != 201:
            assert refusal_codes(r) == {"QUOTA_EXHAUSTED"}, r.text
    held = dict(rows(sql, "SELECT key, held FROM pools WHERE key LIKE :p", p=f"quota:{subject_id}:%"))
    counted = dict(
        rows(sql, "SELECT pool, count(*) FROM slots WHERE pool LIKE :p GROUP BY pool", p=f"quota:{subject_id}:%")
    )
    assert (
        held
        == counted
        == {
            quotas.quota_pool(subject_id, "main"): 1,
            quotas.quota_pool(subject_id, "vertical"): 2,
            quotas.quota_pool(subject_id, "dedicated"): 3,
        }
    )


@pytest.fixture
def lower_operator_capacity(tmp_path, monkeypatch):
    """Lowers the policy's operator limit for the requests that follow (the running server reads the policy)."""

    def lower(capacity: int) -> None:
        text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").replace("capacity = 5", f"capacity = {capacity}")
        assert tomllib.loads(text)["operators"]["capacity"] == capacity
        path = Path(tmp_path / "policy.toml")
        path.write_text(text, encoding="utf-8")
        monkeypatch.setenv("GUANHAO_POLICY", str(path))
        get_settings.cache_clear()
        get_policy.cache_clear()
        assert get_policy().operators.capacity == capacity

    yield lower
    monkeypatch.delenv("GUANHAO_POLICY")
    get_settings.cache_clear()
    get_policy.cache_clear()


def test_r41_a_lowered_operator_limit_is_never_overbooked_under_20_concurrent_submits(
    live_server, driver, admin_headers, sql, lower_operator_capacity
):
    shops = seed(driver, subjects=25, shops_per_subject=1)
    operator = person(name="孙运营")
    pool = quotas.operator_pool(pii.Person(**operator).id_hash)
    named = []
    for _, shop_id, _ in shops[:5]:
        r = driver.submit(shop_id, operator=operator)
        assert r.status_code == 201, r.text
        named.append(r.json()["application_id"])
    for app_id in named[:3]:  # the person keeps the places taken last
        assert driver.client.post(f"{API}/upgrade-applications/{app_id}/withdraw", headers=admin_headers).is_success
    assert scalar(sql, "SELECT held FROM pools WHERE key = :p", p=pool) == 2
    lower_operator_capacity(3)

    racers = [shop for _, shop, _ in shops[5:25]]
    responses = race(live_server, [submit(shop, admin_headers, operator=operator) for shop in racers])
    outcome = assert_clean(responses, ok={201}, refused={"OPERATOR_LIMIT_REACHED"})
    assert outcome == {201: 1, "OPERATOR_LIMIT_REACHED": 19}, outcome
    assert scalar(sql, "SELECT held FROM pools WHERE key = :p", p=pool) == 3
    assert scalar(sql, "SELECT count(*) FROM slots WHERE pool = :p", p=pool) == 3

    lower_operator_capacity(2)  # below what is held: nobody more, whatever the concurrency
    left = [shop for shop, r in zip(racers, responses, strict=True) if r.status_code != 201]
    responses = race(live_server, [submit(shop, admin_headers, operator=operator) for shop in left])
    assert assert_clean(responses, ok={201}, refused={"OPERATOR_LIMIT_REACHED"}) == {"OPERATOR_LIMIT_REACHED": 19}
    assert scalar(sql, "SELECT held FROM pools WHERE key = :p", p=pool) == 3
