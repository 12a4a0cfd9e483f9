"""Bounded pools of numbered slots held by the database (SPEC R-33, R-41).

A reservation is a row (pool, slot_no) under a unique constraint, with slot_no chosen in
1..capacity. Two transactions racing for the same number: the unique index lets one win; the
loser re-reads and takes the next free number, or finds none. No read-then-write can overbook.
"""

import datetime as dt

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from guanhao.db import Session
from guanhao.upgrades.models import AccountType, Slot


def quota_pool(subject_id: str, account_type: str) -> str:
    return f"quota:{subject_id}:{account_type}"


def operator_pool(id_hash: str) -> str:
    return f"operator:{id_hash}"


def reserve(
    session: Session, pool: str, capacity: int, *, application_id: str, account_id: str, now: dt.datetime
) -> int | None:
    for _ in range(capacity + 5):
        taken = set(session.scalars(select(Slot.slot_no).where(Slot.pool == pool)))
        free = next((n for n in range(1, capacity + 1) if n not in taken), None)
        if free is None:
            return None
        try:
            with session.begin_nested():
                session.add(
                    Slot(pool=pool, slot_no=free, application_id=application_id, account_id=account_id, created_at=now)
                )
                session.flush()
            return free
        except IntegrityError:
            continue
    return None


def release(session: Session, *, application_id: str, pool_prefix: str | None = None) -> int:
    stmt = delete(Slot).where(Slot.application_id == application_id)
    if pool_prefix is not None:
        stmt = stmt.where(Slot.pool.startswith(pool_prefix))
    return session.execute(stmt).rowcount


def used(session: Session, pool: str, *, excluding_application: str | None = None) -> int:
    stmt = select(func.count()).select_from(Slot).where(Slot.pool == pool)
    if excluding_application is not None:
        stmt = stmt.where(Slot.application_id != excluding_application)
    return session.scalar(stmt) or 0


def used_by_type(session: Session, subject_id: str, *, excluding_application: str | None = None) -> dict[str, int]:
    return {
        t.value: used(session, quota_pool(subject_id, t.value), excluding_application=excluding_application)
        for t in AccountType
    }
