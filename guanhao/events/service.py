"""Outbox events. `emit` queues in the session; the rows are written just before commit.

Writing them last, under the commit-order lock (guanhao.db.Session), makes sequence numbers
follow commit order while holding the lock only for the commit itself.
"""

import datetime as dt
import uuid

from sqlalchemy import func, select

from guanhao.db import Session, bulk_insert
from guanhao.events import types
from guanhao.events.models import OutboxEvent

_QUEUE = "outbox"


def emit(
    session: Session, type_: str, *, at: dt.datetime, shop_id: str | None, subject_id: str | None, data: dict
) -> str:
    """R-61: an event of this unit of work, written at its commit (never if it rolls back), numbered in
    commit order."""
    types.check(type_)
    event_id = "evt_" + uuid.uuid4().hex
    session.queue(
        _QUEUE,
        [{"event_id": event_id, "type": type_, "shop_id": shop_id, "subject_id": subject_id, "at": at, "data": data}],
    )
    return event_id


@Session.writes_at_commit(_QUEUE)
def _write_outbox(session: Session, pending: list[dict]) -> None:
    """R-61: the queued events, under the commit-order lock (guanhao.db.Session)."""
    bulk_insert(session, OutboxEvent, pending)


def events_after(
    session: Session, *, after_seq: int | None, limit: int, shop_id: str | None = None
) -> list[OutboxEvent]:
    stmt = select(OutboxEvent).order_by(OutboxEvent.seq).limit(limit)
    if after_seq is not None:
        stmt = stmt.where(OutboxEvent.seq > after_seq)
    if shop_id is not None:
        stmt = stmt.where(OutboxEvent.shop_id == shop_id)
    return list(session.scalars(stmt))


def emit_many(session: Session, rows: list[dict]) -> None:
    """Bulk form of `emit` for waves (R-11, R-61): each row has type, at, shop_id, subject_id, data, and may bring its event_id."""
    for row in rows:
        types.check(row["type"])
    session.queue(
        _QUEUE, (row if "event_id" in row else {"event_id": "evt_" + uuid.uuid4().hex, **row} for row in rows)
    )


def for_subject(
    session: Session, subject_id: str, *, types: tuple[str, ...], before_seq: int | None, limit: int
) -> list[OutboxEvent]:
    """A subject's events of the given types, newest first (the merchant console's 站内信)."""
    stmt = (
        select(OutboxEvent)
        .where(OutboxEvent.subject_id == subject_id, OutboxEvent.type.in_(types))
        .order_by(OutboxEvent.seq.desc())
        .limit(limit)
    )
    if before_seq is not None:
        stmt = stmt.where(OutboxEvent.seq < before_seq)
    return list(session.scalars(stmt))


def count_for_subject(session: Session, subject_id: str, *, types: tuple[str, ...], after_seq: int) -> int:
    stmt = select(func.count()).where(
        OutboxEvent.subject_id == subject_id, OutboxEvent.type.in_(types), OutboxEvent.seq > after_seq
    )
    return int(session.scalar(stmt) or 0)
