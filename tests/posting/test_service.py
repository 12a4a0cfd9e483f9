"""The daily posting limit at the service level (guanhao.posting.service, 投稿频次): 75 a day before the
upgrade, 100 after (R-23), counted per Asia/Shanghai calendar day; after a cancel the day's posts above 75
leave 0 remaining, never less (R-13)."""

import datetime as dt

import pytest

from guanhao import errors
from guanhao.db import session_scope
from guanhao.posting import service as posting
from guanhao.upgrades import service as upgrades
from tests import make


def with_posting(policy, **fields):
    return policy.model_copy(update={"posting": policy.posting.model_copy(update=fields)})


def post_n(session, account_id: str, policy, n: int, *, upgraded: bool, now) -> posting.Quota:
    for _ in range(n):
        last = posting.record_post(session, account_id, policy, upgraded=upgraded, now=now)
    return last


@pytest.fixture
def account_id(session, now):
    return make.account(session, now=now).id


def test_r23_the_daily_limit_is_75_before_the_upgrade_and_100_after(policy):
    assert posting.daily_limit(policy, upgraded=False) == 75
    assert posting.daily_limit(policy, upgraded=True) == 100
    assert posting.daily_limit(with_posting(policy, limit_after=120), upgraded=True) == 120


def test_r23_the_76th_post_of_a_day_is_refused_and_counts_nothing(session, account_id, now, policy):
    last = post_n(session, account_id, policy, 75, upgraded=False, now=now)
    assert (last.limit, last.used, last.remaining) == (75, 75, 0)
    with pytest.raises(errors.DailyPostLimitReached):
        posting.record_post(session, account_id, policy, upgraded=False, now=now)
    assert posting.quota(session, account_id, policy, upgraded=False, now=now).used == 75


def test_r23_an_upgraded_account_posts_100_a_day(session, account_id, now, policy):
    post_n(session, account_id, policy, 100, upgraded=True, now=now)
    with pytest.raises(errors.DailyPostLimitReached):
        posting.record_post(session, account_id, policy, upgraded=True, now=now)


def test_r23_the_day_turns_over_at_midnight_in_beijing_not_in_utc(session, account_id, policy):
    before_midnight = dt.datetime(2026, 3, 10, 15, 59, 59, tzinfo=dt.UTC)  # 23:59:59 in Beijing
    midnight = dt.datetime(2026, 3, 10, 16, 0, tzinfo=dt.UTC)
    post_n(session, account_id, policy, 75, upgraded=False, now=before_midnight)
    with pytest.raises(errors.DailyPostLimitReached):
        posting.record_post(session, account_id, policy, upgraded=False, now=before_midnight)
    fresh = posting.record_post(session, account_id, policy, upgraded=False, now=midnight)
    assert (fresh.used, fresh.day) == (1, dt.date(2026, 3, 11))
    assert posting.quota(session, account_id, policy, upgraded=False, now=before_midnight).day == dt.date(2026, 3, 10)


def test_r13_after_a_cancel_posts_above_75_leave_0_remaining_and_the_next_is_refused(now, policy):
    with session_scope() as session:
        shop = make.ready_shop(session, now=now)
    make.auto_upgraded([shop.id], now=now)
    account_id = shop.official_account_id
    with session_scope() as session:
        post_n(session, account_id, policy, 90, upgraded=upgrades.is_upgraded(session, account_id), now=now)
        upgrades.cancel(session, shop.id, policy, actor=make.MERCHANT, now=now)
    with session_scope() as session:
        upgraded = upgrades.is_upgraded(session, account_id)
        left = posting.quota(session, account_id, policy, upgraded=upgraded, now=now)
        assert (upgraded, left.limit, left.used, left.remaining) == (False, 75, 90, 0)
        with pytest.raises(errors.DailyPostLimitReached):
            posting.record_post(session, account_id, policy, upgraded=upgraded, now=now)


def test_r23_a_limit_of_zero_refuses_every_post(session, account_id, now, policy):
    closed = with_posting(policy, limit_before=0)
    with pytest.raises(errors.DailyPostLimitReached):
        posting.record_post(session, account_id, closed, upgraded=False, now=now)
    assert posting.quota(session, account_id, closed, upgraded=False, now=now).remaining == 0
