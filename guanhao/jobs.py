"""Every background duty, registered once: what it does, how often, and whether workers take turns at it.

`guanhao worker` (guanhao.worker.runner) runs them all; the named jobs among them also run on demand from
the admin API (`POST /api/v1/admin/jobs/{job}/run`, guanhao.jobs_api) and the CLI (`guanhao jobs run NAME`).
A later duty is one `register(...)` call here (and, optionally, its interval in the policy's
`[worker.intervals]`).
"""

import datetime as dt
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import structlog

from guanhao import clock, idempotency, metrics
from guanhao.audit import service as audit
from guanhao.db import Session, session_scope
from guanhao.operators import service as operators
from guanhao.policy import Policy
from guanhao.settings import get_settings
from guanhao.upgrades import service as upgrades
from guanhao.upgrades import waves
from guanhao.webhooks import targets
from guanhao.webhooks import worker as webhooks

log = structlog.get_logger("guanhao.jobs")

Job = Callable[[Session, Policy, dt.datetime], int]


@dataclass
class Context:
    """What a duty gets from the worker running it."""

    policy: Policy
    worker_id: str
    stop: threading.Event
    resources: ExitStack = field(default_factory=ExitStack)
    state: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Duty:
    name: str
    run: Callable[[Context], int]  # returns how many items it processed
    every: float  # default seconds between runs; the policy's [worker.intervals] may say otherwise
    # Shared: every worker runs it on its own schedule, its items coordinated by their own locks or leases
    # (wave chunks, webhook deliveries). Exclusive (the default): one worker at a time, under the duty's lease.
    shared: bool = False
    job: Job | None = None  # a named job also runnable on demand (API, CLI)

    def interval(self, policy: Policy) -> dt.timedelta:
        return dt.timedelta(seconds=policy.worker.intervals.get(self.name, self.every))


DUTIES: dict[str, Duty] = {}
JOBS: dict[str, Job] = {}


def register(name: str, run: Callable[[Context], int], *, every: float, shared: bool = False) -> Duty:
    duty = Duty(name=name, run=run, every=every, shared=shared)
    DUTIES[name] = duty
    return duty


def register_job(name: str, job: Job, *, every: float) -> Duty:
    """A named job (one transaction, the service clock) that the worker also runs every `every` seconds."""

    def run(ctx: Context) -> int:
        with session_scope() as session:
            return job(session, ctx.policy, clock.now(session))

    duty = Duty(name=name, run=run, every=every, job=job)
    DUTIES[name] = duty
    JOBS[name] = job
    return duty


def run(session: Session, name: str, policy: Policy, now: dt.datetime, *, actor: str | None = None) -> int:
    """A named job, now, in the caller's unit of work. R-60: a run someone asked for (staff over the API, the
    CLI) is audited with what it did; the rows of the items it changed are the job's own (actor `job:NAME`)."""
    with metrics.timed_job(name):
        processed = JOBS[name](session, policy, now)
    if actor is not None:
        audit.record(
            session,
            at=now,
            actor=actor,
            action="job.run",
            target_kind="job",
            target_id=name,
            detail={"processed": processed},
        )
    return processed


# ---------------------------------------------------------------- the duties


def _expire_confirmations(session: Session, policy: Policy, now: dt.datetime) -> int:
    """R-15: records the expiry of applications past their confirmation deadline that nobody touched."""
    total = 0
    while batch := upgrades.expire_confirmations(session, now=now, limit=500):
        total += batch
    return total


def _expire_pending_changes(session: Session, policy: Policy, now: dt.datetime) -> int:
    """R-24, R-42: pending SMS-verified changes past their code's lifetime expire."""
    total = 0
    while batch := operators.expire_pending(session, now=now, limit=500):
        total += batch
    return total


def _purge_idempotency_keys(session: Session, policy: Policy, now: dt.datetime) -> int:
    return idempotency.purge(session, now=now, retention=dt.timedelta(hours=policy.idempotency.retention_hours))


def _deliver_webhooks(ctx: Context) -> int:
    """R-61: one delivery round (fan out, claim, send, settle); deliveries carry their own leases."""
    client = ctx.state.get("webhook_client")
    if client is None:
        client = ctx.state["webhook_client"] = ctx.resources.enter_context(
            targets.client(sandbox=get_settings().sandbox)
        )
    tally = webhooks.run_once(ctx.policy, client)
    return tally.queued + tally.delivered + tally.retrying + tally.dead


def _waves(ctx: Context) -> int:
    """R-11: works every running wave with the other workers (chunks are claimed SKIP LOCKED, so no shop is
    taken twice) until none is left or the worker stops; a wave whose worker died is simply picked up here. A
    wave that cannot go on is failed (audited, resumable) and the error recorded on the duty."""
    scanned = 0
    failed: list[str] = []
    while not ctx.stop.is_set():
        with session_scope(write=False) as session:
            ids = [w for w in waves.running(session) if w not in failed]
        if not ids:
            break
        for wave_id in ids:
            if ctx.stop.is_set():
                break
            mine = waves.Outcome()
            try:
                waves.work(
                    wave_id,
                    ctx.policy,
                    chunk=ctx.policy.worker.wave_chunk,
                    tally=mine,
                    worker=ctx.worker_id,
                    stop=ctx.stop.is_set,
                )
            except Exception as exc:
                log.error("wave.failed", wave_id=wave_id, error_type=type(exc).__name__)
                with session_scope() as session:
                    waves.fail(session, wave_id, type(exc).__name__, now=clock.now(session))
                failed.append(wave_id)
            scanned += mine.scanned
    if failed:
        raise WaveFailed(f"waves failed: {', '.join(failed)}")
    return scanned


class WaveFailed(Exception):
    pass


register_job("expire-confirmations", _expire_confirmations, every=60)
register_job("expire-pending-changes", _expire_pending_changes, every=60)
register_job("purge-idempotency-keys", _purge_idempotency_keys, every=3600)
register("deliver-webhooks", _deliver_webhooks, every=1, shared=True)
register("waves", _waves, every=1, shared=True)
