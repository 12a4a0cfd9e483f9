"""The daily posting counter (SPEC R-23) under real concurrency: 500 posts at once against a live server on
one account; the database's atomic upsert must accept exactly the limit and refuse the rest."""

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.concurrency.test_races import assert_clean, scalar

pytestmark = pytest.mark.postgres

API = "/api/v1"
REQUESTS = 500
CLIENTS = 50


def fire(base_url: str, path: str, headers: dict, *, n: int, clients: int) -> list[httpx.Response]:
    """n POSTs to one path from `clients` warmed-up clients, released together."""
    local = threading.local()
    opened: list[httpx.Client] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def warm(_):
        local.client = httpx.Client(base_url=base_url, timeout=30)
        local.client.get(f"{API}/health")
        with lock:
            opened.append(local.client)
        barrier.wait(timeout=30)

    def send(_):
        return local.client.post(path, headers=headers)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(warm, range(clients)))  # every thread holds one open client, all released at once
        try:
            return list(pool.map(send, range(n)))
        finally:
            for c in opened:
                c.close()


@pytest.mark.parametrize("upgraded, limit", [(False, 75), (True, 100)], ids=["before-upgrade", "after-upgrade"])
def test_r23_500_concurrent_posts_on_one_account_accept_exactly_the_limit(
    live_server, driver, admin_headers, sql, upgraded, limit
):
    """R-23: 500 concurrent POST /posts on one account → exactly `limit` 201, the rest 429
    DAILY_POST_LIMIT_REACHED; the SQL counter equals the limit."""
    _, shop_id, account_id = driver.ready_shop()
    if upgraded:
        assert driver.upgrade(shop_id)["status"] == "succeeded"

    responses = fire(live_server, f"{API}/accounts/{account_id}/posts", admin_headers, n=REQUESTS, clients=CLIENTS)

    outcome = assert_clean(responses, ok={201}, refused={"DAILY_POST_LIMIT_REACHED"})
    assert outcome == Counter({201: limit, "DAILY_POST_LIMIT_REACHED": REQUESTS - limit}), outcome
    assert sorted(r.json()["used"] for r in responses if r.status_code == 201) == list(range(1, limit + 1))
    assert scalar(sql, "SELECT used FROM posting_counters WHERE account_id = :a", a=account_id) == limit
    assert scalar(sql, "SELECT count(*) FROM posting_counters") == 1
    r = driver.client.get(f"{API}/accounts/{account_id}/posting-quota", headers=admin_headers)
    assert (r.json()["limit"], r.json()["used"], r.json()["remaining"]) == (limit, limit, 0)
