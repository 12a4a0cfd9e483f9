"""Signed webhooks (SPEC R-61): the outbox delivered to registered endpoints, at least once, in
order per shop, signed as the Standard Webhooks spec says (webhook-id, webhook-timestamp,
webhook-signature = "v1," + base64 HMAC-SHA256 over "{id}.{timestamp}.{body}").

Delivery times (due, lease, backoff) run on the real clock, not the sandbox clock: a set sandbox
clock stands still, and retries must still come due."""

import base64
import datetime as dt
import hashlib
import hmac
import json
import random
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
import structlog
from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from guanhao import errors, pii
from guanhao.db import Session
from guanhao.events.models import OutboxEvent
from guanhao.events.types import KNOWN as event_types_known
from guanhao.i18n import _l
from guanhao.policy import Policy
from guanhao.webhooks import targets
from guanhao.webhooks.models import WebhookDelivery, WebhookEndpoint

log = structlog.get_logger("guanhao.webhooks")


# ---------------------------------------------------------------- signing


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """R-61: "v1," + base64 HMAC-SHA256 over "{id}.{timestamp}.{body}" (Standard Webhooks)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: int, tolerance: int = 300) -> bool:
    """What a receiver does (R-61); used by the tests and offered to integrators. A request missing a header,
    or with a timestamp that is not an integer, is refused rather than raising."""
    msg_id, ts, signatures = (headers.get(k) for k in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and ts and signatures):
        return False
    try:
        timestamp = int(ts)
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected.encode(), s.encode()) for s in signatures.split())


# ---------------------------------------------------------------- endpoints


def create_endpoint(
    session: Session, *, target: targets.Target, event_types: list[str] | None, now: dt.datetime
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint for a URL that passed `targets.check` (done before the transaction: DNS can be slow),
    subscribed to known event types only."""
    unknown = sorted(set(event_types or ()) - event_types_known)
    if unknown:
        raise errors.ValidationFailed(
            _l("Unknown event types: {types}", types=", ".join(unknown)),
            errors=[{"field": "event_types", "type": "unknown_event_type", "message": "unknown event type"}],
        )
    secret = new_secret()
    latest = session.scalar(select(func.max(OutboxEvent.seq))) or 0
    endpoint = WebhookEndpoint(
        id="whe_" + uuid.uuid4().hex[:16],
        url=target.url,
        event_types=event_types,
        secret_enc=pii.vault().encrypt(secret, context="webhook_secret"),
        active=True,
        cursor_seq=latest,
        created_at=now,
    )
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def endpoints(session: Session, *, after: tuple[dt.datetime, str] | None, limit: int) -> list[WebhookEndpoint]:
    """Active endpoints in creation order (time, then id), after a cursor's (created_at, id)."""
    stmt = (
        select(WebhookEndpoint)
        .where(WebhookEndpoint.active.is_(True))
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        .limit(limit)
    )
    if after is not None:
        at, endpoint_id = after
        stmt = stmt.where(
            or_(
                WebhookEndpoint.created_at > at,
                and_(WebhookEndpoint.created_at == at, WebhookEndpoint.id > endpoint_id),
            )
        )
    return list(session.scalars(stmt))


def deliveries(session: Session, *, status: str | None, before_seq: int | None, limit: int) -> list[WebhookDelivery]:
    """Deliveries newest first, before a cursor's sequence number."""
    stmt = select(WebhookDelivery).order_by(WebhookDelivery.seq.desc()).limit(limit)
    if status:
        stmt = stmt.where(WebhookDelivery.status == status)
    if before_seq is not None:
        stmt = stmt.where(WebhookDelivery.seq < before_seq)
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class Health:
    """How deliveries to one endpoint fare (R-61): counts by state, the last success, the latest failure."""

    pending: int = 0
    delivered: int = 0
    dead: int = 0
    retrying: int = 0  # pending deliveries that failed at least once
    last_delivered_at: dt.datetime | None = None
    last_error: str | None = None
    last_status: int | None = None

    @property
    def state(self) -> str:
        """healthy (nothing failing), retrying (failures being retried), failing (dead letters)."""
        if self.dead:
            return "failing"
        return "retrying" if self.retrying else "healthy"


def delivery_health(session: Session, endpoint_ids: list[str]) -> dict[str, Health]:
    """R-61: for each endpoint, its deliveries by state, how many are being retried, when one last arrived,
    and the error of its latest failed attempt; every endpoint asked for is present."""
    counts: dict[str, dict] = {e: {} for e in endpoint_ids}
    if not endpoint_ids:
        return {}
    rows = session.execute(
        select(
            WebhookDelivery.endpoint_id,
            WebhookDelivery.status,
            func.count(),
            func.sum(case((WebhookDelivery.attempts > 0, 1), else_=0)),
            func.max(WebhookDelivery.delivered_at),
        )
        .where(WebhookDelivery.endpoint_id.in_(endpoint_ids))
        .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.status)
    ).all()
    for endpoint_id, status, count, tried, delivered_at in rows:
        figures = counts[endpoint_id]
        figures[status] = count
        if status == "pending":
            figures["retrying"] = int(tried or 0)
        if status == "delivered":
            figures["last_delivered_at"] = delivered_at
    latest = (
        select(WebhookDelivery.endpoint_id, func.max(WebhookDelivery.seq).label("seq"))
        .where(WebhookDelivery.endpoint_id.in_(endpoint_ids), WebhookDelivery.last_error.is_not(None))
        .group_by(WebhookDelivery.endpoint_id)
        .subquery()
    )
    for endpoint_id, error, status in session.execute(
        select(WebhookDelivery.endpoint_id, WebhookDelivery.last_error, WebhookDelivery.last_status).join(
            latest, WebhookDelivery.seq == latest.c.seq
        )
    ):
        counts[endpoint_id].update(last_error=error, last_status=status)
    return {e: Health(**figures) for e, figures in counts.items()}


def remove_endpoint(session: Session, endpoint_id: str, *, now: dt.datetime) -> None:
    """R-61: a removed endpoint gets nothing more: what was still queued for it is dead-lettered, visibly."""
    endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
    if endpoint is None or not endpoint.active:
        raise errors.NotFound(_l("Webhook endpoint {endpoint_id} not found", endpoint_id=endpoint_id))
    endpoint.active = False
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
        .values(status="dead", leased_until=None, last_error="endpoint removed", next_attempt_at=now)
    )
    session.flush()


# ---------------------------------------------------------------- the dispatcher


def fan_out(session: Session, *, now: dt.datetime, batch: int = 500) -> int:
    """R-61: queues a delivery per new outbox event and endpoint. The endpoint row lock keeps two
    dispatchers from queuing the same range; the unique (endpoint, event) is the backstop."""
    queued = 0
    for endpoint in session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.active.is_(True)).with_for_update(skip_locked=True)
    ).all():
        rows = session.scalars(
            select(OutboxEvent).where(OutboxEvent.seq > endpoint.cursor_seq).order_by(OutboxEvent.seq).limit(batch)
        ).all()
        for event in rows:
            if endpoint.event_types is None or event.type in endpoint.event_types:
                session.add(
                    WebhookDelivery(
                        endpoint_id=endpoint.id,
                        event_seq=event.seq,
                        shop_key=event.shop_id or "",
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                    )
                )
                queued += 1
        if rows:
            endpoint.cursor_seq = rows[-1].seq
    session.flush()
    return queued


def claim(session: Session, *, now: dt.datetime, lease: dt.timedelta, limit: int = 50) -> list[int]:
    """R-61: due deliveries at the head of their (endpoint, shop) lane — a shop's events go in order — leased to
    this worker."""
    earlier = aliased(WebhookDelivery)
    head_of_lane = ~exists().where(
        and_(
            earlier.endpoint_id == WebhookDelivery.endpoint_id,
            earlier.shop_key == WebhookDelivery.shop_key,
            earlier.status == "pending",
            earlier.event_seq < WebhookDelivery.event_seq,
        )
    )
    endpoint_active = exists().where(
        WebhookEndpoint.id == WebhookDelivery.endpoint_id, WebhookEndpoint.active.is_(True)
    )
    stmt = (
        select(WebhookDelivery)
        .where(
            WebhookDelivery.status == "pending",
            endpoint_active,
            WebhookDelivery.next_attempt_at <= now,
            (WebhookDelivery.leased_until.is_(None)) | (WebhookDelivery.leased_until < now),
            head_of_lane,
        )
        .order_by(WebhookDelivery.event_seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = session.scalars(stmt).all()
    for d in claimed:
        d.leased_until = now + lease
    session.flush()
    return [d.seq for d in claimed]


@dataclass(frozen=True)
class Attempt:
    delivery_seq: int
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def payload(event: OutboxEvent) -> bytes:
    body = {
        "type": event.type,
        "timestamp": event.at.isoformat(),
        "data": {**event.data, "event_id": event.event_id, "seq": event.seq},
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Message:
    delivery_seq: int
    url: str
    headers: dict[str, str]
    body: bytes


def message(
    session: Session, delivery_seq: int, *, now: dt.datetime, lease_until: dt.datetime, budget: dt.timedelta
) -> Message | None:
    """R-61: the signed request for a delivery this worker claimed, or None when it may no longer send it: the
    lease (its expiry is the worker's token) was taken over, or too little of it is left for one send, in
    which case it is handed back at once. So no two workers ever send one delivery at the same time.
    `now` is the real time: receivers check the timestamp against their own clock."""
    delivery = session.get_one(WebhookDelivery, delivery_seq, with_for_update=True)
    if delivery.status != "pending" or delivery.leased_until != lease_until:
        return None
    if lease_until - now < budget:
        delivery.leased_until = None
        session.flush()
        return None
    endpoint = session.get_one(WebhookEndpoint, delivery.endpoint_id)
    event = session.get_one(OutboxEvent, delivery.event_seq)
    body = payload(event)
    ts = int(now.timestamp())
    secret = pii.vault().decrypt(endpoint.secret_enc, context="webhook_secret")
    headers = {
        "content-type": "application/json",
        "webhook-id": event.event_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, event.event_id, ts, body),
    }
    return Message(delivery_seq, endpoint.url, headers, body)


def send(msg: Message, client: httpx.Client, *, timeout: float) -> Attempt:
    """The HTTP call, outside any transaction: a slow receiver must not hold a database lock. The client
    (targets.client) refuses, after DNS, a URL or an address webhooks may not reach: a failed attempt."""
    try:
        response = client.post(msg.url, content=msg.body, headers=msg.headers, timeout=timeout)
        return Attempt(
            msg.delivery_seq, response.status_code, None if response.is_success else f"HTTP {response.status_code}"
        )
    except targets.Refused as exc:
        return Attempt(msg.delivery_seq, None, f"refused: {exc.reason.render('en')}"[:500])
    except httpx.HTTPError as exc:
        return Attempt(msg.delivery_seq, None, f"{type(exc).__name__}")


def settle(
    session: Session,
    attempt: Attempt,
    policy: Policy,
    *,
    now: dt.datetime,
    lease_until: dt.datetime | None = None,
    jitter: Callable[[], float] = random.random,
) -> str:
    """R-61: the outcome of an attempt: delivered; or retried with backoff; or dead-lettered after the policy's
    max_attempts. A late outcome never undoes a delivery, nor decides for the worker that holds it now."""
    delivery = session.get_one(WebhookDelivery, attempt.delivery_seq, with_for_update=True)
    if delivery.status != "pending":
        # Delivered by another attempt, or the endpoint was removed meanwhile: that outcome stands.
        return delivery.status
    if not attempt.ok and lease_until is not None and delivery.leased_until not in (lease_until, None):
        # Another worker holds the delivery now; its attempt decides.
        return delivery.status
    delivery.attempts += 1
    delivery.leased_until = None
    delivery.last_status = attempt.status
    delivery.last_error = attempt.error
    if attempt.ok:
        delivery.status, delivery.delivered_at = "delivered", now
    elif delivery.attempts >= policy.webhooks.max_attempts:
        delivery.status = "dead"
        log.warning(
            "webhook.dead_letter", delivery=delivery.seq, endpoint=delivery.endpoint_id, attempts=delivery.attempts
        )
    else:
        delivery.next_attempt_at = now + backoff(policy, delivery.attempts, jitter)
    session.flush()
    return delivery.status


def backoff(policy: Policy, attempts: int, jitter: Callable[[], float] = random.random) -> dt.timedelta:
    """R-61: exponential with full jitter on the upper half: base·2^(n-1), capped, times [0.5, 1)."""
    w = policy.webhooks
    ceiling = min(w.backoff_base_seconds * 2 ** (attempts - 1), w.backoff_max_seconds)
    return dt.timedelta(seconds=ceiling * (0.5 + jitter() / 2))


def redeliver(session: Session, delivery_seq: int, *, now: dt.datetime) -> WebhookDelivery:
    """R-61: a dead-lettered delivery is due again now, attempts from zero."""
    delivery = session.get(WebhookDelivery, delivery_seq, with_for_update=True)
    if delivery is None:
        raise errors.NotFound(_l("Delivery {delivery_id} not found", delivery_id=delivery_seq))
    if delivery.status != "dead":
        raise errors.InvalidTransition(_l("Only dead-lettered deliveries can be sent again"))
    if not session.get_one(WebhookEndpoint, delivery.endpoint_id).active:
        raise errors.InvalidTransition(_l("The delivery's webhook endpoint was removed"))
    delivery.status, delivery.attempts, delivery.next_attempt_at, delivery.leased_until = "pending", 0, now, None
    session.flush()
    return delivery
