"""Webhook delivery rounds: the `deliver-webhooks` duty of every worker (guanhao.jobs), and `guanhao events
deliver` on its own."""

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import structlog

from guanhao.clock import real_now
from guanhao.db import session_scope
from guanhao.policy import Policy
from guanhao.settings import get_settings
from guanhao.webhooks import service, targets

log = structlog.get_logger("guanhao.webhooks")


@dataclass
class Tally:
    queued: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    by_status: dict = field(default_factory=dict)

    def add(self, other: "Tally") -> None:
        self.queued += other.queued
        self.delivered += other.delivered
        self.retrying += other.retrying
        self.dead += other.dead


def run_once(policy: Policy, client: httpx.Client, *, clock: Callable[[], dt.datetime] = real_now) -> Tally:
    """One round: fan out, claim, send what the lease still covers, settle (R-61). Delivery times run on
    the real clock (`clock`, which tests replace with one they move by hand)."""
    tally = Tally()
    w = policy.webhooks
    with session_scope() as session:
        tally.queued = service.fan_out(session, now=clock())
    # One send may take each of httpx's connect, write, read and pool timeouts; the lease covers two sends,
    # and a claimed delivery is only sent while one whole send still fits in the lease.
    budget = dt.timedelta(seconds=w.timeout_seconds * 4)
    lease = 2 * budget
    now = clock()
    with session_scope() as session:
        seqs = service.claim(session, now=now, lease=lease)
    lease_until = now + lease
    for seq in seqs:
        with session_scope() as session:
            msg = service.message(session, seq, now=clock(), lease_until=lease_until, budget=budget)
        if msg is None:
            continue
        attempt = service.send(msg, client, timeout=w.timeout_seconds)
        with session_scope() as session:
            outcome = service.settle(session, attempt, policy, now=clock(), lease_until=lease_until)
        if outcome == "delivered":
            tally.delivered += 1
        elif outcome == "dead":
            tally.dead += 1
        else:
            tally.retrying += 1
    return tally


def run(policy: Policy, stop: threading.Event, *, interval: float = 1.0) -> Tally:
    total = Tally()
    with targets.client(sandbox=get_settings().sandbox) as client:
        while not stop.is_set():
            try:
                tally = run_once(policy, client)
            except Exception as exc:  # keep the worker alive; the next round retries
                log.error("webhook.worker_error", error_type=type(exc).__name__)
                tally = Tally()
            total.add(tally)
            if not (tally.queued or tally.delivered or tally.retrying or tally.dead):
                stop.wait(interval)
    return total


def start_thread(policy: Policy, *, interval: float = 1.0) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(
        target=run, args=(policy, stop), kwargs={"interval": interval}, daemon=True, name="guanhao-webhooks"
    )
    thread.start()
    return thread, stop
