"""The upgrade workflow raced over real HTTP against a live server (R-19, R-20, R-33, R-41)."""

import pytest

from tests import factories
from tests.factories import Api
from tests.upgrades.helpers import applications, quotas, submitted


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
