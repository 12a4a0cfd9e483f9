"""The duty scheduler (issue 7, item 6), service level: claiming, intervals, a duty that raises, two claimers.

Times are real time in the scheduler; these tests pass their own `now`."""

import datetime as dt
import threading

import pytest
import structlog.testing
from sqlalchemy import select

from guanhao import jobs
from guanhao.db import session_scope
from guanhao.policy import Policy, get_policy
from guanhao.worker import scheduler
from guanhao.worker.models import DutyRow
from guanhao.worker.runner import Worker
from tests.conftest import is_postgres

LEASE = dt.timedelta(seconds=60)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def t0():
    return dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC)


def claim(name: str, owner: str, now: dt.datetime) -> scheduler.Claim:
    with session_scope() as session:
        return scheduler.claim(session, name, owner, now=now, lease=LEASE)


def finish(name: str, owner: str, now: dt.datetime, *, outcome: str = "ok", error: str | None = None) -> bool:
    with session_scope() as session:
        return scheduler.finish(
            session, name, owner, now=now, interval=MINUTE, outcome=outcome, processed=1, error=error
        )


def row(name: str) -> DutyRow:
    with session_scope(write=False) as session:
        return session.get_one(DutyRow, name)


def test_a_due_duty_goes_to_one_worker_until_it_finishes_then_waits_its_interval(database, t0):
    with session_scope() as session:
        scheduler.ensure(session, ["sweep"], now=t0)
        scheduler.ensure(session, ["sweep"], now=t0 + MINUTE)  # a second worker starting: the row stays

    assert claim("sweep", "w1", t0).claimed
    held = claim("sweep", "w2", t0 + dt.timedelta(seconds=1))
    assert not held.claimed and held.until == t0 + LEASE  # w2 is told when the lease runs out
    assert (row("sweep").lease_owner, row("sweep").lease_until) == ("w1", t0 + LEASE)

    done = t0 + dt.timedelta(seconds=5)
    assert finish("sweep", "w1", done)
    r = row("sweep")
    assert (r.lease_owner, r.lease_until, r.next_run_at) == (None, None, done + MINUTE)
    assert (r.last_started_at, r.last_finished_at, r.last_worker, r.last_outcome, r.runs) == (t0, done, "w1", "ok", 1)

    early = claim("sweep", "w2", done + dt.timedelta(seconds=30))
    assert not early.claimed and early.until == done + MINUTE
    assert claim("sweep", "w2", done + MINUTE).claimed


def test_a_worker_killed_mid_duty_loses_it_when_the_lease_runs_out(database, t0):
    with session_scope() as session:
        scheduler.ensure(session, ["sweep"], now=t0)
    assert claim("sweep", "dead", t0).claimed  # and never finishes
    assert not claim("sweep", "alive", t0 + LEASE - dt.timedelta(seconds=1)).claimed
    assert claim("sweep", "alive", t0 + LEASE + dt.timedelta(seconds=1)).claimed
    # The dead worker, had it only been slow, records its run but leaves the new holder's lease alone.
    assert not finish("sweep", "dead", t0 + LEASE + dt.timedelta(seconds=2))
    assert row("sweep").lease_owner == "alive"


def test_a_failed_run_is_recorded_and_counted_until_one_succeeds(database, t0):
    with session_scope() as session:
        scheduler.ensure(session, ["sweep"], now=t0)
    for i in range(2):
        at = t0 + i * MINUTE
        assert claim("sweep", "w1", at).claimed
        finish("sweep", "w1", at, outcome="error", error="OperationalError")
        r = row("sweep")
        assert (r.last_outcome, r.last_error, r.failures, r.next_run_at) == (
            "error",
            "OperationalError",
            i + 1,
            at + MINUTE,
        )
    assert claim("sweep", "w1", t0 + 2 * MINUTE).claimed
    finish("sweep", "w1", t0 + 2 * MINUTE)
    r = row("sweep")
    assert (r.last_outcome, r.last_error, r.failures, r.runs) == ("ok", None, 0, 3)


def test_intervals_come_from_the_policy_and_default_to_the_registration(database):
    policy = get_policy()
    assert jobs.DUTIES["purge-idempotency-keys"].interval(policy) == dt.timedelta(hours=1)
    data = policy.model_dump()
    data["worker"]["intervals"] = {"purge-idempotency-keys": 5.0}
    changed = Policy.model_validate(data)
    assert jobs.DUTIES["purge-idempotency-keys"].interval(changed) == dt.timedelta(seconds=5)
    assert jobs.DUTIES["expire-confirmations"].interval(changed) == dt.timedelta(seconds=60)  # registered default
    assert set(jobs.DUTIES) >= {
        "expire-confirmations",
        "expire-pending-changes",
        "purge-idempotency-keys",
        "deliver-webhooks",
        "waves",
    }
    assert set(jobs.JOBS) == {"expire-confirmations", "expire-pending-changes", "purge-idempotency-keys"}


@pytest.fixture
def flaky_duty():
    """A duty registered for the test: fails while `fail` is set, counts its runs."""
    state = {"fail": True, "runs": 0}

    def run(ctx: jobs.Context) -> int:
        state["runs"] += 1
        if state["fail"]:
            raise RuntimeError("boom")
        return 7

    duty = jobs.register("test-flaky", run, every=0.001)
    yield state
    del jobs.DUTIES[duty.name]


def test_a_duty_that_raises_is_recorded_and_retried_by_the_worker(database, flaky_duty):
    worker = Worker("w-test", duties=["test-flaky"])
    assert worker.run_once() == {"test-flaky": None}
    r = row("test-flaky")
    assert (r.last_outcome, r.last_error, r.failures, r.lease_owner) == ("error", "RuntimeError", 1, None)
    flaky_duty["fail"] = False
    threading.Event().wait(0.01)  # the registered interval (1 ms) has passed: due again
    assert worker.run_once() == {"test-flaky": 7}
    r = row("test-flaky")
    assert (r.last_outcome, r.last_processed, r.failures, r.runs, r.last_worker) == ("ok", 7, 0, 2, "w-test")
    assert flaky_duty["runs"] == 2


def test_a_worker_refuses_a_duty_nobody_registered(database):
    with pytest.raises(ValueError, match="unknown duties"):
        Worker("w", duties=["no-such-duty"])


def test_two_claimers_never_get_the_same_duty(database, t0):
    """Many rounds of claimers released together at one due duty: exactly one gets it each round (on PostgreSQL
    a real race on the row, SKIP LOCKED; on SQLite the IMMEDIATE transactions take turns)."""
    claimers = 8 if is_postgres() else 4
    rounds = 15
    with session_scope() as session:
        scheduler.ensure(session, ["contended"], now=t0)
    for n in range(rounds):
        at = t0 + n * 2 * LEASE  # each round after the last one's lease: due, and free
        barrier = threading.Barrier(claimers)
        got: list[str] = []

        def attempt(owner: str, at=at, barrier=barrier, got=got) -> None:
            barrier.wait()
            if claim("contended", owner, at).claimed:
                got.append(owner)

        threads = [threading.Thread(target=attempt, args=(f"w{i}",)) for i in range(claimers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 1, (n, got)
        assert row("contended").lease_owner == got[0]
    with session_scope(write=False) as session:
        assert session.scalar(select(DutyRow.lease_until).where(DutyRow.name == "contended")) == at + LEASE


def test_a_stop_that_outlasts_its_wait_says_which_duty_still_runs(database):
    release, started = threading.Event(), threading.Event()

    def slow(ctx: jobs.Context) -> int:
        started.set()
        release.wait(10)  # a wave chunk waiting on a lock
        return 0

    duty = jobs.register("test-slow", slow, every=0.001, shared=True)
    try:
        worker = Worker("w-slow", duties=["test-slow"]).start()
        assert started.wait(10)
        with structlog.testing.capture_logs() as logs:
            worker.stop(timeout=0.1)
        [said] = [e for e in logs if e["event"].startswith("worker.")]
        assert said["event"] == "worker.stop_timed_out"
        assert said["still_running"] == ["guanhao-test-slow"]
        release.set()
        for thread in worker._threads:
            thread.join(10)
        with structlog.testing.capture_logs() as logs:
            worker.stop(timeout=1)
        assert [e["event"] for e in logs if e["event"].startswith("worker.")] == ["worker.stopped"]
    finally:
        release.set()
        del jobs.DUTIES[duty.name]
