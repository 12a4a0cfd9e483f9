"""What the rules read about one shop, loaded from the database for the manual path.

A wave loads the same facts for a whole chunk in a few set-based queries (guanhao.upgrades.waves);
both build them with `rules.facts` and ask the same rules.
"""

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, not_, or_, select

from guanhao import clock
from guanhao.db import Session, among
from guanhao.policy import Policy
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.upgrades import quotas, rules
from guanhao.upgrades.models import IN_PROGRESS, AccountType, Application, OfficialAccount, Slot, State


@dataclass(frozen=True)
class Context:
    shop: Shop
    subject: Subject
    account: Account | None
    facts: rules.Facts
    operator_hash: str | None


def lapsed(at: "dt.datetime | ColumnElement[dt.datetime]"):
    """SQL for R-15: an application still `submitted` whose holder confirmation deadline has passed — it is
    expired as a fact of time, whether or not the sweep has recorded it yet."""
    return and_(
        Application.status == State.SUBMITTED.value,
        Application.confirmation_expires_at.is_not(None),
        Application.confirmation_expires_at <= at,
    )


def bound_followers(session: Session, subject_id: str) -> int:
    """R-30: the followers of every account bound to the subject's shops, for the follower bonus."""
    stmt = (
        select(func.coalesce(func.sum(Account.followers), 0))
        .select_from(Shop)
        .join(Account, Shop.official_account_id == Account.id)
        .where(Shop.subject_id == subject_id)
    )
    return int(session.scalar(stmt) or 0)


def lapsed_holds(session: Session, pools: Iterable[str], *, now: dt.datetime) -> Counter[str]:
    """Places in `pools` still held by lapsed applications: not counted by any read (R-15)."""
    stmt = (
        select(Slot.pool, func.count())
        .join(Application, Application.id == Slot.application_id)
        .where(among(session, Slot.pool, pools), lapsed(now))
        .group_by(Slot.pool)
    )
    return Counter(dict(session.execute(stmt).all()))


def quota_used(
    session: Session, subject_id: str, *, now: dt.datetime, excluding_application: str | None = None
) -> dict[str, int]:
    """R-33: the slots of each type held now (reserved ones included), without lapsed applications'."""
    pools = {t.value: quotas.quota_pool(subject_id, t.value) for t in AccountType}
    stale = lapsed_holds(session, pools.values(), now=now)
    return {
        t: quotas.held(session, pool, excluding_application=excluding_application) - stale[pool]
        for t, pool in pools.items()
    }


def quota_totals(session: Session, subject: Subject, policy: Policy) -> dict[str, int]:
    """R-30, R-31: the subject's slots of each type, from the policy table and its bound accounts' followers."""
    return rules.quota_totals(
        policy,
        subject_type=subject.subject_type,
        cross_border=subject.cross_border,
        bound_followers=bound_followers(session, subject.id),
    )


def operator_used(session: Session, id_hash: str, *, now: dt.datetime, excluding_application: str | None) -> int:
    """R-41: the official accounts (and applications in progress) this person operates now."""
    pool = quotas.operator_pool(id_hash)
    held = quotas.held(session, pool, excluding_application=excluding_application)
    return held - lapsed_holds(session, [pool], now=now)[pool]


def gather(
    session: Session,
    shop: Shop,
    policy: Policy,
    *,
    now: dt.datetime,
    explicit_type: str | None,
    operator_hash: str | None = None,
    own: Application | None = None,
) -> Context:
    """The facts of `shop` as they stand, for every R-03 check. With `own`, the application's own reservations (its slot, its
    operator place, its in-progress state) are not counted against it (R-16)."""
    subject = session.get_one(Subject, shop.subject_id)
    account = session.get(Account, shop.official_account_id) if shop.official_account_id else None
    own_id = own.id if own is not None else None
    others = [Application.shop_id == shop.id, Application.status.in_(IN_PROGRESS), not_(lapsed(now))]
    if own_id is not None:
        others.append(Application.id != own_id)
    operator = rules.operator_id_hash(
        named=own.operator_id_hash if own is not None else operator_hash,
        holder=account.holder_id_hash if account is not None else None,
    )
    facts = rules.facts(
        policy,
        shop_type=shop.shop_type,
        shop_status=shop.status,
        subject=subject,
        account=account,
        bound_followers=bound_followers(session, subject.id),
        quota_used=quota_used(session, subject.id, now=now, excluding_application=own_id),
        operator_used=None
        if operator is None
        else operator_used(session, operator, now=now, excluding_application=own_id),
        other_in_progress=bool(session.scalar(select(func.count()).select_from(Application).where(*others))),
        already_upgraded=account is not None and session.get(OfficialAccount, account.id) is not None,
        explicit_type=explicit_type,
        today=clock.china_date(now),
    )
    return Context(shop=shop, subject=subject, account=account, facts=facts, operator_hash=operator)


def lapsed_among(
    session: Session, *, shop_ids: Iterable[str] = (), pools: Iterable[str] = (), now: dt.datetime
) -> list[Application]:
    """The lapsed applications of `shop_ids`, or holding a place in `pools`, locked: a write that meets one
    records its expiry first (R-15)."""
    shop_ids, pools = list(shop_ids), list(pools)
    where = []
    if shop_ids:
        where.append(among(session, Application.shop_id, shop_ids))
    if pools:
        where.append(Application.id.in_(select(Slot.application_id).where(among(session, Slot.pool, pools))))
    if not where:
        return []
    stmt = select(Application).where(lapsed(now), or_(*where)).order_by(Application.seq).with_for_update()
    return list(session.scalars(stmt))
