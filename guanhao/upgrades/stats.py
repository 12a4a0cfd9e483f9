"""The programme's figures for the staff dashboard (数据看板): what waits, what was upgraded each day and how,
the manual funnel, why applications were rejected and how many upgrades were cancelled.

Days are calendar days in Asia/Shanghai. Each figure is one grouped query over the applications (the trail
of a state is on its row: `reviewed_at` is the moment of success, since success happens in the review step or
at once for an auto upgrade; `finished_at` the moment of a rejection or a cancel), so the dashboard costs the
same at a million shops as at ten.
"""

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import case, func, not_, select

from guanhao import clock
from guanhao.db import Session, is_postgres
from guanhao.policy import Policy
from guanhao.subjects.models import Shop
from guanhao.upgrades import facts
from guanhao.upgrades.models import Application, OfficialAccount, Origin, Review, State

# An application that reached `succeeded` is succeeded now, or was cancelled afterwards.
EVER_SUCCEEDED = (State.SUCCEEDED.value, State.CANCELLED.value)


@dataclass(frozen=True)
class Window:
    """The last `days` calendar days in Asia/Shanghai, today included, as UTC instants [since, until)."""

    first_day: dt.date
    days: int
    since: dt.datetime
    until: dt.datetime

    @property
    def day_list(self) -> list[dt.date]:
        return [self.first_day + dt.timedelta(days=i) for i in range(self.days)]


def window(now: dt.datetime, days: int) -> Window:
    today = clock.china_date(now)
    first = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(first, dt.time(), tzinfo=clock.CHINA).astimezone(dt.UTC)
    until = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=clock.CHINA).astimezone(dt.UTC)
    return Window(first_day=first, days=days, since=since, until=until)


def _china_day(session: Session, column):
    """SQL: the Asia/Shanghai calendar day of a UTC timestamp (China keeps no daylight saving time)."""
    if is_postgres(session):
        return func.date(func.timezone("Asia/Shanghai", column))
    return func.date(column, "+8 hours")


def _day(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


@dataclass(frozen=True)
class Kpis:
    waiting: int  # 待升级: shops of an eligible type with a bound account, not upgraded
    upgraded: int  # 已升级: official accounts now
    in_progress: int  # applications waiting for the holder or in review
    awaiting_staff: int  # 待审核
    upgraded_in_window: int
    cancelled_in_window: int

    @property
    def cancel_rate(self) -> float:
        """Cancels within the window per upgrade within the window (0 when nothing was upgraded)."""
        return self.cancelled_in_window / self.upgraded_in_window if self.upgraded_in_window else 0.0


def kpis(session: Session, policy: Policy, *, now: dt.datetime, within: Window) -> Kpis:
    """The dashboard's cards: shops waiting to upgrade (eligible type, bound, not upgraded, R-01), official
    accounts, applications in progress (a lapsed one is not, R-15), the staff review queue (R-16), and the
    upgrades and cancels (R-12) of the window."""
    waiting = session.scalar(
        select(func.count())
        .select_from(Shop)
        .where(
            Shop.official_account_id.is_not(None),
            Shop.shop_type.in_(sorted(policy.eligibility.shop_types)),
            ~select(OfficialAccount.shop_id).where(OfficialAccount.shop_id == Shop.id).exists(),
        )
    )
    in_progress = session.scalar(
        select(func.count())
        .select_from(Application)
        .where(Application.status.in_([s.value for s in (State.SUBMITTED, State.REVIEWING)]), not_(facts.lapsed(now)))
    )
    awaiting = session.scalar(
        select(func.count())
        .select_from(Application)
        .where(Application.status == State.REVIEWING.value, Application.staff_review == Review.WAITING.value)
    )
    upgraded_in_window = sum(sum(day.values()) for day in upgrades_per_day(session, within=within).values())
    return Kpis(
        waiting=waiting or 0,
        upgraded=session.scalar(select(func.count()).select_from(OfficialAccount)) or 0,
        in_progress=in_progress or 0,
        awaiting_staff=awaiting or 0,
        upgraded_in_window=upgraded_in_window,
        cancelled_in_window=sum(cancellations_per_day(session, within=within).values()),
    )


def upgrades_per_day(session: Session, *, within: Window) -> dict[dt.date, dict[str, int]]:
    """Upgrades (R-10 manual, R-11 auto) that succeeded on each day of the window, by origin — a later cancel
    does not unmake the day's upgrade. Every day of the window is present, with zeros."""
    day = _china_day(session, Application.reviewed_at)
    rows = session.execute(
        select(day, Application.origin, func.count())
        .where(
            Application.status.in_(EVER_SUCCEEDED),
            Application.reviewed_at >= within.since,
            Application.reviewed_at < within.until,
        )
        .group_by(day, Application.origin)
    ).all()
    out = {d: {o.value: 0 for o in Origin} for d in within.day_list}
    for when, origin, count in rows:
        out.setdefault(_day(when), {o.value: 0 for o in Origin})[origin] = count
    return out


@dataclass(frozen=True)
class Funnel:
    submitted: int
    confirmed: int
    succeeded: int


def funnel(session: Session, *, within: Window) -> Funnel:
    """The merchant's applications (R-10) submitted within the window, how many of them the holder accepted
    (R-15) and how many succeeded (R-16; cancelled later or not)."""
    submitted_in = (
        Application.origin == Origin.MANUAL.value,
        Application.created_at >= within.since,
        Application.created_at < within.until,
    )
    submitted, confirmed, succeeded = session.execute(
        select(
            func.count(),
            # accepted by the holder: the review runs at once and stamps `reviewed_at` (a decline stamps only
            # `confirmed_at`, the moment of the answer)
            func.count(Application.reviewed_at),
            func.coalesce(func.sum(case((Application.status.in_(EVER_SUCCEEDED), 1), else_=0)), 0),
        ).where(*submitted_in)
    ).one()
    return Funnel(submitted=submitted or 0, confirmed=confirmed or 0, succeeded=int(succeeded or 0))


def rejection_reasons(session: Session, *, within: Window) -> Counter[str]:
    """Applications rejected within the window, counted by each reason code they carry (R-04, R-15, R-16): one
    application with two failed checks counts under both."""
    rows = session.scalars(
        select(Application.reasons).where(
            Application.status == State.REJECTED.value,
            Application.finished_at >= within.since,
            Application.finished_at < within.until,
        )
    )
    counted: Counter[str] = Counter()
    for reasons in rows:
        counted.update({r["code"] for r in reasons or []})
    return counted


def cancellations_per_day(session: Session, *, within: Window) -> dict[dt.date, int]:
    """Upgrades cancelled (取消升级, R-12, R-13) on each day of the window; every day present."""
    day = _china_day(session, Application.finished_at)
    rows = session.execute(
        select(day, func.count())
        .where(
            Application.status == State.CANCELLED.value,
            Application.finished_at >= within.since,
            Application.finished_at < within.until,
        )
        .group_by(day)
    ).all()
    out = dict.fromkeys(within.day_list, 0)
    for when, count in rows:
        out[_day(when)] = count
    return out
