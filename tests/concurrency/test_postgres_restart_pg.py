"""PostgreSQL restarted under load (issue 8, item 7; API.md: a database that cannot be reached → 503
SERVICE_UNAVAILABLE with Retry-After; SPEC R-20/R-60/R-61: a transition, its audit row and its event
are one transaction).

The test runs a PostgreSQL server of its own — `initdb` into a temporary directory, on a free port,
never the shared instance — and a real `guanhao serve` (with the webhook delivery worker) against it.
Submits stream in; a few are held in flight at the worst moment, after their rows are written and
before their commit (the commit-order lock is held from another connection), and the server is
stopped under them. Those requests and every request while the server is down get 503 problem+json
with Retry-After, never a 500; /healthz stays 200 and /readyz says 503. The server comes back and the
same service process — not restarted — serves again from its next request on (pool pre-ping), and
its delivery worker delivers every event. Then SQL checks that nothing is half-written: every
application has its audit row and its events, no audit row or event without its application, and
the audit chain verifies.
"""

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from guanhao import migrate
from guanhao.db import COMMIT_ORDER_LOCK, make_engine
from tests.conftest import ADMIN_TOKEN, ROOT
from tests.factories import Api
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.postgres

GUANHAO = ROOT / ".venv" / "bin" / "guanhao"
RETRY_AFTER = "2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(what: str, condition, timeout: float = 60.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


class PrivatePostgres:
    """A throwaway PostgreSQL cluster in a temporary directory, run as the `postgres` OS user when the
    tests run as root (initdb refuses root)."""

    def __init__(self):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
        if not found:
            pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1]).parent
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="guanhao-pg-"))
        self.data = self.dir / "data"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.dir, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{tool} failed: {done.stdout}\n{done.stderr}"

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
            "-c fsync=off -c max_connections=60"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Fast shutdown: open transactions are rolled back, their connections closed."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres():
    pg = PrivatePostgres()
    try:
        pg.start()
        engine = make_engine(pg.url)
        migrate.upgrade(engine)
        engine.dispose()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def service(private_postgres, tmp_path):
    """`guanhao serve` against the private server, with the webhook delivery worker inside."""
    port = _free_port()
    policy = tmp_path / "policy.toml"
    from guanhao.policy import DEFAULT_POLICY_PATH

    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    for key, value in (("backoff_base_seconds", "0.05"), ("backoff_max_seconds", "0.2"), ("timeout_seconds", "1.0")):
        text = text.replace(next(line for line in text.splitlines() if line.startswith(f"{key} =")), f"{key} = {value}")
    policy.write_text(text, encoding="utf-8")
    env = os.environ | {
        "GUANHAO_DATABASE_URL": private_postgres.url,
        "GUANHAO_VAR_DIR": str(tmp_path / "var"),
        "GUANHAO_POLICY": str(policy),
        "GUANHAO_DELIVER_WEBHOOKS": "1",
        "GUANHAO_RETRY_AFTER": RETRY_AFTER,
        # Requests held at the commit-order lock must still be waiting when the server stops.
        "GUANHAO_DB_BUSY_TIMEOUT": "300",
    }
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(GUANHAO), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        _wait_for("the service to be ready", ready, interval=0.2)
        yield base, proc, tmp_path / "serve.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == RETRY_AFTER
    assert r.json()["code"] == "SERVICE_UNAVAILABLE"


def test_requests_in_flight_get_503_nothing_is_half_written_and_the_service_recovers(private_postgres, service):
    base, proc, log_path = service
    pid = proc.pid
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    receiver = Receiver()
    receiver.start()
    with httpx.Client(base_url=base, timeout=120) as client:
        api = Api(client, admin)
        r = client.post("/api/v1/admin/webhook-endpoints", json={"url": receiver.url()}, headers=admin)
        assert r.status_code == 201, r.text
        shops = [api.ready_shop()[1] for _ in range(20)]

    def submit(shop_id: str) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=120) as c:
            return c.post(f"/api/v1/shops/{shop_id}/upgrade-applications", json={"agree_terms": True}, headers=admin)

    created: dict[str, str] = {}

    def record(responses) -> None:
        for shop_id, r in responses:
            assert r.status_code == 201, (shop_id, r.status_code, r.text)
            created[shop_id] = r.json()["application_id"]

    # 1. A stream of writes against a healthy server.
    with ThreadPoolExecutor(4) as pool:
        record(zip(shops[:6], pool.map(submit, shops[:6]), strict=True))

    # 2. Four submits held in flight, their rows written, waiting for the commit-order lock; the server stops.
    in_flight = shops[6:10]
    blocker = sa.create_engine(private_postgres.url, isolation_level="AUTOCOMMIT")
    holder = blocker.connect()
    holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": COMMIT_ORDER_LOCK})
    with ThreadPoolExecutor(len(in_flight)) as pool:
        pending = [pool.submit(submit, shop_id) for shop_id in in_flight]
        with blocker.connect() as watch:
            _wait_for(
                "the submits to wait at the commit-order lock",
                lambda: (
                    watch.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                        )
                    ).scalar()
                    >= len(in_flight)
                ),
            )
        private_postgres.stop()
        for future in pending:
            _assert_unavailable(future.result())
    holder.invalidate()
    blocker.dispose()

    # 3. While the server is down: every request that needs it is a 503; the process itself is alive.
    with httpx.Client(base_url=base, timeout=120) as client:
        _assert_unavailable(submit(shops[10]))
        _assert_unavailable(client.get(f"/api/v1/shops/{shops[0]}/official-account", headers=admin))
        keyed = admin | {"Idempotency-Key": "restart-1"}
        _assert_unavailable(
            client.post(f"/api/v1/shops/{shops[10]}/upgrade-applications", json={"agree_terms": True}, headers=keyed)
        )
        ready = client.get("/readyz")
        _assert_unavailable(ready)
        assert ready.json()["checks"]["database"] == "unreachable"
        assert client.get("/healthz").status_code == 200

    # 4. The server is back: the same process answers the very next requests (the pool reconnects).
    private_postgres.start()
    with httpx.Client(base_url=base, timeout=120) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get(f"/api/v1/shops/{shops[0]}/official-account", headers=admin).status_code == 200
        r = client.post(f"/api/v1/shops/{shops[10]}/upgrade-applications", json={"agree_terms": True}, headers=keyed)
        record([(shops[10], r)])
    with ThreadPoolExecutor(4) as pool:
        rest = in_flight + shops[11:]
        record(zip(rest, pool.map(submit, rest), strict=True))
    assert proc.poll() is None and proc.pid == pid, "the service was restarted"

    # 5. Nothing half-written.
    engine = sa.create_engine(private_postgres.url)
    try:
        with engine.connect() as conn:
            apps = dict(conn.execute(sa.text("SELECT id, shop_id FROM upgrade_applications")).all())
            assert set(apps) == set(created.values())
            assert len(apps) == len(shops)
            submitted = conn.execute(
                sa.text(
                    "SELECT target_id, count(*) FROM audit_log WHERE action = 'upgrade.submitted' GROUP BY target_id"
                )
            ).all()
            assert dict(submitted) == dict.fromkeys(apps, 1)
            events = conn.execute(
                sa.text(
                    "SELECT type, data FROM outbox_events WHERE type IN ('upgrade.submitted', 'upgrade.confirmation_requested')"
                )
            ).all()
            for kind in ("upgrade.submitted", "upgrade.confirmation_requested"):
                ids = sorted(_json(data)["application_id"] for type_, data in events if type_ == kind)
                assert ids == sorted(apps), kind
            orphans = conn.execute(
                sa.text(
                    "SELECT count(*) FROM audit_log a WHERE a.target_kind = 'upgrade_application' "
                    "AND NOT EXISTS (SELECT 1 FROM upgrade_applications u WHERE u.id = a.target_id)"
                )
            ).scalar()
            assert orphans == 0
            event_ids = conn.execute(sa.text("SELECT event_id FROM outbox_events")).scalars().all()
        from guanhao.audit import service as audit
        from guanhao.db import session_scope

        with session_scope(make_engine(private_postgres.url)) as session:
            assert audit.verify(session).ok
    finally:
        engine.dispose()

    # The delivery worker in the same process came back too: every event reaches the receiver.
    try:
        _wait_for(
            "every event to be delivered",
            lambda: {r["headers"]["webhook-id"] for r in receiver.received(ok_only=True)} >= set(event_ids),
            timeout=120,
            interval=0.2,
        )
    finally:
        receiver.stop()

    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert not [r for r in records if r.get("level") == "error" and r.get("event") == "unhandled"]
    assert any(r.get("event") == "database.unavailable" for r in records)


def _json(value):
    return value if isinstance(value, dict) else json.loads(value)
