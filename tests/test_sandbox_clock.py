"""The sandbox clock (API.md): set within 2000–2100 (else 422, nothing changed), unfrozen by DELETE, every change
audited (R-60) with the times before and after; in the OpenAPI document."""

import datetime as dt

import pytest

from guanhao import clock
from guanhao.db import session_scope
from guanhao.sandbox import service

CLOCK = "/api/v1/sandbox/clock"


@pytest.mark.parametrize(
    "when", ["1999-12-31T23:59:59Z", "2101-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]
)
def test_times_outside_2000_to_2100_are_422_and_change_nothing(api, when):
    api.set_clock("2026-03-10T10:00:00+08:00")
    r = api.client.post(CLOCK, json={"now": when}, headers=api.admin)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "VALIDATION_ERROR"
    assert api.now() == dt.datetime(2026, 3, 10, 2, tzinfo=dt.UTC)


@pytest.mark.parametrize("when", ["2000-01-01T00:00:00Z", "2100-12-31T23:59:59Z", "2100-06-01T00:00:00+08:00"])
def test_the_edges_of_the_range_are_accepted(api, when):
    r = api.client.post(CLOCK, json={"now": when}, headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["frozen"] is True


def test_delete_unfreezes_the_clock_and_both_changes_are_audited(api):
    api.set_clock("2030-01-01T00:00:00Z")
    assert api.client.get(CLOCK, headers=api.admin).json() == {"now": "2030-01-01T00:00:00Z", "frozen": True}
    r = api.client.delete(CLOCK, headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["frozen"] is False
    now = api.client.get(CLOCK, headers=api.admin).json()
    assert now["frozen"] is False
    assert abs(dt.datetime.fromisoformat(now["now"]) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    # unfreezing a running clock changes nothing and writes nothing
    assert api.client.delete(CLOCK, headers=api.admin).status_code == 200

    rows = api.audit("sandbox_clock")
    assert [(r["action"], r["from"], r["to"]) for r in rows] == [
        ("sandbox_clock.set", "real", "frozen"),
        ("sandbox_clock.unfrozen", "frozen", "real"),
    ]
    assert rows[0]["detail"] == {"from": None, "to": "2030-01-01T00:00:00+00:00"}
    assert rows[1]["detail"] == {"from": "2030-01-01T00:00:00+00:00", "to": None}
    assert all(r["actor"] == "admin:env" for r in rows)


def test_clock_paths_are_staff_only(api):
    subject_id = api.subject()
    merchant = api.merchant(subject_id)
    assert api.client.delete(CLOCK, headers=merchant).status_code == 403
    assert api.client.post(CLOCK, json={"now": "2030-01-01T00:00:00Z"}, headers=merchant).status_code == 403


def test_delete_is_in_the_openapi_document(client):
    ops = client.get("/api/v1/openapi.json").json()["paths"][CLOCK]
    assert {"get", "post", "delete"} <= set(ops)


def test_service_refuses_out_of_range_and_naive_times(database):
    from guanhao import errors

    with session_scope() as session:
        for bad in (dt.datetime(1999, 1, 1, tzinfo=dt.UTC), dt.datetime(2030, 1, 1)):
            with pytest.raises(errors.ValidationFailed):
                service.set_clock(session, bad, actor="admin:test")
        assert clock.sandbox_now(session) is None
        service.set_clock(session, dt.datetime(2030, 1, 1, tzinfo=dt.UTC), actor="admin:test")
        assert clock.sandbox_now(session) == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        service.unfreeze(session, actor="admin:test")
        assert clock.sandbox_now(session) is None
