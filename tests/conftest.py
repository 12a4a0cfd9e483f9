"""Test harness. The suite runs on SQLite by default and on PostgreSQL when
GUANHAO_TEST_POSTGRES_URL is set (CI sets it, and then a failed connection fails the run).

Each test gets an empty, migrated database: on SQLite a copy of a template file migrated once,
on PostgreSQL a database per xdist worker, truncated between tests.
"""

import base64
import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from _pytest.nodeid import NodeId

TEST_PII_KEY = base64.b64encode(b"k" * 32).decode()
TEST_HASH_KEY = base64.b64encode(b"h" * 32).decode()
ADMIN_TOKEN = "test-admin-token-0123456789"
POSTGRES_URL = os.environ.get("GUANHAO_TEST_POSTGRES_URL", "")

os.environ.update(
    GUANHAO_SANDBOX="1",
    GUANHAO_ADMIN_TOKEN=ADMIN_TOKEN,
    GUANHAO_PII_KEY=TEST_PII_KEY,
    GUANHAO_HASH_KEY=TEST_HASH_KEY,
    GUANHAO_PUBLIC_URL="http://testserver",
)
os.environ.pop("GUANHAO_POLICY", None)


def reset_caches() -> None:
    from guanhao import db

    db.reset()


def is_postgres() -> bool:
    return bool(POSTGRES_URL)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def database_template(tmp_path_factory):
    """('sqlite', template file) or ('postgresql', url of this worker's database), migrated once."""
    from guanhao import migrate
    from guanhao.db import make_engine

    if is_postgres():
        admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        # Process ids repeat across the machines' pid namespaces that share this server: a random part too.
        name = f"guanhao_test_{_worker()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except sa.exc.OperationalError as exc:
            pytest.exit(f"GUANHAO_TEST_POSTGRES_URL is set but PostgreSQL cannot be reached: {exc}", returncode=3)
        admin.dispose()
        url = sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield "postgresql", url
        admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        return
    template = tmp_path_factory.mktemp("template") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{template}")
    migrate.upgrade(engine)
    engine.dispose()
    yield "sqlite", template


@pytest.fixture(autouse=True)
def database(database_template, tmp_path, monkeypatch):
    """An empty migrated database for this test; yields its URL."""
    kind, source = database_template
    monkeypatch.setenv("GUANHAO_VAR_DIR", str(tmp_path / "var"))
    if kind == "sqlite":
        target = tmp_path / "guanhao.sqlite3"
        shutil.copyfile(source, target)
        url = f"sqlite:///{target}"
    else:
        url = source
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            tables = (
                conn.execute(
                    sa.text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                    )
                )
                .scalars()
                .all()
            )
            # Nothing of an earlier test may outlive it: a connection left open in a transaction (a server or
            # worker thread that did not stop in time) would block the TRUNCATE for ever.
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        engine.dispose()
    monkeypatch.setenv("GUANHAO_DATABASE_URL", url)
    reset_caches()
    yield url
    reset_caches()


@pytest.fixture
def engine(database):
    from guanhao.db import get_engine

    return get_engine()


@pytest.fixture
def app(database, monkeypatch, request):
    """The app, with a worker inside that runs only the waves duty: waves started over the API are worked by
    workers (R-11), and the other duties (expiry sweeps, deliveries) stay under each test's control. A test
    marked `no_worker` works its waves itself."""
    from guanhao.app import create_app
    from guanhao.settings import get_settings

    monkeypatch.setenv("GUANHAO_WORKER", "0" if request.node.get_closest_marker("no_worker") else "1")
    monkeypatch.setenv("GUANHAO_WORKER_DUTIES", "waves")
    get_settings.cache_clear()
    return create_app()


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def admin_headers() -> dict:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def api(client, admin_headers):
    from tests.factories import Api

    return Api(client, admin_headers)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app):
    """A real uvicorn server for `app` on a free port, in a thread of this process; yields its base URL."""
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, limit_concurrency=1000
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server(database, monkeypatch, request):
    """A real uvicorn server on a free port, in a thread of this process, against this test's database."""
    from guanhao.app import create_app
    from guanhao.settings import get_settings

    if request.node.get_closest_marker("no_worker"):
        monkeypatch.setenv("GUANHAO_WORKER", "0")
        get_settings.cache_clear()
    with serving(create_app()) as url:
        yield url


def pytest_addoption(parser):
    parser.addoption(
        "--soak-large", action="store_true", help="the soak at full size (10,000 requests; GUANHAO_SOAK=large too)"
    )


def pytest_collection_modifyitems(config, items):
    _unique_node_ids(items)
    if is_postgres():
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set GUANHAO_TEST_POSTGRES_URL)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def _unique_node_ids(items) -> None:
    """schemathesis names each operation's item `test_x[GET /path]`, but under pytest 9 (which builds node ids
    from `originalname`) every one has the node id `test_x`; pytest-xdist's --dist loadgroup keys its work by
    node id, so it ran one of the 55 operations and dropped the rest without a word. Each such item gets its
    name as its node id (pytest has no public setter), and a collection with two items of one id is refused."""
    for item in items:
        base, sep, last = item.nodeid.rpartition("::")
        if sep and last != item.name and item.name.startswith(f"{last}["):
            item._id = NodeId.parse(f"{base}::{item.name}")
    seen: dict[str, int] = {}
    for item in items:
        seen[item.nodeid] = seen.get(item.nodeid, 0) + 1
    twice = sorted(nodeid for nodeid, n in seen.items() if n > 1)
    if twice:
        raise pytest.UsageError(f"tests sharing a node id (pytest-xdist would run only one of each): {twice}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- service-level tests


@pytest.fixture
def now():
    """The instant service-level tests pass as `now` (services never read the clock): 10:00 in Beijing."""
    import datetime as dt

    return dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def policy(database):
    from guanhao.policy import get_policy

    return get_policy()


@pytest.fixture
def session(database):
    """One unit of work for a service-level test, rolled back at the end: what the test wrote is never
    committed, so the commit-time rows (audit trail, outbox) are not written either — a test about those
    commits with `guanhao.db.session_scope()` instead. On SQLite the open transaction holds the write lock:
    a test using this fixture does its work in it, not in other sessions."""
    from guanhao.db import session_scope

    with session_scope() as s:
        yield s
        s.rollback()
