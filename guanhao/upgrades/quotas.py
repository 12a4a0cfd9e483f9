"""Bounded pools held by the database (SPEC R-33, R-41): a subject's account-type slots and one
person's operator places.

Each pool is a counter row (`pools.held`) beside the slots that say who holds what. A place is
taken by one atomic upsert that adds one only while `held < capacity` — the capacity of the moment,
so a quota lowered by a later sync blocks new reservations until enough are released — and given
back by deleting the slot and subtracting in the same transaction. No read-then-write can overbook.

Lock order: an application's row before any pool; a transaction that touches several pools locks
their rows in key order first (`lock`), and takes no pool after that, so a manual application, an end
(withdraw, decline, expiry, cancel), an operator change and a wave chunk never wait on each other in
a circle.
"""

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from typing import cast

from sqlalchemy import Table, bindparam, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from guanhao.db import Session, among, bulk_insert, is_postgres
from guanhao.upgrades.models import AccountType, Pool, Slot


def quota_pool(subject_id: str, account_type: str) -> str:
    """R-30: a subject's slots of one account type."""
    return f"quota:{subject_id}:{account_type}"


def operator_pool(id_hash: str) -> str:
    """R-41: one person's operator places, by the keyed hash of their ID number."""
    return f"operator:{id_hash}"


def _insert(session: Session):
    return (postgresql if is_postgres(session) else sqlite).insert(Pool)


def lock(session: Session, pools: Iterable[str]) -> dict[str, int]:
    """Creates the pools that do not exist yet and locks them all, in key order; returns what each holds
    (R-33, R-41)."""
    keys = sorted(set(pools))
    if not keys:
        return {}
    if is_postgres(session):
        # One array parameter whatever the number of pools: a multi-row VALUES is compiled anew for every length
        # (a wave chunk's two thousand pools cost more to render than to write). It only creates what is missing;
        # the rows are locked below, all by one statement in key order. (Creating and locking in one
        # INSERT … ON CONFLICT DO UPDATE was faster still, but the soak found it deadlocking two submits.)
        session.execute(
            text(
                "INSERT INTO pools (key, held) SELECT k, 0 FROM unnest(CAST(:keys AS varchar[])) AS g(k) ORDER BY k"
                " ON CONFLICT (key) DO NOTHING"
            ),
            {"keys": keys},
        )
    else:
        session.execute(
            _insert(session).values(key=bindparam("k"), held=0).on_conflict_do_nothing(), [{"k": k} for k in keys]
        )
    stmt = select(Pool.key, Pool.held).where(among(session, Pool.key, keys)).order_by(Pool.key).with_for_update()
    return dict(session.execute(stmt).all())


def counts(session: Session, pools: Iterable[str]) -> dict[str, int]:
    """What each of `pools` holds now (pools nobody ever took a place in are absent: 0)."""
    return dict(session.execute(select(Pool.key, Pool.held).where(among(session, Pool.key, list(pools)))).all())


def reserve(
    session: Session, pool: str, capacity: int, *, application_id: str, account_id: str, now: dt.datetime
) -> bool:
    """R-33, R-41: one more place in `pool` if fewer than `capacity` are held now; False when full."""
    if capacity <= 0:
        return False
    stmt = (
        _insert(session)
        .values(key=pool, held=1)
        .on_conflict_do_update(index_elements=[Pool.key], set_={"held": Pool.held + 1}, where=Pool.held < capacity)
        .returning(Pool.held)
    )
    if session.execute(stmt).scalar() is None:
        return False
    session.add(Slot(pool=pool, application_id=application_id, account_id=account_id, created_at=now))
    return True


def reserve_many(session: Session, places: list[dict], *, now: dt.datetime) -> None:
    """R-11, R-33, R-41: writes places a caller planned under `lock` (a wave chunk): `{"pool", "application_id",
    "account_id"}` each. The counters move by what each pool gained, in one statement."""
    if not places:
        return
    bulk_insert(session, Slot, [{**p, "created_at": now} for p in places])
    gained = sorted(Counter(p["pool"] for p in places).items())
    if is_postgres(session):  # one statement for the whole chunk
        session.execute(
            text(
                "UPDATE pools SET held = pools.held + g.n"
                " FROM unnest(CAST(:keys AS varchar[]), CAST(:ns AS integer[])) AS g(k, n) WHERE pools.key = g.k"
            ),
            {"keys": [k for k, _ in gained], "ns": [n for _, n in gained]},
        )
        return
    pools = cast(Table, Pool.__table__)
    session.execute(
        update(pools).where(pools.c.key == bindparam("k")).values(held=pools.c.held + bindparam("n")),
        [{"k": k, "n": n} for k, n in gained],
    )


def release(session: Session, *, application_id: str, pool_prefix: str | None = None) -> int:
    """R-33, R-41: gives back what an application holds (or only its places in pools starting with
    `pool_prefix`)."""
    stmt = delete(Slot).where(Slot.application_id == application_id)
    if pool_prefix is not None:
        stmt = stmt.where(Slot.pool.startswith(pool_prefix))
    freed = Counter(session.execute(stmt.returning(Slot.pool)).scalars().all())
    for pool, n in sorted(freed.items()):
        session.execute(update(Pool).where(Pool.key == pool).values(held=Pool.held - n))
    return sum(freed.values())


def move(
    session: Session,
    *,
    application_id: str,
    account_id: str,
    from_pool: str,
    to_pool: str,
    capacity: int,
    now: dt.datetime,
) -> bool:
    """R-41: an account's operator place moves to another person; False (nothing changed) when they are full."""
    lock(session, [from_pool, to_pool])
    if not reserve(session, to_pool, capacity, application_id=application_id, account_id=account_id, now=now):
        return False
    release(session, application_id=application_id, pool_prefix=from_pool)
    return True


def held(session: Session, pool: str, *, excluding_application: str | None = None) -> int:
    """The places held in `pool` now; with `excluding_application`, not counting that application's own (R-16)."""
    count = session.scalar(select(Pool.held).where(Pool.key == pool)) or 0
    if excluding_application is not None:
        count -= (
            session.scalar(select(func.count()).where(Slot.pool == pool, Slot.application_id == excluding_application))
            or 0
        )
    return count


def held_by_type(session: Session, subject_id: str, *, excluding_application: str | None = None) -> dict[str, int]:
    """R-30, R-33: the slots of each type the subject holds now."""
    return {
        t.value: held(session, quota_pool(subject_id, t.value), excluding_application=excluding_application)
        for t in AccountType
    }


def pools_held_by(session: Session, application_ids: Iterable[str]) -> list[str]:
    """The pools in which any of `application_ids` holds a place."""
    ids = list(application_ids)
    if not ids:
        return []
    return list(session.scalars(select(Slot.pool).where(among(session, Slot.application_id, ids)).distinct()))


def holders(session: Session, pools: Iterable[str]) -> list[str]:
    """The applications holding a place in any of `pools`."""
    return list(session.scalars(select(Slot.application_id).where(Slot.pool.in_(list(pools))).distinct()))
