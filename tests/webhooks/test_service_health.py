"""Delivery health per endpoint for the staff console (guanhao.webhooks.service.delivery_health, SPEC R-61): counts
by state, retries, the last success and the latest error — one grouped read for every endpoint listed."""

from guanhao.db import session_scope
from guanhao.webhooks import service as webhooks
from guanhao.webhooks.models import WebhookDelivery
from tests.webhooks.test_service import emit, endpoint, fan_out, settle


def test_r61_each_endpoint_says_how_its_deliveries_fare(now, policy):
    with session_scope() as session:
        quiet, _ = endpoint(session)
        busy, _ = endpoint(session)
        idle, _ = endpoint(session, event_types=["operator.changed"])
    emit(now, ("upgrade.submitted", "shop-1"), ("upgrade.submitted", "shop-2"), ("upgrade.succeeded", "shop-3"))
    assert fan_out(now) == 6
    with session_scope() as session:
        busy_rows = [d.seq for d in session.query(WebhookDelivery).filter_by(endpoint_id=busy).order_by("seq")]
        quiet_rows = [d.seq for d in session.query(WebhookDelivery).filter_by(endpoint_id=quiet).order_by("seq")]
    for seq in quiet_rows:
        assert settle(seq, 200, policy, now) == "delivered"
    assert settle(busy_rows[0], 200, policy, now) == "delivered"
    assert settle(busy_rows[1], 503, policy, now) == "pending"
    with session_scope() as session:
        health = webhooks.delivery_health(session, [quiet, busy, idle])
    figures = health[quiet]
    assert (figures.delivered, figures.pending, figures.dead, figures.state) == (3, 0, 0, "healthy")
    assert health[quiet].last_delivered_at == now
    assert (health[busy].delivered, health[busy].pending, health[busy].retrying) == (1, 2, 1)
    assert health[busy].state == "retrying"
    assert (health[busy].last_error, health[busy].last_status) == ("HTTP 503", 503)
    assert health[idle] == webhooks.Health()  # subscribed to nothing that happened
    assert health[idle].state == "healthy"
    with session_scope() as session:
        assert webhooks.delivery_health(session, []) == {}


def test_r61_an_endpoint_with_dead_letters_is_failing(now, policy):
    with session_scope() as session:
        failing, _ = endpoint(session)
    emit(now, ("upgrade.submitted", "shop-1"))
    fan_out(now)
    with session_scope() as session:
        webhooks.remove_endpoint(session, failing, now=now)  # what was queued is dead-lettered
        health = webhooks.delivery_health(session, [failing])[failing]
    assert (health.dead, health.pending, health.state) == (1, 0, "failing")
    assert health.last_error == "endpoint removed"
