"""Auto-upgrade waves at the service level (guanhao.upgrades.waves, SPEC R-11): start, work, cancel, the
wave's state machine (transition, fail, reopen) and the dry run (simulate). A wave's worker runs its own
units of work, so these tests commit what they set up; the worker reads the sandbox clock, set to `now`."""

import pytest
from sqlalchemy import func, select

from guanhao import clock, errors
from guanhao.audit.models import AuditEntry
from guanhao.db import session_scope
from guanhao.events import service as events
from guanhao.upgrades import service as upgrades
from guanhao.upgrades import waves
from guanhao.upgrades.models import Application, OfficialAccount, WaveState
from tests import make


def start(now, policy, *, limit: int, min_score: float | None = None) -> str:
    with session_scope() as session:
        clock.set_sandbox_now(session, now)
        return waves.start(session, limit=limit, min_score=min_score, policy=policy, actor=make.STAFF, now=now).id


def wave_trail(wave_id: str) -> list[tuple]:
    with session_scope() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.target_id == wave_id).order_by(AuditEntry.seq))
        return [(a.action, a.from_state, a.to_state) for a in rows]


def count(model) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def mix(now):
    """Two shops a wave upgrades and one of each kind it skips or never looks at."""
    with session_scope() as session:
        shops = {
            "eligible_1": make.ready_shop(session, now=now),
            "eligible_2": make.ready_shop(session, now=now),
            "big": make.ready_shop(session, now=now, account_fields={"followers": 2_000_000}),
            "personal": make.ready_shop(session, now=now, shop_fields={"shop_type": "personal"}),
            "in_progress": make.ready_shop(session, now=now),
            "low_score": make.ready_shop(session, now=now, shop_fields={"experience_score": 4.5}),
        }
        make.submit(session, shops["in_progress"], now=now)
    return {name: shop.id for name, shop in shops.items()}


def test_r63_a_wave_needs_a_limit_of_zero_or_more(session, now, policy):
    with pytest.raises(errors.ValidationFailed):
        waves.start(session, limit=-1, min_score=None, policy=policy, actor=make.STAFF, now=now)
    wave = waves.start(session, limit=0, min_score=None, policy=policy, actor=make.STAFF, now=now)
    assert (wave.status, wave.min_experience_score) == (WaveState.RUNNING, policy.auto_upgrade.min_experience_score)


def test_r11_a_wave_upgrades_the_shops_that_perform_well_and_counts_every_skip(mix, now, policy):
    wave_id = start(now, policy, limit=10)
    done = waves.work(wave_id, policy)
    assert (done.status, done.upgraded, done.skipped, done.scanned) == (WaveState.DONE, 2, 3, 5)
    assert done.skip_reasons == {"NEEDS_STAFF_REVIEW": 1, "SHOP_TYPE_NOT_ELIGIBLE": 1, "APPLICATION_IN_PROGRESS": 1}
    with session_scope() as session:
        upgraded = {r.shop_id: r for r in session.scalars(select(OfficialAccount))}
        assert set(upgraded) == {mix["eligible_1"], mix["eligible_2"]}
        for record in upgraded.values():
            # succeeded at once, no holder step, cancellable for 30 days (policy).
            assert (record.origin, record.upgraded_at, record.cancel_deadline) == (
                "auto",
                now,
                now + policy.cancel_window,
            )
            app = upgrades.get_application(session, record.application_id)
            assert (app.status, app.confirmed_at, app.wave_id) == ("succeeded", None, wave_id)
    assert wave_trail(wave_id) == [("wave.started", None, None), ("wave.done", "running", "done")]


def test_r61_an_auto_upgrade_announces_itself_like_a_manual_one(now, policy):
    """One payload for `upgrade.succeeded`, whichever path made it (the wave adds its id)."""
    with session_scope() as session:
        manual = make.ready_shop(session, now=now)
        make.upgraded(session, manual, now=now)
        auto = make.ready_shop(session, now=now)
    make.auto_upgraded([auto.id], now=now)
    with session_scope() as session:
        succeeded = {
            e.shop_id: e.data
            for e in events.events_after(session, after_seq=None, limit=50)
            if e.type == "upgrade.succeeded"
        }
    assert set(succeeded[auto.id]) == set(succeeded[manual.id])
    assert (succeeded[auto.id]["origin"], succeeded[manual.id]["origin"]) == ("auto", "manual")
    assert succeeded[auto.id]["cancel_deadline"] == (now + policy.cancel_window).isoformat()


def test_r11_the_limit_caps_the_upgrades_made(mix, now, policy):
    done = waves.work(start(now, policy, limit=1), policy)
    assert (done.status, done.upgraded) == (WaveState.DONE, 1)
    assert count(OfficialAccount) == 1


def test_r11_a_shop_whose_auto_upgrade_was_cancelled_is_skipped_by_later_waves(now, policy):
    with session_scope() as session:
        shop = make.ready_shop(session, now=now)
    make.auto_upgraded([shop.id], now=now)
    with session_scope() as session:
        upgrades.cancel(session, shop.id, policy, actor=make.MERCHANT, now=now)
    done = waves.work(start(now, policy, limit=5), policy)
    assert (done.upgraded, done.skip_reasons) == (0, {"AUTO_UPGRADE_CANCELLED": 1})


def test_r11_a_higher_minimum_score_leaves_the_others_alone(mix, now, policy):
    with session_scope() as session:
        top = make.ready_shop(session, now=now, shop_fields={"experience_score": 5.0})
    done = waves.work(start(now, policy, limit=10, min_score=4.9), policy)
    assert (done.upgraded, done.scanned) == (1, 1)
    with session_scope() as session:
        assert [r.shop_id for r in session.scalars(select(OfficialAccount))] == [top.id]


def test_r11_a_cancelled_wave_starts_no_new_chunk_and_stays_cancelled(mix, now, policy):
    wave_id = start(now, policy, limit=10)
    with session_scope() as session:
        assert waves.cancel(session, wave_id, actor=make.STAFF, now=now).status == WaveState.CANCELLED
    assert waves.work(wave_id, policy).upgraded == 0
    assert count(OfficialAccount) == 0
    with session_scope() as session:
        with pytest.raises(errors.InvalidTransition):
            waves.cancel(session, wave_id, actor=make.STAFF, now=now)
        with pytest.raises(errors.NotFound):
            waves.cancel(session, "wave_missing", actor=make.STAFF, now=now)
        assert waves.reopen(session, wave_id, now=now).status == WaveState.CANCELLED
    assert wave_trail(wave_id)[1:] == [("wave.cancelled", "running", "cancelled")]


def test_r11_a_failed_wave_is_audited_and_can_be_resumed(mix, now, policy):
    wave_id = start(now, policy, limit=10)
    with session_scope() as session:
        waves.fail(session, wave_id, "disk full", now=now)
    with session_scope() as session:
        failed = waves.get(session, wave_id)
        assert (failed.status, failed.error, failed.finished_at) == (WaveState.FAILED, "disk full", now)
        waves.reopen(session, wave_id, actor=make.STAFF, now=now)
    assert waves.work(wave_id, policy).upgraded == 2
    assert wave_trail(wave_id)[1:] == [
        ("wave.failed", "running", "failed"),
        ("wave.running", "failed", "running"),
        ("wave.done", "running", "done"),
    ]


def test_r11_the_wave_table_refuses_what_it_does_not_list(session, now, policy):
    wave = waves.start(session, limit=1, min_score=None, policy=policy, actor=make.STAFF, now=now)
    waves.transition(session, wave, WaveState.DONE, actor=make.STAFF, now=now)
    with pytest.raises(errors.InvalidTransition):
        waves.transition(session, wave, WaveState.CANCELLED, actor=make.STAFF, now=now)
    assert wave.status == WaveState.DONE


def test_r11_a_dry_run_reports_what_a_wave_would_do_and_writes_nothing(mix, now, policy):
    with session_scope() as session:
        clock.set_sandbox_now(session, now)
    before = count(Application)
    planned = waves.simulate(policy, limit=10, min_score=None)
    assert count(Application) == before and count(OfficialAccount) == 0
    done = waves.work(start(now, policy, limit=10), policy)
    assert (planned.scanned, planned.upgraded, planned.skipped) == (done.scanned, done.upgraded, done.skipped)
    assert dict(planned.reasons) == done.skip_reasons
