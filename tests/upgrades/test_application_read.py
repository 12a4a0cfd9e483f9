"""The one-statement application read (`GET /upgrade-applications/{id}`, guanhao.upgrades.reads) answers byte for
byte what the service-built route answered before it (issue 9): the same fields, steps, reasons in each language,
masking, R-62 visibility after a shop moves subjects, and the same problem+json refusals. The route it replaced is
kept here as the reference; so is the official-account route's, for a shop whose application in progress was
submitted by the subject it moved away from."""

import datetime as dt

import pytest
import sqlalchemy as sa

from guanhao.db import session_scope
from guanhao.http import Authenticated
from guanhao.i18n import _l
from guanhao.subjects import service as subjects
from guanhao.subjects.models import Shop
from guanhao.upgrades import service, visibility
from guanhao.upgrades.schemas import ApplicationOut, OfficialAccountOut, application_out, official_account_out
from tests.upgrades.helpers import same_answer

T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
LEGACY_APP = "/legacy/upgrade-applications/{application_id}"
LEGACY_OFFICIAL = "/legacy/shops/{shop_id}/official-account"


def _scope(call) -> str | None:
    p = call.principal
    return visibility.scope_of(is_staff=p.is_admin, subject_id=p.subject_id)


def _legacy_application(application_id: str, call: Authenticated):
    """The route as it was: authentication, then the ORM read and R-62's check in a unit of work."""
    with call.unit() as (session, now):
        app = service.get_application(session, application_id)
        if not visibility.readable(app, _scope(call)):
            raise _not_found(application_id)
        return application_out(app, call.lang, now=now)


def _not_found(application_id: str):
    from guanhao import errors

    return errors.NotFound(_l("Application {application_id} not found", application_id=application_id))


def _legacy_official(shop_id: str, call: Authenticated):
    with call.unit() as (session, now):
        shop = subjects.get_shop(session, shop_id)
        call.require_subject(shop.subject_id, not_found=_l("Shop {shop_id} not found", shop_id=shop_id))
        return official_account_out(service.official_view(session, shop, call.policy, now=now, scope=_scope(call)))


@pytest.fixture
def legacy(app):
    app.add_api_route(LEGACY_APP, _legacy_application, methods=["GET"], response_model=ApplicationOut)
    app.add_api_route(LEGACY_OFFICIAL, _legacy_official, methods=["GET"], response_model=OfficialAccountOut)
    return app


def same_app(api, application_id: str, headers: dict) -> dict | None:
    return same_answer(
        api,
        f"/api/v1/upgrade-applications/{application_id}",
        LEGACY_APP.format(application_id=application_id),
        headers,
    )


def test_the_fast_application_read_answers_what_the_service_built_in_every_state(legacy, api):
    api.set_clock(T0)
    subject_id = api.subject()
    merchant = api.merchant(subject_id)
    ids = []
    for _ in range(4):
        _, shop_id, _ = api.ready_shop(subject_id)
        r = api.submit(shop_id, merchant)
        assert r.status_code == 201, r.text
        ids.append(r.json()["application_id"])
    waiting, accepted, declined, withdrawn = ids
    assert api.accept(accepted).status_code == 200
    assert api.decline(declined).status_code == 200
    r = api.client.post(f"/api/v1/upgrade-applications/{withdrawn}/withdraw", headers=merchant)
    assert r.status_code == 200, r.text
    _, auto_shop, _ = api.ready_shop(subject_id)
    assert api.wave(1)["upgraded"] == 1
    autos = api.client.get(f"/api/v1/subjects/{subject_id}/upgrade-applications", headers=api.admin).json()
    ids += [a["application_id"] for a in autos["items"] if a["origin"] == "auto"]

    statuses = set()
    for when in (T0, T0 + dt.timedelta(days=45)):  # then `waiting` has lapsed: expired as a fact of time
        api.set_clock(when)
        for application_id in ids:
            for headers in (api.admin, merchant):
                for lang in ("zh-CN", "en"):
                    view = same_app(api, application_id, headers | {"Accept-Language": lang})
                    assert view is not None
                    statuses.add(view["status"])
    assert {"submitted", "expired", "withdrawn", "rejected", "succeeded"} <= statuses


def test_the_fast_application_read_refuses_as_the_service_did(legacy, api):
    """R-62: no token / an unknown one 401; another subject's application and a missing one the same 404."""
    subject_id, shop_id, _ = api.ready_shop()
    application_id = api.submit(shop_id, api.merchant(subject_id)).json()["application_id"]
    other = api.merchant(api.subject())
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}, other):
        for lang in ("zh-CN", "en"):
            same_app(api, application_id, headers | {"Accept-Language": lang})
    same_app(api, "app_no_such_one", api.merchant(subject_id))
    same_app(api, "app_no_such_one", api.admin)
    assert api.client.get("/api/v1/upgrade-applications/x%20y", headers=api.admin).status_code == 422


def test_r62_after_a_move_both_reads_answer_as_the_service_did(legacy, api):
    """A shop is with subject B while A's application for it is in progress: A still reads it by id, B does not
    (404), and B's official-account page does not show it as the shop's application; staff see it. (The sync
    refuses to move a shop with an application in progress, so the row is moved here directly; after a move by
    the sync, A's ended application reads the same way: `test_r62_a_moved_shops_ended_application`.)"""
    a, shop_id, _ = api.ready_shop()
    b = api.subject()
    a_key, b_key = api.merchant(a), api.merchant(b)
    r = api.submit(shop_id, a_key)
    assert r.status_code == 201, r.text
    application_id = r.json()["application_id"]
    with session_scope(write=True) as session:
        session.execute(sa.update(Shop).where(Shop.id == shop_id).values(subject_id=b))

    assert same_app(api, application_id, a_key)["subject_id"] == a
    assert same_app(api, application_id, b_key) is None
    assert same_app(api, application_id, api.admin) is not None
    official = (f"/api/v1/shops/{shop_id}/official-account", LEGACY_OFFICIAL.format(shop_id=shop_id))
    assert same_answer(api, *official, b_key)["active_application_id"] is None
    assert same_answer(api, *official, api.admin)["active_application_id"] == application_id
    assert same_answer(api, *official, a_key) is None  # the shop is no longer A's


def test_r62_a_moved_shops_ended_application(legacy, api):
    a, shop_id, _ = api.ready_shop()
    b = api.subject()
    a_key, b_key = api.merchant(a), api.merchant(b)
    application_id = api.submit(shop_id, a_key).json()["application_id"]
    assert api.decline(application_id).status_code == 200
    api.shop(b, shop_id)  # the sync moves the shop
    assert same_app(api, application_id, a_key)["subject_id"] == a
    assert same_app(api, application_id, b_key) is None
    official = (f"/api/v1/shops/{shop_id}/official-account", LEGACY_OFFICIAL.format(shop_id=shop_id))
    assert same_answer(api, *official, b_key)["upgrade_status"] == "not_upgraded"


def test_a_revoked_key_is_refused_by_the_next_application_read(api):
    subject_id, shop_id, _ = api.ready_shop()
    r = api.client.post(
        "/api/v1/admin/api-keys", json={"role": "merchant", "subject_id": subject_id}, headers=api.admin
    )
    key_id, headers = r.json()["key_id"], {"Authorization": f"Bearer {r.json()['token']}"}
    application_id = api.submit(shop_id, headers).json()["application_id"]
    assert api.client.get(f"/api/v1/upgrade-applications/{application_id}", headers=headers).status_code == 200
    assert api.client.post(f"/api/v1/admin/api-keys/{key_id}/revoke", headers=api.admin).status_code == 200
    r = api.client.get(f"/api/v1/upgrade-applications/{application_id}", headers=headers)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
