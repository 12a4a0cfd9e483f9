"""The staff dashboard's figures at the service level (guanhao.upgrades.stats): upgrades per Asia/Shanghai day by
origin (R-10, R-11), the manual funnel (R-15, R-16), rejection reasons, cancels (R-12) and the KPI cards — from a
history with known numbers. Each verb commits at its own time, as it would have happened."""

import datetime as dt

import pytest

from guanhao import clock
from guanhao.db import session_scope
from guanhao.upgrades import service as upgrades
from guanhao.upgrades import stats, waves
from tests import make

DAY = dt.timedelta(days=1)


@pytest.fixture
def history(now, policy):
    """now = 2026-03-10 10:00 Beijing. Manual: one upgraded on 03-08, one whose holder confirmed at 00:30 Beijing
    on 03-10 (16:30 UTC the day before), one declined on 03-09, a big account rejected by staff on 03-09, one
    waiting for its holder, one upgraded long ago (outside the window). Auto: two upgraded today by a wave, one of
    them cancelled an hour later."""
    with session_scope() as session:
        shops = {name: make.ready_shop(session, now=now - 10 * DAY) for name in ("a", "b", "c", "d", "old", "e")}
        shops["big"] = make.ready_shop(session, now=now - 10 * DAY, account_fields={"followers": 2_000_000})
        for name in ("auto1", "auto2"):
            shops[name] = make.ready_shop(session, now=now - 10 * DAY, shop_fields={"experience_score": 5.0})
        make.upgraded(session, shops["a"], now=now - 2 * DAY)
        make.upgraded(session, shops["e"], now=dt.datetime(2026, 3, 9, 16, 30, tzinfo=dt.UTC))
        declined = make.submit(session, shops["b"], now=now - DAY)
        upgrades.decline(session, make.token(declined), policy, now=now - DAY)
        big = make.upgraded(session, shops["big"], now=now - DAY)
        assert big.awaiting_staff
        upgrades.staff_reject(session, big.id, reason="资料不全", actor=make.STAFF, now=now - DAY)
        make.submit(session, shops["c"], now=now)
        make.upgraded(session, shops["old"], now=now - 20 * DAY)
        clock.set_sandbox_now(session, now)
        wave = waves.start(session, limit=10, min_score=4.99, policy=policy, actor=make.STAFF, now=now)
    assert waves.work(wave.id, policy).upgraded == 2
    with session_scope() as session:
        upgrades.cancel(session, shops["auto1"].id, policy, actor=make.MERCHANT, now=now + dt.timedelta(hours=1))
    return shops


def test_the_window_is_whole_asia_shanghai_days(now):
    week = stats.window(now, 7)
    assert week.day_list[0] == dt.date(2026, 3, 4) and week.day_list[-1] == dt.date(2026, 3, 10)
    assert week.since == dt.datetime(2026, 3, 3, 16, tzinfo=dt.UTC)
    assert week.until == dt.datetime(2026, 3, 10, 16, tzinfo=dt.UTC)


def test_r10_r11_upgrades_per_day_by_origin_a_later_cancel_does_not_unmake_them(history, now):
    with session_scope() as session:
        per_day = stats.upgrades_per_day(session, within=stats.window(now, 7))
    assert len(per_day) == 7
    assert per_day[dt.date(2026, 3, 8)] == {"manual": 1, "auto": 0}
    assert per_day[dt.date(2026, 3, 9)] == {"manual": 0, "auto": 0}  # 16:30 UTC on the 9th is the 10th in Beijing
    assert per_day[dt.date(2026, 3, 10)] == {"manual": 1, "auto": 2}
    assert sum(sum(d.values()) for d in per_day.values()) == 4  # the upgrade of 20 days ago is outside


def test_r15_r16_the_funnel_of_merchant_applications(history, now):
    with session_scope() as session:
        funnel = stats.funnel(session, within=stats.window(now, 7))
    # a, e, b, big, c submitted; a, e and big confirmed by their holder; a and e succeeded
    assert (funnel.submitted, funnel.confirmed, funnel.succeeded) == (5, 3, 2)
    with session_scope() as session:
        assert stats.funnel(session, within=stats.window(now, 30)).submitted == 6


def test_r04_r16_rejection_reasons_are_counted_by_code(history, now):
    with session_scope() as session:
        reasons = stats.rejection_reasons(session, within=stats.window(now, 7))
        today = stats.rejection_reasons(session, within=stats.window(now, 1))
    assert reasons == {"HOLDER_DECLINED": 1, "STAFF_REJECTED": 1}
    assert today == {}


def test_r12_cancellations_per_day(history, now):
    with session_scope() as session:
        cancels = stats.cancellations_per_day(session, within=stats.window(now, 7))
    assert cancels[dt.date(2026, 3, 10)] == 1
    assert sum(cancels.values()) == 1


def test_the_kpi_cards(history, now, policy):
    with session_scope() as session:
        kpis = stats.kpis(session, policy, now=now, within=stats.window(now, 7))
    assert kpis.upgraded == 4  # a, e, old, auto2 (auto1 was cancelled)
    assert kpis.in_progress == 1  # c, waiting for its holder
    assert kpis.awaiting_staff == 0
    assert kpis.waiting == 5  # b, c, d, big and the cancelled auto1: bound, of an eligible type, not upgraded
    assert (kpis.upgraded_in_window, kpis.cancelled_in_window) == (4, 1)
    assert kpis.cancel_rate == pytest.approx(0.25)


def test_r15_a_lapsed_application_is_not_in_progress(now, policy):
    with session_scope() as session:
        shop = make.ready_shop(session, now=now)
        make.submit(session, shop, now=now - 8 * DAY)
    with session_scope() as session:
        assert stats.kpis(session, policy, now=now, within=stats.window(now, 7)).in_progress == 0
