"""The audit trail: one `record` verb; rows are never changed afterwards."""

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from guanhao.audit.models import AuditEntry


def record(
    session: Session,
    *,
    at: dt.datetime,
    actor: str,
    action: str,
    target_kind: str,
    target_id: str,
    subject_id: str | None = None,
    shop_id: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: dict | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        at=at,
        actor=actor,
        action=action,
        target_kind=target_kind,
        target_id=target_id,
        subject_id=subject_id,
        shop_id=shop_id,
        from_state=from_state,
        to_state=to_state,
        detail=detail or {},
    )
    session.add(entry)
    return entry


def entries(session: Session, *, target_id: str | None, after_seq: int | None, limit: int) -> list[AuditEntry]:
    stmt = select(AuditEntry).order_by(AuditEntry.seq).limit(limit)
    if target_id is not None:
        stmt = stmt.where(AuditEntry.target_id == target_id)
    if after_seq is not None:
        stmt = stmt.where(AuditEntry.seq > after_seq)
    return list(session.scalars(stmt))


def record_many(session: Session, rows: list[dict]) -> None:
    """Bulk form of `record` for waves: the same columns, one statement."""
    from sqlalchemy import insert

    if rows:
        session.execute(insert(AuditEntry), [{"detail": {}, **row} for row in rows])
