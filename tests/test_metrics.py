"""Metrics at /metrics (issue 8, item 10): Prometheus text at that path (no redirect), optionally behind
a token; requests by route template and status; committed application transitions by from/to
(SPEC R-20: one audit row per transition, counted once its transaction commits); wave progress and
webhook delivery lag and dead letters read from the database at scrape time; job runs."""

import datetime as dt

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from guanhao import db, metrics
from guanhao.audit import service as audit
from guanhao.webhooks import service as webhooks

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def scrape(client, **kwargs) -> str:
    r = client.get("/metrics", follow_redirects=False, **kwargs)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return r.text


def value(text: str, name: str, **labels) -> float:
    """The sample `name` with exactly these labels (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == {k: str(v) for k, v in labels.items()}:
                return sample.value
    return 0.0


def test_metrics_are_prometheus_text_at_metrics_without_a_redirect(client):
    r = client.get("/metrics", follow_redirects=False)
    assert r.status_code == 200
    assert not r.history
    assert "# TYPE guanhao_http_requests_total counter" in r.text
    assert value(r.text, "guanhao_database_up") == 1


def test_requests_are_counted_and_timed_by_route_template_and_status(client, api):
    shop_id = api.ready_shop()[1]
    route = "/api/v1/shops/{shop_id}/official-account"
    before = scrape(client)
    for _ in range(2):
        assert client.get(f"/api/v1/shops/{shop_id}/official-account", headers=api.admin).status_code == 200
    assert client.get("/api/v1/shops/no-such-shop/official-account", headers=api.admin).status_code == 404
    after = scrape(client)

    def delta(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("guanhao_http_requests_total", method="GET", route=route, status=200) == 2
    assert delta("guanhao_http_requests_total", method="GET", route=route, status=404) == 1
    assert delta("guanhao_http_request_duration_seconds_count", method="GET", route=route, status=200) == 2
    assert delta("guanhao_http_request_duration_seconds_bucket", method="GET", route=route, status=200, le="+Inf") == 2
    # Labels name the template, never a raw path (ids, capability tokens).
    assert shop_id not in after and "no-such-shop" not in after


def test_transitions_are_counted_by_from_and_to_once_committed(client, api):
    _, shop_a, _ = api.ready_shop()
    _, shop_b, _ = api.ready_shop()
    before = scrape(client)
    api.upgrade(shop_a)
    app_b = api.submit(shop_b).json()["application_id"]
    assert client.post(f"/api/v1/upgrade-applications/{app_b}/withdraw", headers=api.admin).status_code == 200
    assert api.submit(shop_a).status_code == 409  # refused: no transition
    after = scrape(client)

    def delta(frm: str, to: str) -> float:
        return value(after, "guanhao_application_transitions_total", **{"from": frm, "to": to}) - value(
            before, "guanhao_application_transitions_total", **{"from": frm, "to": to}
        )

    assert delta("none", "submitted") == 2
    assert delta("submitted", "reviewing") == 1
    assert delta("reviewing", "succeeded") == 1
    assert delta("submitted", "withdrawn") == 1


def _transition_row(to: str) -> dict:
    return {
        "at": T0,
        "actor": "test",
        "action": f"upgrade.{to}",
        "target_kind": "upgrade_application",
        "target_id": "app-metrics",
        "from_state": "submitted",
        "to_state": to,
    }


def test_a_rolled_back_transition_is_not_counted(database):
    def counted() -> float:
        labels = {"from": "submitted", "to": "expired"}
        return REGISTRY.get_sample_value("guanhao_application_transitions_total", labels) or 0.0

    start = counted()
    with pytest.raises(RuntimeError), db.session_scope() as session:
        audit.record_many(session, [_transition_row("expired")])
        session.flush()
        raise RuntimeError("the unit of work fails after the transition")
    assert counted() == start
    with db.session_scope() as session:
        audit.record_many(session, [_transition_row("expired")])
    assert counted() == start + 1


def test_a_waves_upgrades_are_counted_and_its_progress_read_at_scrape_time(client, api, database):
    for _ in range(2):
        api.ready_shop()
    before = scrape(client)
    wave = api.wave(limit=5)
    assert wave["upgraded"] == 2
    after = scrape(client)
    assert value(after, "guanhao_waves", status="done") == value(before, "guanhao_waves", status="done") + 1
    moved = value(after, "guanhao_application_transitions_total", **{"from": "none", "to": "succeeded"}) - value(
        before, "guanhao_application_transitions_total", **{"from": "none", "to": "succeeded"}
    )
    assert moved == 2

    # A running wave shows its figures (this one is started and not worked, as if its worker were busy).
    from guanhao.policy import get_policy
    from guanhao.upgrades import waves

    with db.session_scope() as session:
        running = waves.start(session, limit=7, min_score=None, policy=get_policy(), actor="test", now=T0).id
    text = scrape(client)
    assert value(text, "guanhao_waves", status="running") == 1
    assert value(text, "guanhao_wave_progress", wave_id=running, figure="limit") == 7
    assert value(text, "guanhao_wave_progress", wave_id=running, figure="scanned") == 0
    assert value(text, "guanhao_wave_progress", wave_id=wave["wave_id"], figure="limit") == 0  # done: not listed


def test_webhook_delivery_lag_and_dead_letters_are_read_at_scrape_time(client, api, engine):
    r = client.post("/api/v1/admin/webhook-endpoints", json={"url": "http://127.0.0.1:9/hooks"}, headers=api.admin)
    assert r.status_code == 201, r.text
    api.set_clock(T0)
    _, shop_id, _ = api.ready_shop()
    assert api.submit(shop_id).status_code == 201  # two events: submitted, confirmation_requested
    with db.session_scope() as session:
        queued = webhooks.fan_out(session, now=T0)
    assert queued == 2
    api.set_clock(T0 + dt.timedelta(seconds=90))
    text = scrape(client)
    assert value(text, "guanhao_webhook_deliveries_pending") == 2
    assert value(text, "guanhao_webhook_delivery_lag_seconds") == 90
    assert value(text, "guanhao_webhook_dead_letters") == 0
    assert value(text, "guanhao_webhook_fanout_backlog_events") == 0

    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE webhook_deliveries SET status = 'dead' WHERE event_seq = (SELECT min(seq) FROM outbox_events)"
            )
        )
    assert api.submit(api.ready_shop()[1]).status_code == 201  # two more events, not yet fanned out
    text = scrape(client)
    assert value(text, "guanhao_webhook_dead_letters") == 1
    assert value(text, "guanhao_webhook_deliveries_pending") == 1
    assert value(text, "guanhao_webhook_fanout_backlog_events") == 2


def test_job_runs_are_counted_by_job_and_outcome(client, api):
    labels = {"job": "expire-confirmations", "outcome": "ok"}
    before = scrape(client)
    r = client.post("/api/v1/admin/jobs/expire-confirmations/run", headers=api.admin)
    assert r.status_code == 200, r.text
    with pytest.raises(ValueError), metrics.timed_job("a-future-duty"):
        raise ValueError("the duty failed")
    after = scrape(client)
    assert value(after, "guanhao_job_runs_total", **labels) == value(before, "guanhao_job_runs_total", **labels) + 1
    assert value(after, "guanhao_job_runs_total", job="a-future-duty", outcome="error") >= 1
    assert value(after, "guanhao_job_duration_seconds_count", job="expire-confirmations") >= 1


def test_metrics_behind_a_token_when_one_is_set(client, monkeypatch):
    monkeypatch.setenv("GUANHAO_METRICS_TOKEN", "metrics-secret-0123456789")
    db.reset()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic metrics-secret-0123456789"}):
        r = client.get("/metrics", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["code"] == "UNAUTHENTICATED"
    scrape(client, headers={"Authorization": "bearer metrics-secret-0123456789"})


def test_a_scrape_answers_when_the_database_does_not(tmp_path, monkeypatch):
    from guanhao.app import create_app

    monkeypatch.setenv("GUANHAO_DATABASE_URL", f"sqlite:///{tmp_path / 'missing' / 'db.sqlite3'}")
    db.reset()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        text = scrape(client)
    assert value(text, "guanhao_database_up") == 0
    assert "guanhao_http_requests_total" in text
