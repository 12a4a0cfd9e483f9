"""The one-statement eligibility read (`GET /shops/{id}/eligibility`, guanhao.upgrades.reads) answers byte for byte
what the service-built route answered before it (issue 9): every R-03 check with its message and fix in the
caller's language, the resolved type (R-32, explicit or not), the quota and operator places held now (reservations
included, lapsed applications' not: R-15, R-33, R-41), and the same refusals (R-62, 401, 422). The route it replaced
is kept here as the reference."""

import datetime as dt
from typing import Annotated

import pytest
from fastapi import Query

from guanhao.http import Authenticated
from guanhao.upgrades import service
from guanhao.upgrades.api import _visible_shop
from guanhao.upgrades.schemas import AccountTypeName, EligibilityOut, check_out
from tests.factories import person
from tests.upgrades.helpers import same_answer

T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
LEGACY = "/legacy/shops/{shop_id}/eligibility"


def _legacy_eligibility(
    shop_id: str, call: Authenticated, account_type: Annotated[AccountTypeName | None, Query()] = None
):
    """The route as it was: authentication, then `service.eligibility`'s ORM reads in a unit of work."""
    with call.unit() as (session, now):
        shop = _visible_shop(session, call, shop_id)
        checks, resolved = service.eligibility(session, shop, call.policy, now=now, account_type=account_type)
        eligible = all(c.passed for c in checks)
        return {
            "eligible": eligible,
            "resolved_account_type": resolved if eligible else None,
            "checks": [check_out(c, call.lang) for c in checks],
        }


@pytest.fixture
def legacy(app):
    app.add_api_route(LEGACY, _legacy_eligibility, methods=["GET"], response_model=EligibilityOut)
    return app


def same(api, shop_id: str, headers: dict, query: str = "") -> dict | None:
    return same_answer(
        api, f"/api/v1/shops/{shop_id}/eligibility{query}", LEGACY.format(shop_id=shop_id) + query, headers
    )


def failed(body: dict) -> list[str]:
    return [c["code"] for c in body["checks"] if not c["passed"]]


def test_the_fast_eligibility_answers_what_the_service_built_through_an_upgrade_and_a_lapse(legacy, api):
    api.set_clock(T0)
    subject_id = api.subject(subject_type="individual_business")
    merchant = api.merchant(subject_id)
    holder = person(7)
    shops = [api.ready_shop(subject_id, holder=holder)[1] for _ in range(3)]
    for headers in (api.admin, merchant, merchant | {"Accept-Language": "en"}):
        for query in ("", "?account_type=main", "?account_type=dedicated", "?account_type=vertical&x=1"):
            assert same(api, shops[0], headers, query) is not None
    api.upgrade(shops[0], headers=merchant)  # the main slot taken, one operator place of the holder's
    assert api.submit(shops[1], merchant).status_code == 201  # in progress: its shop is refused, its slot held
    seen = []
    for when in (T0, T0 + dt.timedelta(days=45)):  # then the submitted one has lapsed: its places are free again
        api.set_clock(when)
        for shop_id in shops:
            for query in ("", "?account_type=main"):
                seen.append(same(api, shop_id, merchant, query))
    assert "APPLICATION_IN_PROGRESS" in failed(seen[2]) and "APPLICATION_IN_PROGRESS" not in failed(seen[8])
    assert "ALREADY_UPGRADED" in failed(seen[0])


def test_the_fast_eligibility_reads_the_operator_limit_and_the_quota_as_held_now(legacy, api, policy):
    api.set_clock(T0)
    holder = person(8)
    capacity = policy.operators.capacity
    subjects = [api.subject() for _ in range(capacity + 1)]
    shops = [api.ready_shop(s, holder=holder)[1] for s in subjects]
    for shop_id in shops[:capacity]:
        api.upgrade(shop_id)
    body = same(api, shops[capacity], api.admin)
    assert "OPERATOR_LIMIT_REACHED" in failed(body)
    bare = api.shop(subjects[0], shop_type="personal")  # no bound account, a personal shop
    assert same(api, bare, api.admin)["eligible"] is False


def test_the_fast_eligibility_refuses_as_the_service_did(legacy, api):
    subject_id, shop_id, _ = api.ready_shop()
    other = api.merchant(api.subject())
    for headers in ({}, {"Authorization": "Bearer nope"}, other):
        for lang in ("zh-CN", "en"):
            same(api, shop_id, headers | {"Accept-Language": lang})
    same(api, "no-such-shop", api.admin)
    same(api, "no-such-shop", api.merchant(subject_id))
    for query in ("?account_type=", "?account_type=bogus", "?account_type=main&account_type=bogus"):
        same(api, shop_id, api.admin, query)
        assert api.client.get(f"/api/v1/shops/{shop_id}/eligibility{query}", headers=api.admin).status_code == 422
    assert api.client.get("/api/v1/shops/x%20y/eligibility", headers=api.admin).status_code == 422
