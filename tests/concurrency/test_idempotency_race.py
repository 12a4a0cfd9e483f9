"""Idempotency-Key under concurrency: one key sent at once over real HTTP against a live server."""

import concurrent.futures

import httpx

from tests.upgrades.helpers import applications


def test_concurrent_requests_with_one_key_have_one_effect(api, live_server):
    subject_id, shop_id, _ = api.ready_shop()
    merchant = api.merchant(subject_id)

    def post(_):
        with httpx.Client(base_url=live_server, timeout=30) as c:
            return c.post(
                f"/api/v1/shops/{shop_id}/upgrade-applications",
                json={"agree_terms": True},
                headers=merchant | {"Idempotency-Key": "race"},
            )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, range(8)))
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) <= {201, 409}, [r.text for r in results]
    created = [r for r in results if r.status_code == 201]
    assert created
    assert len({r.json()["application_id"] for r in created}) == 1
    for r in results:
        if r.status_code == 409:
            assert r.json()["code"] == "IDEMPOTENCY_KEY_IN_FLIGHT"
    assert len(applications(api, shop_id)) == 1
