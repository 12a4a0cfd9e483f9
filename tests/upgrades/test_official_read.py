"""The one-statement official-account read (guanhao.upgrades.reads) answers byte for byte what the service-built
route answered before it (issue 9): the same fields, values and masking, the same problem+json refusals, in
every state of the account. The route it replaced is kept here as the reference."""

import datetime as dt
import weakref

import pytest
import sqlalchemy as sa

from guanhao.http import Authenticated
from guanhao.i18n import _l
from guanhao.subjects import service as subjects
from guanhao.upgrades import service
from guanhao.upgrades.schemas import OfficialAccountOut, official_account_out
from tests import factories
from tests.upgrades.helpers import same_answer

T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
LEGACY = "/legacy/shops/{shop_id}/official-account"


def _legacy_official_account(shop_id: str, call: Authenticated):
    """The route as it was: authentication in its own session, then the ORM reads of `official_view`."""
    with call.unit() as (session, now):
        shop = subjects.get_shop(session, shop_id)
        call.require_subject(shop.subject_id, not_found=_l("Shop {shop_id} not found", shop_id=shop_id))
        return official_account_out(service.official_view(session, shop, call.policy, now=now))


@pytest.fixture
def legacy(app):
    app.add_api_route(LEGACY, _legacy_official_account, methods=["GET"], response_model=OfficialAccountOut)
    return app


def same(api, shop_id: str, headers: dict) -> dict | None:
    return same_answer(api, f"/api/v1/shops/{shop_id}/official-account", LEGACY.format(shop_id=shop_id), headers)


def test_the_fast_read_answers_what_the_service_built_in_every_state(legacy, api):
    api.set_clock(T0)
    subject_id = api.subject()
    merchant = api.merchant(subject_id)
    unbound = api.shop(subject_id)
    _, plain, _ = api.ready_shop(subject_id, account_fields={"nickname": "示例号 ✓", "followers": 12345})
    _, waiting, _ = api.ready_shop(subject_id)
    assert api.submit(waiting, merchant).status_code == 201
    _, auto, _ = api.ready_shop(subject_id)
    _, manual, _ = api.ready_shop(subject_id)
    assert api.wave(1)["upgraded"] == 1  # the first ready shop by id order; which one does not matter here
    api.upgrade(manual, headers=merchant)
    shops = [unbound, plain, waiting, auto, manual]

    states = set()
    for when in (T0, T0 + dt.timedelta(days=3), T0 + dt.timedelta(days=45)):  # in the windows, then past them
        api.set_clock(when)
        for shop_id in shops:
            for headers in (api.admin, merchant):
                view = same(api, shop_id, headers)
                assert view is not None
                states.add((view["upgrade_status"], view["can_cancel"], view["account"] is None))
    assert {s[0] for s in states} == {"not_upgraded", "in_progress", "upgraded"}
    assert any(s[1] for s in states) and any(s[2] for s in states)


def test_the_fast_read_refuses_as_the_service_did(legacy, api):
    """R-62: no token / an unknown one 401; another subject's shop and a missing one the same 404."""
    subject_id, shop_id, _ = api.ready_shop()
    other = api.merchant(api.subject())
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}, other):
        for lang in ("zh-CN", "en"):
            same(api, shop_id, headers | {"Accept-Language": lang})
    same(api, "no-such-shop", api.merchant(subject_id))
    same(api, "no-such-shop", api.admin)


def test_a_revoked_key_is_refused_by_the_next_read(api):
    subject_id, shop_id, _ = api.ready_shop()
    r = api.client.post(
        "/api/v1/admin/api-keys", json={"role": "merchant", "subject_id": subject_id}, headers=api.admin
    )
    key_id, headers = r.json()["key_id"], {"Authorization": f"Bearer {r.json()['token']}"}
    assert api.client.get(f"/api/v1/shops/{shop_id}/official-account", headers=headers).status_code == 200
    assert api.client.post(f"/api/v1/admin/api-keys/{key_id}/revoke", headers=api.admin).status_code == 200
    r = api.client.get(f"/api/v1/shops/{shop_id}/official-account", headers=headers)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "UNAUTHENTICATED"


def test_an_unreachable_database_is_503_problem_json(api, monkeypatch):
    from guanhao import reader

    def unreachable(*_args, **_kwargs):
        raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))

    _, shop_id, _ = api.ready_shop()
    monkeypatch.setattr(reader, "_one_sync", unreachable)
    monkeypatch.setattr(reader, "_pools", weakref.WeakKeyDictionary())  # no pool: the statement runs in a thread
    r = api.client.get(f"/api/v1/shops/{shop_id}/official-account", headers=api.admin)
    assert r.headers["content-type"] == "application/problem+json"
    assert r.status_code == 503, r.text


def test_masking_holds_on_the_fast_read(api):
    """R-50: the operator and the login phone are masked, never in clear."""
    api.set_clock(T0)
    holder = factories.person(name="欧阳娜娜")
    subject_id, shop_id, _ = api.ready_shop(holder=holder, account_fields={"login_phone": "13812345678"})
    assert api.wave(1)["upgraded"] == 1
    r = api.client.get(f"/api/v1/shops/{shop_id}/official-account", headers=api.merchant(subject_id))
    body = r.json()
    number, phone = holder["id_number"], holder["phone"]
    assert body["operator"] == {
        "name": "欧***",
        "id_number": number[:3] + "*" * 11 + number[-4:],
        "phone": phone[:3] + "****" + phone[-4:],
    }
    assert body["account"]["login_phone"] == "138****5678"
    for clear in (holder["id_number"], holder["phone"], "13812345678", "欧阳娜娜"):
        assert clear not in r.text
