"""The outbox at the service level (guanhao.events.service, SPEC R-61): `emit` queues an event that is
written at the commit, numbered in commit order (not in the order events were emitted), and a rolled-back
savepoint takes its own events with it."""

import pytest

from guanhao.db import session_scope
from guanhao.events import service as events


def emit(session, name: str, now, shop_id: str | None = "shop-1") -> str:
    return events.emit(session, "upgrade.submitted", at=now, shop_id=shop_id, subject_id="subj-1", data={"name": name})


def written(**filters) -> list[str]:
    with session_scope() as session:
        return [e.data["name"] for e in events.events_after(session, after_seq=None, limit=100, **filters)]


def test_r61_an_event_is_written_at_the_commit_and_not_before(now):
    with session_scope() as session:
        event_id = emit(session, "first", now)
        session.flush()
        assert events.events_after(session, after_seq=None, limit=10) == []
    with session_scope() as session:
        [event] = events.events_after(session, after_seq=None, limit=10)
    assert (event.event_id, event.type, event.at, event.shop_id, event.data) == (
        event_id,
        "upgrade.submitted",
        now,
        "shop-1",
        {"name": "first"},
    )


def test_r61_events_are_numbered_in_commit_order_not_emit_order(now):
    """A reader paging by seq never skips an event that commits late: the late one gets the later number."""
    with session_scope() as slow:
        emit(slow, "emitted first, committed last", now)
        with session_scope() as quick:
            emit(quick, "emitted last, committed first", now)
    assert written() == ["emitted last, committed first", "emitted first, committed last"]


def test_r61_a_rolled_back_savepoint_drops_its_own_events_only(now):
    with session_scope() as session:
        emit(session, "before", now)
        with session.begin_nested():
            emit(session, "released", now)
        with pytest.raises(RuntimeError), session.begin_nested():
            emit(session, "rolled back", now)
            raise RuntimeError("this part failed")
        emit(session, "after", now)
    assert written() == ["before", "released", "after"]


def test_r61_a_rolled_back_unit_of_work_emits_nothing(now):
    with pytest.raises(RuntimeError), session_scope() as session:
        emit(session, "never", now)
        raise RuntimeError("the change failed")
    assert written() == []


def test_r61_readers_page_by_seq_and_filter_by_shop(now):
    with session_scope() as session:
        for n in range(5):
            emit(session, f"e{n}", now, shop_id=f"shop-{n % 2}")
        events.emit_many(session, [{"event_id": "evt_given", "type": "upgrade.submitted", "at": now, "shop_id": "shop-0",
                                    "subject_id": None, "data": {"name": "bulk"}}])  # fmt: skip
    assert written(shop_id="shop-0") == ["e0", "e2", "e4", "bulk"]
    with session_scope() as session:
        first = events.events_after(session, after_seq=None, limit=2)
        rest = events.events_after(session, after_seq=first[-1].seq, limit=10)
        assert [e.data["name"] for e in first + rest] == ["e0", "e1", "e2", "e3", "e4", "bulk"]
        assert rest[-1].event_id == "evt_given"
