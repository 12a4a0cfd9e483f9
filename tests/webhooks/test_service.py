"""Webhook delivery at the service level (guanhao.webhooks.service, SPEC R-61): fan_out, claim with a lease,
the lease checks before a send, settle with backoff and dead-lettering, and the Standard Webhooks signature.
Each step is its own unit of work, as in the worker; times are given, never read."""

import base64
import datetime as dt
import hashlib
import hmac
import json

import pytest
from sqlalchemy import select

from guanhao import errors, pii
from guanhao.db import session_scope
from guanhao.events import service as events
from guanhao.webhooks import service as webhooks
from guanhao.webhooks.models import WebhookDelivery, WebhookEndpoint

LEASE = dt.timedelta(seconds=80)
BUDGET = dt.timedelta(seconds=40)


def endpoint(
    session, *, event_types: list[str] | None = None, url: str = "http://127.0.0.1:9/hooks"
) -> tuple[str, str]:
    """An active endpoint that gets every event from the first on (its id and signing secret)."""
    secret = webhooks.new_secret()
    row = WebhookEndpoint(
        id=f"whe_{len(session.scalars(select(WebhookEndpoint)).all())}",
        url=url,
        event_types=event_types,
        secret_enc=pii.vault().encrypt(secret, context="webhook_secret"),
        active=True,
        cursor_seq=0,
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    session.add(row)
    session.flush()
    return row.id, secret


def emit(now, *specs: tuple[str, str | None]) -> None:
    """Commits one event per (type, shop_id)."""
    with session_scope() as session:
        for type_, shop_id in specs:
            events.emit(session, type_, at=now, shop_id=shop_id, subject_id=None, data={"shop_id": shop_id})


def fan_out(now) -> int:
    with session_scope() as session:
        return webhooks.fan_out(session, now=now)


def claim(now, lease: dt.timedelta = LEASE) -> list[int]:
    with session_scope() as session:
        return webhooks.claim(session, now=now, lease=lease)


def delivery(seq: int) -> WebhookDelivery:
    with session_scope() as session:
        return session.get_one(WebhookDelivery, seq)


def settle(seq: int, status: int | None, policy, now, **kwargs) -> str:
    with session_scope() as session:
        attempt = webhooks.Attempt(seq, status, None if status == 200 else "HTTP 503")
        return webhooks.settle(session, attempt, policy, now=now, jitter=lambda: 0.0, **kwargs)


def event_of(seq: int) -> tuple[str, str]:
    with session_scope() as session:
        d = session.get_one(WebhookDelivery, seq)
        e = events.events_after(session, after_seq=d.event_seq - 1, limit=1)[0]
        return e.type, e.shop_id


# ---------------------------------------------------------------- fan_out and claim


def test_r61_fan_out_queues_each_new_event_once_per_endpoint_that_wants_it(now):
    with session_scope() as session:
        endpoint(session)
        endpoint(session, event_types=["upgrade.succeeded"])
    emit(now, ("upgrade.submitted", "shop-1"), ("upgrade.succeeded", "shop-1"))
    assert fan_out(now) == 3
    assert fan_out(now) == 0
    emit(now, ("upgrade.succeeded", "shop-2"))
    assert fan_out(now) == 2
    with session_scope() as session:
        assert len(session.scalars(select(WebhookDelivery)).all()) == 5


def test_r61_claim_leases_only_the_head_of_each_shops_lane(now):
    with session_scope() as session:
        endpoint(session)
    emit(
        now,
        ("upgrade.submitted", "shop-1"),
        ("upgrade.reviewing", "shop-1"),
        ("upgrade.succeeded", "shop-2"),
        ("upgrade.expired", None),
    )
    fan_out(now)
    claimed = claim(now)
    assert [event_of(seq) for seq in claimed] == [
        ("upgrade.submitted", "shop-1"),
        ("upgrade.succeeded", "shop-2"),
        ("upgrade.expired", None),
    ]
    assert {delivery(seq).leased_until for seq in claimed} == {now + LEASE}
    # Leased: nobody else takes them, nor what waits behind them in their lane.
    assert claim(now + LEASE) == []
    # Once the lease has run out, another worker may.
    assert claim(now + LEASE + dt.timedelta(microseconds=1)) == claimed


def test_r61_a_delivery_is_claimed_only_once_due(now, policy):
    with session_scope() as session:
        endpoint(session)
    emit(now, ("upgrade.submitted", "shop-1"))
    fan_out(now)
    [seq] = claim(now)
    assert settle(seq, 503, policy, now) == "pending"
    due = delivery(seq).next_attempt_at
    assert due == now + dt.timedelta(seconds=policy.webhooks.backoff_base_seconds / 2)
    assert claim(due - dt.timedelta(microseconds=1)) == []
    assert claim(due) == [seq]


def test_r61_a_removed_endpoint_gets_nothing_more(now):
    with session_scope() as session:
        endpoint_id, _ = endpoint(session)
    emit(now, ("upgrade.submitted", "shop-1"))
    fan_out(now)
    with session_scope() as session:
        webhooks.remove_endpoint(session, endpoint_id, actor="admin:test", now=now)
    assert claim(now) == []
    [d] = [delivery(1)]
    assert (d.status, d.last_error) == ("dead", "endpoint removed")
    with session_scope() as session, pytest.raises(errors.InvalidTransition):
        webhooks.redeliver(session, d.seq, actor="admin:test", now=now)


# ---------------------------------------------------------------- the lease checks before a send


def test_r61_a_worker_sends_only_while_a_whole_send_fits_in_its_lease_and_hands_back_the_rest(now):
    with session_scope() as session:
        endpoint(session)
    emit(now, ("upgrade.submitted", "shop-1"))
    fan_out(now)
    [seq] = claim(now)
    lease_until = now + LEASE
    with session_scope() as session:
        assert webhooks.message(session, seq, now=lease_until - BUDGET, lease_until=lease_until, budget=BUDGET)
    late = lease_until - BUDGET + dt.timedelta(microseconds=1)
    with session_scope() as session:
        assert webhooks.message(session, seq, now=late, lease_until=lease_until, budget=BUDGET) is None
    # Handed back at once: another worker need not wait for the lease to run out.
    assert claim(late) == [seq]


def test_r61_a_worker_whose_lease_was_taken_over_leaves_the_new_holders_lease_alone(now):
    with session_scope() as session:
        endpoint(session)
    emit(now, ("upgrade.submitted", "shop-1"))
    fan_out(now)
    [seq] = claim(now)
    first_lease = now + LEASE
    taken_at = first_lease + dt.timedelta(seconds=1)
    assert claim(taken_at) == [seq]  # worker B, while A was slow
    with session_scope() as session:
        # A comes back: not its delivery any more, and it must not hand B's lease back.
        assert webhooks.message(session, seq, now=taken_at, lease_until=first_lease, budget=BUDGET) is None
    assert delivery(seq).leased_until == taken_at + LEASE
    assert claim(taken_at + dt.timedelta(seconds=2)) == [], "a third worker would send it beside B"


def test_r61_the_message_is_the_outbox_event_signed_for_its_endpoint(now):
    with session_scope() as session:
        _, secret = endpoint(session)
    emit(now, ("upgrade.succeeded", "shop-1"))
    fan_out(now)
    [seq] = claim(now)
    with session_scope() as session:
        msg = webhooks.message(session, seq, now=now, lease_until=now + LEASE, budget=BUDGET)
        [event] = events.events_after(session, after_seq=None, limit=1)
    body = json.loads(msg.body)
    assert (body["type"], body["data"]["event_id"], body["data"]["seq"]) == ("upgrade.succeeded", event.event_id, 1)
    assert (msg.headers["webhook-id"], msg.headers["webhook-timestamp"]) == (event.event_id, str(int(now.timestamp())))
    assert webhooks.verify(secret, msg.headers, msg.body, now=int(now.timestamp()))


# ---------------------------------------------------------------- settle and backoff


def test_r61_failures_back_off_and_end_dead_lettered_after_max_attempts(now, policy):
    policy = policy.model_copy(update={"webhooks": policy.webhooks.model_copy(update={"max_attempts": 3})})
    with session_scope() as session:
        endpoint(session)
    emit(now, ("upgrade.submitted", "shop-1"))
    fan_out(now)
    at = now
    for attempt in (1, 2):
        [seq] = claim(at)
        assert settle(seq, 503, policy, at, lease_until=at + LEASE) == "pending"
        d = delivery(seq)
        assert (d.attempts, d.last_status, d.leased_until) == (attempt, 503, None)
        assert d.next_attempt_at == at + webhooks.backoff(policy, attempt, lambda: 0.0)
        at = d.next_attempt_at
    [seq] = claim(at)
    assert settle(seq, 503, policy, at) == "dead"
    with session_scope() as session:
        again = webhooks.redeliver(session, seq, actor="admin:test", now=at)
        assert (again.status, again.attempts) == ("pending", 0)
    [seq] = claim(at)
    assert settle(seq, 200, policy, at) == "delivered"
    assert (delivery(seq).delivered_at, delivery(seq).attempts) == (at, 1)


def test_r61_a_late_failure_does_not_undo_a_delivery_nor_another_workers_attempt(now, policy):
    with session_scope() as session:
        endpoint(session)
    emit(now, ("upgrade.submitted", "shop-1"), ("upgrade.reviewing", "shop-2"))
    fan_out(now)
    first, second = claim(now)
    assert settle(first, 200, policy, now) == "delivered"
    assert settle(first, 503, policy, now) == "delivered"
    assert delivery(first).attempts == 1
    # The second one's lease ran out and worker B holds it now: A's failure does not count.
    taken_at = now + LEASE + dt.timedelta(seconds=1)
    assert claim(taken_at) == [second]
    assert settle(second, 503, policy, taken_at, lease_until=now + LEASE) == "pending"
    d = delivery(second)
    assert (d.attempts, d.leased_until) == (0, taken_at + LEASE)


def test_r61_backoff_doubles_from_the_base_up_to_the_cap_with_jitter_on_the_upper_half(policy):
    w = policy.webhooks
    assert webhooks.backoff(policy, 1, lambda: 0.0) == dt.timedelta(seconds=w.backoff_base_seconds / 2)
    assert webhooks.backoff(policy, 3, lambda: 0.0) == dt.timedelta(seconds=w.backoff_base_seconds * 2)
    assert webhooks.backoff(policy, 3, lambda: 0.5) == dt.timedelta(seconds=w.backoff_base_seconds * 3)
    assert webhooks.backoff(policy, 60, lambda: 0.0) == dt.timedelta(seconds=w.backoff_max_seconds / 2)
    assert webhooks.backoff(policy, 60, lambda: 0.999) < dt.timedelta(seconds=w.backoff_max_seconds)


# ---------------------------------------------------------------- signing


def test_r61_signatures_follow_the_standard_webhooks_scheme():
    secret = webhooks.new_secret()
    body, ts = b'{"type":"upgrade.succeeded"}', 1_773_000_000
    signature = webhooks.sign(secret, "evt_1", ts, body)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"evt_1.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    assert signature == f"v1,{expected}"
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(ts), "webhook-signature": signature}
    assert webhooks.verify(secret, headers, body, now=ts + 300)
    assert not webhooks.verify(secret, headers, body, now=ts + 301)  # stale
    assert not webhooks.verify(secret, headers, body + b" ", now=ts)  # body changed
    assert not webhooks.verify(webhooks.new_secret(), headers, body, now=ts)  # another endpoint's secret
    assert not webhooks.verify(secret, headers | {"webhook-id": "evt_2"}, body, now=ts)
