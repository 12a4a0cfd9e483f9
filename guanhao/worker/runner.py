"""A worker: one thread per duty of guanhao.jobs.DUTIES, each looping claim → run → record → sleep.

`guanhao worker` runs one in the foreground (SIGTERM/SIGINT stop it gracefully: the run in hand ends — a wave
at the end of its chunk — and nothing new starts); `guanhao serve` runs one beside the HTTP server unless
`--no-worker`. Any number of workers share one database: exclusive duties go to one worker at a time under
a lease in the duty table (guanhao.worker.scheduler); shared duties (waves, webhook deliveries) run in every
worker, their items claimed with their own locks and leases.
"""

import datetime as dt
import os
import socket
import threading
import time

import structlog

from guanhao import clock, jobs, metrics
from guanhao.db import session_scope, unavailable
from guanhao.policy import Policy, get_policy
from guanhao.worker import scheduler

log = structlog.get_logger("guanhao.worker")

# A shared duty that found nothing to do records that in its row at most this often (per worker).
IDLE_RECORD_SECONDS = 30.0

_nudges: dict[str, set[threading.Event]] = {}
_nudges_lock = threading.Lock()


def nudge(duty: str) -> None:
    """Wakes this process's workers' loop of `duty` now (the API calls it after starting a wave)."""
    with _nudges_lock:
        for event in _nudges.get(duty, ()):
            event.set()


def _code(exc: BaseException) -> str | None:
    """The database's own word for an error (SQLSTATE, SQLite code), safe to log: never a statement's values."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    return str(code) if code else None


def default_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(self, worker_id: str | None = None, *, policy: Policy | None = None, duties: list[str] | None = None):
        self.id = worker_id or default_id()
        self.policy = policy or get_policy()
        names = duties if duties else list(jobs.DUTIES)
        unknown = [n for n in names if n not in jobs.DUTIES]
        if unknown:
            raise ValueError(f"unknown duties: {', '.join(unknown)}; known: {', '.join(jobs.DUTIES)}")
        self.duties = [jobs.DUTIES[n] for n in names]
        self.stop_event = threading.Event()
        self._wake = {d.name: threading.Event() for d in self.duties}
        self._threads: list[threading.Thread] = []
        self._last_idle_record: dict[str, float] = {}

    # -------------------------------------------------------------- lifecycle

    def start(self) -> "Worker":
        """Starts one thread per duty and returns at once."""
        self._ensure_rows()
        with _nudges_lock:
            for name, event in self._wake.items():
                _nudges.setdefault(name, set()).add(event)
        for duty in self.duties:
            thread = threading.Thread(target=self._loop, args=(duty,), name=f"guanhao-{duty.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("worker.started", worker=self.id, duties=[d.name for d in self.duties])
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Asks every loop to stop after the run in hand, and waits for them."""
        self.stop_event.set()
        for event in self._wake.values():
            event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with _nudges_lock:
            for name, event in self._wake.items():
                _nudges.get(name, set()).discard(event)
        running = [t.name for t in self._threads if t.is_alive()]
        if running:
            # A run still in hand past the wait (a wave chunk waiting on a lock): it ends by itself, its
            # transaction with it; said here so that a process that goes on knows a duty still runs.
            log.warning("worker.stop_timed_out", worker=self.id, still_running=running, waited_s=timeout)
        else:
            log.info("worker.stopped", worker=self.id)

    def run_forever(self) -> None:
        """Runs until `stop_event` is set (by a signal handler), then stops gracefully."""
        self.start()
        while not self.stop_event.wait(0.5):
            pass
        self.stop()

    def run_once(self) -> dict[str, int | None]:
        """`guanhao worker --once`: every duty that is due (and not held by another worker) runs once, in turn;
        running waves are worked to their end. What each processed (None: not run)."""
        self._ensure_rows()
        done: dict[str, int | None] = {}
        for duty in self.duties:
            ctx = jobs.Context(policy=self.policy, worker_id=self.id, stop=self.stop_event)
            with ctx.resources:
                done[duty.name] = self._tick(duty, ctx, force_shared=True)[1]
        return done

    def _ensure_rows(self) -> None:
        with session_scope() as session:
            scheduler.ensure(session, [d.name for d in self.duties], now=clock.real_now())

    # -------------------------------------------------------------- one duty's loop

    def _loop(self, duty: jobs.Duty) -> None:
        ctx = jobs.Context(policy=self.policy, worker_id=self.id, stop=self.stop_event)
        wake = self._wake[duty.name]
        with ctx.resources, structlog.contextvars.bound_contextvars(worker=self.id, duty=duty.name):
            while not self.stop_event.is_set():
                wait, _ = self._tick(duty, ctx)
                if wait > 0:
                    wake.wait(wait)
                    wake.clear()

    def _tick(self, duty: jobs.Duty, ctx: jobs.Context, *, force_shared: bool = False) -> tuple[float, int | None]:
        """One look at `duty`: run it if it is this worker's turn. Returns (seconds to wait, what it processed)."""
        poll = self.policy.worker.poll_seconds
        interval = duty.interval(self.policy)
        try:
            if not duty.shared:
                now = clock.real_now()
                with session_scope() as session:
                    claim = scheduler.claim(
                        session,
                        duty.name,
                        self.id,
                        now=now,
                        lease=dt.timedelta(seconds=self.policy.worker.lease_seconds),
                    )
                if not claim.claimed:
                    return min(poll, max(0.05, (claim.until - clock.real_now()).total_seconds())), None
        except Exception as exc:
            log.warning(
                "duty.claim_failed",
                duty=duty.name,
                error_type=type(exc).__name__,
                code=_code(exc),
                unavailable=unavailable(exc),
            )
            return poll, None
        started, t0 = clock.real_now(), time.monotonic()
        processed: int | None = None
        error: str | None = None
        try:
            with metrics.timed_job(duty.name):
                processed = duty.run(ctx)
        except Exception as exc:
            error = type(exc).__name__ + (f": {exc}" if isinstance(exc, jobs.WaveFailed) else "")
            log.error(
                "duty.failed",
                duty=duty.name,
                error_type=type(exc).__name__,
                code=_code(exc),
                unavailable=unavailable(exc),
            )
        seconds = time.monotonic() - t0
        if processed or error:
            log.info(
                "duty.ran",
                duty=duty.name,
                processed=processed,
                seconds=round(seconds, 3),
                outcome=("error" if error else "ok"),
            )
        self._record(duty, started=started, processed=processed, error=error, interval=interval)
        if duty.shared and processed and not force_shared:
            return 0.0, processed  # more may be waiting: go again at once
        if duty.shared:  # no claim gates a shared duty: its own loop keeps the cadence
            return (min(poll, interval.total_seconds()) if error else interval.total_seconds()), processed
        return min(poll, interval.total_seconds()), processed  # the claim says when it is due again

    def _record(
        self, duty: jobs.Duty, *, started: dt.datetime, processed: int | None, error: str | None, interval: dt.timedelta
    ) -> None:
        if duty.shared and not processed and not error:
            last = self._last_idle_record.get(duty.name)
            if last is not None and time.monotonic() - last < IDLE_RECORD_SECONDS:
                return
            self._last_idle_record[duty.name] = time.monotonic()
        for attempt in range(3):
            try:
                with session_scope() as session:
                    held = scheduler.finish(
                        session,
                        duty.name,
                        self.id,
                        now=clock.real_now(),
                        interval=interval,
                        outcome="error" if error else "ok",
                        processed=processed,
                        error=error,
                        exclusive=not duty.shared,
                        started_at=started,
                    )
                if not held:
                    log.warning("duty.lease_lost", duty=duty.name)
                return
            except Exception as exc:
                log.warning("duty.record_failed", duty=duty.name, error_type=type(exc).__name__, attempt=attempt)
                if self.stop_event.wait(1.0):
                    return
