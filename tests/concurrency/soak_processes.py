"""The soak's processes (issue 8): a real `guanhao serve`, background `guanhao worker`s, a watch on the locks
PostgreSQL holds, and a webhook sink on loopback."""

import contextlib
import http.server
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from tests.serving import guanhao_serve, stop

GUANHAO = str(Path(sys.executable).parent / "guanhao")


def process_env(database_url: str, var_dir: Path) -> dict[str, str]:
    """The environment of the server and the workers: the test's database, small connection pools (the
    shared PostgreSQL allows about 100 clients in all: 4 × 10 here, 2 × 4 for the workers), quiet logs."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return env | {
        "GUANHAO_DATABASE_URL": database_url,
        "GUANHAO_VAR_DIR": str(var_dir),
        "GUANHAO_DB_POOL_SIZE": "8",
        "GUANHAO_DB_MAX_OVERFLOW": "2",
        # A budget that a 2-core machine shared with other work does not exceed by mere load: the soak is about
        # correctness. A deadlock is still a 503 at once (PostgreSQL detects it after deadlock_timeout).
        "GUANHAO_DB_BUSY_TIMEOUT": "30",
        "GUANHAO_LOG_LEVEL": "WARNING",
        "GUANHAO_QUIET_DEV_KEYS": "1",
    }


@contextlib.contextmanager
def serving(env: dict[str, str], log_path: Path, *, workers: int) -> Iterator[str]:
    """`guanhao serve --workers N --no-worker` on a free port; yields its base URL once /readyz answers 200."""
    with guanhao_serve(env, log_path, args=("--workers", str(workers), "--no-worker"), timeout=240) as (base, _proc):
        yield base


def background_worker(env: dict[str, str], index: int, log) -> subprocess.Popen:
    """One background worker, `guanhao worker --id soak-N`: waves, webhook deliveries, expiry sweeps, purges."""
    return subprocess.Popen([GUANHAO, "worker", "--id", f"soak-{index}"], env=env, stdout=log, stderr=subprocess.STDOUT)


@contextlib.contextmanager
def background_workers(env: dict[str, str], log_dir: Path, *, count: int) -> Iterator[list[subprocess.Popen]]:
    """`count` background workers; the API runs none of its own (`serve --no-worker`), so these alone run the
    duties."""
    logs = [(log_dir / f"worker-{i}.log").open("w") for i in range(count)]
    # A worker's duties need a few connections, not a request server's pool: the shared PostgreSQL allows about
    # 100 clients in all, and a full server refuses every request (503 on reads too).
    env = env | {"GUANHAO_DB_POOL_SIZE": "3", "GUANHAO_DB_MAX_OVERFLOW": "1"}
    procs = [background_worker(env, i, log) for i, log in enumerate(logs)]
    try:
        yield procs
    finally:
        for proc in procs:
            stop(proc)
        for log in logs:
            log.close()


class LockWatch:
    """Every second, the lock waits longer than `threshold` seconds in the test's database, each with what its
    blockers run (pg_blocking_pids, pg_stat_activity): who holds a row that a request waits for. Printed with
    the report, so a 55P03 (a request past its lock budget) names its cause."""

    QUERY = """
        SELECT w.pid, now() - w.query_start AS waited, left(w.query, 160) AS query,
               b.pid AS blocker, b.state AS blocker_state, now() - b.xact_start AS blocker_xact,
               left(b.query, 200) AS blocker_query
        FROM pg_stat_activity w
        CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocking(pid)
        JOIN pg_stat_activity b ON b.pid = blocking.pid
        WHERE w.datname = current_database() AND w.wait_event_type = 'Lock'
          AND now() - w.query_start > make_interval(secs => :threshold)
    """

    def __init__(self, sql: sa.Engine, *, threshold: float = 5.0) -> None:
        self.sql, self.threshold = sql, threshold
        self.seen: dict[tuple, tuple[float, str]] = {}  # (waiter, blocker, query) → the longest sighting
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="soak-lockwatch", daemon=True)

    def watch(self) -> None:
        while not self.done.wait(1.0):
            with contextlib.suppress(sa.exc.SQLAlchemyError), self.sql.connect() as conn:
                for r in conn.execute(sa.text(self.QUERY), {"threshold": self.threshold}):
                    self.seen[(r.pid, r.blocker, r.query)] = (
                        r.waited.total_seconds(),
                        f"{r.waited.total_seconds():.0f} s: {r.query[:60]!r} waits for pid {r.blocker} "
                        f"({r.blocker_state}, transaction {r.blocker_xact.total_seconds():.0f} s old): "
                        f"{r.blocker_query[:90]!r}",
                    )

    def __enter__(self) -> "LockWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def report(self, most: int = 8) -> list[str]:
        """The `most` longest waits seen (each waiter counted once per blocker)."""
        longest = sorted(self.seen.values(), reverse=True)
        lines = [f"lock waits over {self.threshold:.0f} s: {len(longest)}"]
        return lines + [f"  {text}" for _, text in longest[:most]]


class Sink:
    """A webhook endpoint on loopback (sandbox mode allows it): counts each delivery by its webhook-id."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        lock = threading.Lock()
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    received[self.headers.get("webhook-id", "")] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Sink":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
