"""Prometheus metrics, with prometheus-client: the figures and what a scrape reads (`guanhao.metrics_api`
serves them at `GET /metrics` and counts the requests).

Two kinds of figures:
- counted by the processes that see them happen: HTTP requests (count and latency by method, route
  template and status), committed application transitions (from the audit rows written at commit),
  job runs (`job_run`, for the jobs API, the CLI and workers). Under `guanhao serve --workers N`
  prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set up by `serve`) adds up every
  process, so whichever process answers a scrape reports the same totals.
- read from the database at scrape time, the same in every process: waves, webhook deliveries.
"""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from guanhao import clock
from guanhao.db import Session, session_scope
from guanhao.events.models import OutboxEvent
from guanhao.upgrades.models import Wave
from guanhao.webhooks.models import WebhookDelivery, WebhookEndpoint

log = structlog.get_logger("guanhao.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "guanhao_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "guanhao_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TRANSITIONS = Counter(
    "guanhao_application_transitions",
    "Upgrade application state changes committed, by from and to state (from is none for a new application)",
    ["from", "to"],
)
JOB_RUNS = Counter("guanhao_job_runs", "Background job runs, by job and outcome (ok, error)", ["job", "outcome"])
JOB_DURATION = Histogram(
    "guanhao_job_duration_seconds",
    "Time a background job run took, by job",
    ["job"],
    buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800),
)


# ---------------------------------------------------------------- counted where it happens


@Session.observes_commit("audit")
def _count_transitions(rows: list[dict]) -> None:
    """R-20: every transition is one audit row (target upgrade_application, from → to), written in the
    transaction that made it; counted once that transaction committed — waves' bulk upgrades too."""
    for row in rows:
        if row["target_kind"] == "upgrade_application" and row["to_state"] and row["from_state"] != row["to_state"]:
            TRANSITIONS.labels(row["from_state"] or "none", row["to_state"]).inc()


def job_run(job: str, *, outcome: str, seconds: float) -> None:
    """For whatever runs a background duty (jobs API, CLI, workers): one run of `job` ended."""
    JOB_RUNS.labels(job, outcome).inc()
    JOB_DURATION.labels(job).observe(seconds)


@contextmanager
def timed_job(job: str) -> Iterator[None]:
    """Counts the block as one run of `job`: outcome error when it raises, else ok."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        job_run(job, outcome=outcome, seconds=time.perf_counter() - started)


# ---------------------------------------------------------------- read from the database at scrape time

_WAVE_STATES = ("running", "done", "failed")


class DatabaseFigures(Collector):
    def collect(self):
        up = GaugeMetricFamily("guanhao_database_up", "1 when the database answered this scrape, else 0")
        try:
            with session_scope(write=False) as session:
                families = list(_figures(session))
        except Exception as exc:
            log.warning("metrics.database_unavailable", error_type=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def _figures(session: Session) -> Iterator[GaugeMetricFamily]:
    now = clock.now(session)

    by_status = dict(session.execute(select(Wave.status, func.count()).group_by(Wave.status)).all())
    waves = GaugeMetricFamily("guanhao_waves", "Auto-upgrade waves by status", labels=["status"])
    for state in _WAVE_STATES:
        waves.add_metric([state], by_status.get(state, 0))
    yield waves
    progress = GaugeMetricFamily(
        "guanhao_wave_progress",
        "Running auto-upgrade waves: shops scanned, upgraded, skipped, and the upgrade limit",
        labels=["wave_id", "figure"],
    )
    for w in session.scalars(select(Wave).where(Wave.status == "running").order_by(Wave.created_at)):
        for figure, value in (("scanned", w.scanned), ("upgraded", w.upgraded), ("skipped", w.skipped)):
            progress.add_metric([w.id, figure], value)
        progress.add_metric([w.id, "limit"], w.limit)
    yield progress

    pending = session.scalar(select(func.count()).where(WebhookDelivery.status == "pending")) or 0
    dead = session.scalar(select(func.count()).where(WebhookDelivery.status == "dead")) or 0
    oldest_seq = select(func.min(WebhookDelivery.event_seq)).where(WebhookDelivery.status == "pending")
    oldest_at = session.scalar(select(OutboxEvent.at).where(OutboxEvent.seq == oldest_seq.scalar_subquery()))
    last_seq = session.scalar(select(func.max(OutboxEvent.seq))) or 0
    fanned = session.scalar(select(func.min(WebhookEndpoint.cursor_seq)).where(WebhookEndpoint.active.is_(True)))
    yield GaugeMetricFamily(
        "guanhao_webhook_deliveries_pending", "Webhook deliveries not yet delivered nor dead", value=pending
    )
    yield GaugeMetricFamily(
        "guanhao_webhook_dead_letters", "Webhook deliveries given up after the last attempt (dead letters)", value=dead
    )
    yield GaugeMetricFamily(
        "guanhao_webhook_delivery_lag_seconds",
        "Age of the oldest event still waiting for delivery (0 when none waits)",
        value=max(0.0, (now - oldest_at).total_seconds()) if oldest_at is not None else 0.0,
    )
    yield GaugeMetricFamily(
        "guanhao_webhook_fanout_backlog_events",
        "Outbox events not yet fanned out to every active webhook endpoint",
        value=max(0, last_seq - fanned) if fanned is not None else 0,
    )


# ---------------------------------------------------------------- a scrape


class _ThisProcess(Collector):
    def collect(self):
        yield from REGISTRY.collect()


def exposition(accept: str = "") -> tuple[bytes, str]:
    """The scrape's body and content type: Prometheus text, or OpenMetrics when the scraper asks for it."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseFigures())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
