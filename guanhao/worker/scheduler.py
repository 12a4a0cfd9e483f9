"""The duty table's rules: which worker runs which duty when (issue 7, item 6).

Times here are real time (`clock.real_now`), never the sandbox clock: a frozen service clock must not stop
the schedule or keep a dead worker's lease alive. The duties themselves read the service clock.

An exclusive duty is claimed in one short transaction — its row locked `FOR UPDATE SKIP LOCKED` on PostgreSQL,
the whole transaction `BEGIN IMMEDIATE` on SQLite — checked due and not leased, and leased to the claimer.
Two claimers never both get it: the second either skips the locked row or finds the first one's lease.
"""

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from guanhao.db import Session, is_postgres
from guanhao.worker.models import DutyRow


@dataclass(frozen=True)
class Claim:
    """`claimed`: the caller holds the duty until `until`. Otherwise `until` is when to look again."""

    claimed: bool
    until: dt.datetime


def ensure(session: Session, names: list[str], *, now: dt.datetime) -> None:
    """A row for each duty, due now, unless it has one already (several workers may start at once)."""
    if not names:
        return
    rows = [{"name": n, "next_run_at": now, "runs": 0, "failures": 0} for n in names]
    insert = pg_insert if is_postgres(session) else sqlite_insert
    session.execute(insert(DutyRow).values(rows).on_conflict_do_nothing(index_elements=["name"]))


def claim(session: Session, name: str, owner: str, *, now: dt.datetime, lease: dt.timedelta) -> Claim:
    """Issue 7 (6): the exclusive duty `name` for `owner` if it is due and nobody else holds it."""
    row = session.scalars(
        select(DutyRow)
        .where(DutyRow.name == name)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:  # another worker is claiming it right now (or it has no row yet)
        return Claim(False, now + dt.timedelta(seconds=1))
    if row.next_run_at > now:
        return Claim(False, row.next_run_at)
    if row.lease_until is not None and row.lease_until > now and row.lease_owner != owner:
        return Claim(False, row.lease_until)
    row.lease_owner = owner
    row.lease_until = now + lease
    row.last_started_at = now
    session.flush()
    return Claim(True, row.lease_until)


def finish(
    session: Session,
    name: str,
    owner: str,
    *,
    now: dt.datetime,
    interval: dt.timedelta,
    outcome: str,
    processed: int | None,
    error: str | None = None,
    exclusive: bool = True,
    started_at: dt.datetime | None = None,
) -> bool:
    """Records a run of `name` and when it is next due; an exclusive duty's lease is let go. False when `owner`
    no longer held the lease (it ran past it and another worker may have taken the duty): the run is still
    recorded, the other worker's lease is left alone."""
    row = session.get(DutyRow, name, with_for_update=True, populate_existing=True)
    if row is None:
        ensure(session, [name], now=now)
        row = session.get_one(DutyRow, name, with_for_update=True, populate_existing=True)
    held = not exclusive or row.lease_owner == owner
    if started_at is not None:
        row.last_started_at = started_at
    row.last_finished_at = now
    row.last_worker = owner
    row.last_outcome = outcome
    row.last_processed = processed
    row.last_error = error[:500] if error else None
    row.runs += 1
    row.failures = 0 if outcome == "ok" else row.failures + 1
    if exclusive and held:
        row.lease_owner = None
        row.lease_until = None
        row.next_run_at = now + interval
    elif not exclusive:
        row.next_run_at = now + interval
    session.flush()
    return held


def rows(session: Session) -> dict[str, DutyRow]:
    return {r.name: r for r in session.scalars(select(DutyRow))}


def note(session: Session, name: str, actor: str, *, now: dt.datetime, processed: int) -> None:
    """A run on demand (API, CLI) is recorded as the duty's last run; its schedule and lease stay as they are."""
    ensure(session, [name], now=now)
    row = session.get_one(DutyRow, name, with_for_update=True, populate_existing=True)
    row.last_started_at = row.last_finished_at = now
    row.last_worker = actor
    row.last_outcome = "ok"
    row.last_processed = processed
    row.last_error = None
    row.runs += 1
    row.failures = 0
    session.flush()
