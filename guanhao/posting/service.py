"""Daily posting limit (投稿频次, SPEC R-23, R-13): 75 a day before the upgrade, 100 after."""

import datetime as dt
import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from guanhao import errors
from guanhao.db import Session
from guanhao.i18n import _l
from guanhao.policy import Policy
from guanhao.posting.models import PostingCounter


@dataclass(frozen=True)
class Quota:
    limit: int
    used: int
    day: dt.date

    @property
    def remaining(self) -> int:
        # After a cancel the limit can drop below what was already posted today: 0, never negative.
        return max(self.limit - self.used, 0)


def posting_day(policy: Policy, now: dt.datetime) -> dt.date:
    """R-23: the calendar day posts are counted in (Asia/Shanghai, policy)."""
    return now.astimezone(ZoneInfo(policy.posting.timezone)).date()


def seconds_to_next_day(policy: Policy, now: dt.datetime) -> int:
    """Until the next posting day begins (Asia/Shanghai midnight): the Retry-After of a refused post."""
    zone = ZoneInfo(policy.posting.timezone)
    tomorrow = dt.datetime.combine(posting_day(policy, now) + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return max(1, math.ceil((tomorrow - now).total_seconds()))


def daily_limit(policy: Policy, *, upgraded: bool) -> int:
    """R-23: the posts an account may make in a day — 75 before the upgrade, 100 after (policy)."""
    return policy.posting.limit_after if upgraded else policy.posting.limit_before


def quota(session: Session, account_id: str, policy: Policy, *, upgraded: bool, now: dt.datetime) -> Quota:
    """R-23, R-13: the day's limit, the posts made and what remains (never below 0)."""
    day = posting_day(policy, now)
    used = session.scalar(
        select(PostingCounter.used).where(PostingCounter.account_id == account_id, PostingCounter.day == day)
    )
    return Quota(limit=daily_limit(policy, upgraded=upgraded), used=used or 0, day=day)


def record_post(session: Session, account_id: str, policy: Policy, *, upgraded: bool, now: dt.datetime) -> Quota:
    """R-23: counts one post, or refuses with DAILY_POST_LIMIT_REACHED. One statement: insert the day's
    first post, or add one where the count is still below the limit — the row lock of the upsert
    serialises concurrent posts, and the WHERE makes the 76th (or 101st) a no-op."""
    day = posting_day(policy, now)
    limit = daily_limit(policy, upgraded=upgraded)
    if limit <= 0:
        raise errors.DailyPostLimitReached(
            _l("The daily limit is {limit}", limit=limit), retry_after=seconds_to_next_day(policy, now)
        )
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(PostingCounter).values(account_id=account_id, day=day, used=1)
    upsert = stmt.on_conflict_do_update(
        index_elements=[PostingCounter.account_id, PostingCounter.day],
        set_={"used": PostingCounter.used + 1},
        where=PostingCounter.used < limit,
    ).returning(PostingCounter.used)
    used = session.execute(upsert).scalar()
    if used is None:
        raise errors.DailyPostLimitReached(
            _l("The account has made its {limit} posts for {day}", limit=limit, day=day.isoformat()),
            retry_after=seconds_to_next_day(policy, now),
        )
    return Quota(limit=limit, used=used, day=day)
