"""A long writer never turns readers into errors (issue 8, item 6; API.md: "A database that cannot be
reached or is busy past the request's budget → 503 SERVICE_UNAVAILABLE", with Retry-After).

A write transaction is held open from another connection — on SQLite it holds the database's one
write lock, on PostgreSQL the row it changed — while reads and writes are attempted over HTTP: the
reads answer at once (SQLite: WAL and deferred read transactions, never BEGIN IMMEDIATE), a write
that needs the held lock gives up after its budget with 503 problem+json and Retry-After (never a
500), and once the writer is gone the same write goes through.
"""

import sqlite3
import threading

import pytest
import sqlalchemy as sa

from guanhao import db
from tests.factories import Api

RETRY_AFTER = "3"


@pytest.fixture
def budget(database, monkeypatch):
    monkeypatch.setenv("GUANHAO_DB_BUSY_TIMEOUT", "0.3")
    monkeypatch.setenv("GUANHAO_RETRY_AFTER", RETRY_AFTER)
    db.reset()


class HeldWrite:
    """An open write transaction on another connection: the subject's row changed, not committed."""

    def __init__(self, url: str, subject_id: str):
        self.engine = sa.create_engine(url)
        self.conn = self.engine.connect()
        self.conn.execute(
            sa.text("UPDATE subjects SET name = 'held by a long writer' WHERE id = :id"), {"id": subject_id}
        )
        self.released = threading.Event()

    def release(self) -> None:
        if not self.released.is_set():
            self.released.set()
            self.conn.rollback()
            self.conn.close()
            self.engine.dispose()


def _in_thread(call, held: HeldWrite):
    """Runs `call` (a request that may wait for the held lock) in a thread. Without a budget it would wait
    for ever: after a minute the writer lets go, so that the test fails instead of hanging."""
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", call()))
    thread.start()
    thread.join(60)
    if thread.is_alive():
        held.release()
        thread.join()
    return out["r"]


def _assert_busy(r) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == RETRY_AFTER
    body = r.json()
    assert body["code"] == "SERVICE_UNAVAILABLE"
    assert body["status"] == 503


def test_reads_go_on_while_a_long_write_holds_the_lock_and_a_blocked_write_gets_503(budget, api, database):
    subject_id, shop_id, account_id = api.ready_shop()
    merchant = api.merchant(subject_id)
    body = {"name": "新名字有限公司", "subject_type": "enterprise", "cross_border": False, "license_valid_until": None}
    held = HeldWrite(database, subject_id)
    try:
        reads = [
            api.client.get(f"/api/v1/subjects/{subject_id}/quotas", headers=merchant),
            api.client.get(f"/api/v1/shops/{shop_id}/official-account", headers=merchant),
            api.client.get(f"/api/v1/shops/{shop_id}/eligibility", headers=api.admin),
            api.client.get(f"/api/v1/accounts/{account_id}/posting-quota", headers=api.admin),
            api.client.get("/api/v1/admin/events", headers=api.admin),
            api.client.get("/api/v1/health"),
            api.client.get("/readyz"),
            api.client.get("/metrics"),
        ]
        assert [r.status_code for r in reads] == [200] * len(reads), [r.text for r in reads if r.status_code != 200]

        blocked = _in_thread(
            lambda: api.client.put(f"/api/v1/subjects/{subject_id}", json=body, headers=api.admin), held
        )
        _assert_busy(blocked)
        # The same through the Idempotency-Key path, whose claim is a unit of work of its own.
        keyed = {"Idempotency-Key": "busy-1"} | api.admin
        blocked = _in_thread(lambda: api.client.put(f"/api/v1/subjects/{subject_id}", json=body, headers=keyed), held)
        _assert_busy(blocked)
    finally:
        held.release()

    r = api.client.put(f"/api/v1/subjects/{subject_id}", json=body, headers=api.admin)
    assert r.status_code == 200, r.text
    # A refused attempt does not hold its key: the retry runs, it is not "in flight".
    r = api.client.put(f"/api/v1/subjects/{subject_id}", json=body, headers=keyed)
    assert r.status_code == 200, r.text
    assert r.headers.get("idempotent-replayed") is None
    assert api.client.get(f"/api/v1/subjects/{subject_id}/quotas", headers=merchant).status_code == 200


def test_a_reading_unit_never_takes_the_write_lock(budget, api, database):
    subject_id = api.subject()
    held = HeldWrite(database, subject_id)
    try:
        with db.session_scope(write=False) as session:
            assert session.scalar(sa.text("SELECT name FROM subjects WHERE id = :id"), {"id": subject_id})
        with pytest.raises(sa.exc.OperationalError) as refused, db.session_scope(lock_timeout=0.3) as session:
            session.execute(sa.text("UPDATE subjects SET name = 'x' WHERE id = :id"), {"id": subject_id})
        assert db.unavailable(refused.value)
    finally:
        held.release()
    with db.session_scope() as session:
        session.execute(sa.text("UPDATE subjects SET name = 'x' WHERE id = :id"), {"id": subject_id})


def test_unavailable_knows_busy_and_unreachable_from_bugs():
    locked = sa.exc.OperationalError("BEGIN IMMEDIATE", {}, _sqlite_error("database is locked", 5))
    cannot_open = sa.exc.OperationalError("connect", {}, _sqlite_error("unable to open database file", 14))
    syntax = sa.exc.OperationalError("SELEC 1", {}, _sqlite_error('near "SELEC": syntax error', 1))
    duplicate = sa.exc.IntegrityError("INSERT", {}, _sqlite_error("UNIQUE constraint failed", 2067))
    assert db.unavailable(locked)
    assert db.unavailable(cannot_open)
    assert db.unavailable(sa.exc.TimeoutError("QueuePool limit reached"))
    assert not db.unavailable(syntax)
    assert not db.unavailable(duplicate)
    assert not db.unavailable(ValueError("not a database error"))


def test_unavailable_knows_postgresql_going_away_and_lock_timeouts():
    psycopg = pytest.importorskip("psycopg")

    class Refused(psycopg.OperationalError):
        sqlstate = None

    class AdminShutdown(psycopg.OperationalError):
        sqlstate = "57P01"

    class LockTimeout(psycopg.OperationalError):
        sqlstate = "55P03"

    class Undefined(psycopg.ProgrammingError):
        sqlstate = "42P01"

    assert db.unavailable(sa.exc.OperationalError("connect", {}, Refused("connection refused")))
    assert db.unavailable(sa.exc.OperationalError("SELECT 1", {}, AdminShutdown("terminating connection")))
    assert db.unavailable(sa.exc.OperationalError("UPDATE", {}, LockTimeout("canceling statement")))
    assert not db.unavailable(sa.exc.ProgrammingError("SELECT", {}, Undefined("relation does not exist")))


def _sqlite_error(message: str, code: int) -> sqlite3.Error:
    error = sqlite3.OperationalError(message) if code != 2067 else sqlite3.IntegrityError(message)
    error.sqlite_errorcode = code
    return error


def test_a_request_whose_database_cannot_be_opened_gets_503_not_500(tmp_path, monkeypatch, admin_headers):
    from fastapi.testclient import TestClient

    from guanhao.app import create_app

    monkeypatch.setenv("GUANHAO_DATABASE_URL", f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'db.sqlite3'}")
    db.reset()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        api = Api(client, admin_headers)
        r = api.client.get("/api/v1/admin/events", headers=api.admin)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "SERVICE_UNAVAILABLE"
        assert r.headers["retry-after"]
        r = api.client.put("/api/v1/subjects/s-1", json={"name": "x", "subject_type": "enterprise"}, headers=api.admin)
        assert r.status_code == 503, r.text
