"""Audit rows and outbox events are written at the real commit only (SPEC R-20, R-61): a released
savepoint does not write them early (and so takes no commit-order lock), a rolled-back savepoint
drops exactly what was queued inside it, and a rolled-back transaction drops everything."""

import datetime as dt

from sqlalchemy import func, select

from guanhao.audit import service as audit
from guanhao.audit.models import AuditEntry
from guanhao.db import session_scope
from guanhao.events import service as events
from guanhao.events.models import OutboxEvent

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
# Any listed event type (emit refuses others); nothing else writes events in these tests.
PROBE_EVENT = "login_phone.changed"


def _record(session, target: str) -> None:
    audit.record(session, at=NOW, actor="test", action="probe", target_kind="probe", target_id=target)
    events.emit(session, PROBE_EVENT, at=NOW, shop_id=None, subject_id=None, data={"target": target})


def _written(session) -> tuple[list[str], list[str]]:
    trail = list(
        session.scalars(select(AuditEntry.target_id).where(AuditEntry.action == "probe").order_by(AuditEntry.seq))
    )
    outbox = [
        e.data["target"]
        for e in session.scalars(select(OutboxEvent).where(OutboxEvent.type == PROBE_EVENT).order_by(OutboxEvent.seq))
    ]
    return trail, outbox


def test_savepoints_neither_write_early_nor_lose_rows(engine):
    with session_scope(engine) as session:
        _record(session, "before")
        with session.begin_nested():
            _record(session, "kept")
        assert session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "probe")) == 0
        try:
            with session.begin_nested():
                _record(session, "dropped")
                raise RuntimeError("this savepoint rolls back")
        except RuntimeError:
            pass
        _record(session, "after")
    with session_scope(engine) as session:
        assert _written(session) == (["before", "kept", "after"], ["before", "kept", "after"])
        assert audit.verify(session).ok


def test_a_rolled_back_transaction_writes_nothing(engine):
    try:
        with session_scope(engine) as session:
            _record(session, "never")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with session_scope(engine) as session:
        _record(session, "next")
    with session_scope(engine) as session:
        assert _written(session) == (["next"], ["next"])
