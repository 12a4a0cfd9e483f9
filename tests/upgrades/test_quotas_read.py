"""The one-statement quotas read (`GET /subjects/{id}/quotas`, guanhao.upgrades.reads) answers byte for byte what
the service-built route answered before it (issue 9): totals with the follower bonus (R-30, R-31), slots held
(reservations included, lapsed applications' not: R-15, R-33), and the same problem+json refusals (R-62). The route
it replaced is kept here as the reference."""

import datetime as dt

import pytest

from guanhao.http import Authenticated
from guanhao.i18n import _l
from guanhao.subjects.models import Subject
from guanhao.upgrades import service
from guanhao.upgrades.schemas import QuotasOut
from tests.upgrades.helpers import same_answer

T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
LEGACY = "/legacy/subjects/{subject_id}/quotas"


def _legacy_quotas(subject_id: str, call: Authenticated):
    """The route as it was: authentication, then the ORM reads of `subject_quotas` in a unit of work."""
    with call.unit() as (session, now):
        from guanhao import errors

        not_found = _l("Subject {subject_id} not found", subject_id=subject_id)
        call.require_subject(subject_id, not_found=not_found)
        subject = session.get(Subject, subject_id)
        if subject is None:
            raise errors.NotFound(not_found)
        return service.subject_quotas(session, subject, call.policy, now=now)


@pytest.fixture
def legacy(app):
    app.add_api_route(LEGACY, _legacy_quotas, methods=["GET"], response_model=QuotasOut)
    return app


def same(api, subject_id: str, headers: dict) -> dict | None:
    return same_answer(api, f"/api/v1/subjects/{subject_id}/quotas", LEGACY.format(subject_id=subject_id), headers)


def test_the_fast_quotas_read_answers_what_the_service_built(legacy, api):
    api.set_clock(T0)
    subject_id = api.subject()
    merchant = api.merchant(subject_id)
    assert same(api, subject_id, merchant)["main"]["used"] == 0  # no shop, no pool yet
    _, held, _ = api.ready_shop(subject_id, account_fields={"followers": 2_000_000})
    _, lapsing, _ = api.ready_shop(subject_id)
    api.upgrade(held, headers=merchant)
    assert api.submit(lapsing, merchant).status_code == 201
    seen = []
    for when in (T0, T0 + dt.timedelta(days=45)):  # then the submitted one has lapsed: its slot is not counted
        api.set_clock(when)
        for headers in (api.admin, merchant):
            seen.append(same(api, subject_id, headers))
    assert seen[0] != seen[-1]


def test_the_fast_quotas_read_refuses_as_the_service_did(legacy, api):
    subject_id, _, _ = api.ready_shop()
    other = api.merchant(api.subject())
    for headers in ({}, {"Authorization": "Bearer nope"}, other):
        for lang in ("zh-CN", "en"):
            same(api, subject_id, headers | {"Accept-Language": lang})
    same(api, "no-such-subject", api.admin)
    same(api, "no-such-subject", api.merchant(subject_id))
    assert api.client.get("/api/v1/subjects/x%20y/quotas", headers=api.admin).status_code == 422
