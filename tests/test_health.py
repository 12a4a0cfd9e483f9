"""Health (issue 8, item 9; API.md "Running"): `/healthz` says the process is alive without asking the
database; `/readyz` — and `/api/v1/health`, which used to say ok while every request failed — answers
200 only when the database is reachable and its schema is at this release's revision, else 503
problem+json saying what is wrong."""

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from guanhao import db, errors, health, migrate


def _not_ready(r, **checks) -> dict:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1
    body = r.json()
    assert body["code"] == "SERVICE_UNAVAILABLE"
    for key, value in checks.items():
        assert body["checks"][key] == value, body
    return body


def test_ready_when_the_database_answers_at_the_current_schema(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["schema_revision"] == migrate.head()
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["database"] == "ok"


def test_an_unreachable_database_is_not_ready_but_the_process_is_alive(tmp_path, monkeypatch):
    from guanhao.app import create_app

    monkeypatch.setenv("GUANHAO_DATABASE_URL", f"sqlite:///{tmp_path / 'missing' / 'dir' / 'db.sqlite3'}")
    db.reset()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        _not_ready(client.get("/readyz"), database="unreachable")
        body = _not_ready(client.get("/api/v1/health", headers={"Accept-Language": "en"}), database="unreachable")
        assert body["detail"] == "The database cannot be reached"


def test_a_schema_behind_this_release_is_not_ready(client, engine):
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        body = _not_ready(client.get("/readyz", headers={"Accept-Language": "en"}), database="ok", schema="0001")
        assert body["checks"]["expected_schema"] == migrate.head()
        assert "0001" in body["detail"] and migrate.head() in body["detail"] and "guanhao db upgrade" in body["detail"]
        _not_ready(client.get("/api/v1/health"), schema="0001")
        assert client.get("/healthz").status_code == 200
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :head"), {"head": migrate.head()})
    assert client.get("/readyz").status_code == 200


def test_a_database_never_migrated_is_not_ready(tmp_path, monkeypatch):
    monkeypatch.setenv("GUANHAO_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    db.reset()
    with pytest.raises(errors.ServiceUnavailable) as refused:
        health.check()
    assert refused.value.extra["checks"] == {"database": "ok", "schema": None, "expected_schema": migrate.head()}
    assert "no schema yet" in refused.value.detail.render("en")
