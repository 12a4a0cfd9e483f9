"""One-statement reads off the thread pool, for the hottest GETs.

A hot read is one SQLAlchemy Core statement (authentication, clock and data joined), run:
- on PostgreSQL, by an asyncpg pool that the app's lifespan opens in the server's event loop: no thread
  hop, no ORM, no second round trip. The statement is compiled once for asyncpg and prepared by it.
- anywhere else (SQLite, or an app driven without its lifespan, as some tests do), on the ordinary engine
  in a worker thread, as a read-only unit (SQLite's deferred BEGIN: it never takes the write lock).

Both run the same statement, so they answer the same rows; a single statement sees one snapshot.
"""

import asyncio
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any

import anyio.to_thread
import structlog
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.sql import Select

from guanhao import errors
from guanhao.db import WRITE_OPTION, get_engine, pg_state_unavailable
from guanhao.i18n import _l
from guanhao.settings import get_settings

log = structlog.get_logger("guanhao.reader")

# The asyncpg pool of each server loop of this process. A pool belongs to the loop that opened it and is used and
# closed only from there: several apps in one process (tests) each have their own, none touches another's.
_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]" = weakref.WeakKeyDictionary()
_compiled: dict[int, tuple[Select, str, list[str], dict[str, Any]]] = {}


def _asyncpg_dsn(url: str) -> str | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class ReadPool:
    """A few asyncpg connections for single read statements, shared fairly: a connection given back goes straight
    to the read that has waited longest, never to one that arrived since. (asyncpg's own pool lets a newcomer
    take a connection ahead of its waiters: under saturation a few reads then waited hundreds of milliseconds
    while most took one. It also pays a shield, a reset and an idle timer per read, which we do not need: a read
    here is one statement outside any transaction, and sets nothing on its connection.)

    Connections open lazily, up to `size`. One that fails — closed by the server, broken by a cancelled read —
    is dropped, and the next read opens another. A read that finds its connection ended by the server (a restart,
    an idle connection killed) is run once more on a new one — a single SELECT may run twice —, so a restarted
    database is served again from its next request, not after one error per connection."""

    def __init__(self, dsn: str, *, size: int, timeout: float, server_settings: dict[str, str]) -> None:
        self._dsn, self._size, self._timeout, self._server_settings = dsn, size, timeout, server_settings
        self._idle: list[Any] = []  # last in, first out: the warmest connection first
        self._waiters: deque[asyncio.Future] = deque()  # first in, first out: fairness
        self._open = 0  # connections open or opening
        self._closed = False

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        retried = False
        while True:
            connection, fresh = await self._acquire()
            try:
                record = await connection.fetchrow(sql, *args)
            except BaseException as exc:
                # A failed or cancelled read may leave the connection mid-protocol: never hand it to the next read.
                self._drop(connection)
                if not fresh and not retried and _connection_lost(exc):
                    retried = True
                    continue
                raise
            self._release(connection)
            return record

    async def _acquire(self) -> tuple[Any, bool]:
        """A connection and whether it was opened for this read."""
        while self._idle:
            connection = self._idle.pop()
            if not connection.is_closed():
                return connection, False
            self._open -= 1
        if self._closed:
            raise OSError("the read pool is closed")
        if self._open < self._size:
            return await self._connect(), True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            connection = await asyncio.wait_for(waiter, self._timeout)  # TimeoutError is an OSError: 503
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as we gave up: pass it on
                if handed is None:
                    self._wake_one(None)
                else:
                    self._release(handed)
            raise
        return (await self._connect(), True) if connection is None else (connection, False)

    async def _connect(self) -> Any:
        import asyncpg

        self._open += 1
        try:
            return await asyncpg.connect(self._dsn, timeout=self._timeout, server_settings=self._server_settings)
        except BaseException:
            self._open -= 1
            self._wake_one(None)  # a waiter may try to open one in our place
            raise

    def _release(self, connection: Any) -> None:
        if self._closed or connection.is_closed():
            self._drop(connection)
            return
        if not self._wake_one(connection):
            self._idle.append(connection)

    def _wake_one(self, connection: Any) -> bool:
        """Hands `connection` (None: the right to open one) to the longest waiter; False when none waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return True
        return False

    def _drop(self, connection: Any) -> None:
        self._open -= 1
        connection.terminate()
        if not self._closed:
            self._wake_one(None)

    async def close(self) -> None:
        """Closes the idle connections; those in use are closed when their read gives them back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            self._open -= 1
            await connection.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(OSError("the read pool is closed"))


async def open_pool() -> None:
    """From the app's lifespan: a read pool for this server loop (PostgreSQL only; a no-op otherwise)."""
    dsn = _asyncpg_dsn(get_settings().resolved_database_url)
    loop = asyncio.get_running_loop()
    if dsn is None or loop in _pools:
        return
    settings = get_settings()
    _pools[loop] = ReadPool(
        dsn,
        size=settings.db_pool_size,
        timeout=settings.db_busy_timeout,
        # A bound on each read kept by the server, not by a client-side timer per query.
        server_settings={"statement_timeout": str(int(max(settings.db_busy_timeout, 30) * 1000))},
    )


async def close_pool() -> None:
    """From the app's lifespan, in the loop that opened the pool."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()


def _for_asyncpg(stmt: Select) -> tuple[str, list[str], dict[str, Any]]:
    """The statement's SQL for asyncpg, its parameter names in order, and the values it binds itself."""
    hit = _compiled.get(id(stmt))
    if hit is None or hit[0] is not stmt:
        from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

        compiled = stmt.compile(dialect=PGDialect_asyncpg())
        if "POSTCOMPILE" in str(compiled):
            # An expanding IN (…) is rendered per call by SQLAlchemy, never by a prepared statement.
            raise TypeError("a fast read's statement cannot hold an expanding IN; compare value by value")
        fixed = dict(compiled.construct_params(_check=False))
        hit = (stmt, str(compiled), list(compiled.positiontup or ()), fixed)
        _compiled[id(stmt)] = hit
    return hit[1], hit[2], hit[3]


async def one(stmt: Select, params: Mapping[str, Any], *, engine: Engine | None = None) -> Mapping[str, Any] | None:
    """The statement's first row as a mapping (column label → value), or None."""
    pool = None if engine is not None else _pools.get(asyncio.get_running_loop())
    if pool is not None:
        sql, names, fixed = _for_asyncpg(stmt)
        try:
            record = await pool.fetchrow(sql, *(params[n] if n in params else fixed[n] for n in names))
        except Exception as exc:
            if _unreachable(exc):
                log.warning("database.unavailable", error_type=type(exc).__name__, route="(fast read)")
                raise errors.ServiceUnavailable(
                    _l("The database is busy or cannot be reached; try again shortly"),
                    retry_after=get_settings().retry_after,
                ) from exc
            raise
        return None if record is None else dict(record.items())
    return await anyio.to_thread.run_sync(_one_sync, stmt, params, engine or get_engine())


def _connection_lost(exc: BaseException) -> bool:
    """The connection itself failed (the server ended it, the socket broke), as opposed to the statement.
    InternalClientError is what asyncpg says, when a connection is next used, of one the server ended while idle."""
    import asyncpg

    if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and state.startswith(("08", "57P"))


def _unreachable(exc: BaseException) -> bool:
    """asyncpg's ways of saying what `db.unavailable` recognises for the other drivers: no answer from a
    server (refused, closed, timed out), or a SQLSTATE of a server gone or busy."""
    import asyncpg

    # A lost connection (a TimeoutError is an OSError), or a server gone or busy (08, 57, deadlocks, lock waits…).
    if _connection_lost(exc):
        return True
    return isinstance(exc, asyncpg.PostgresError) and pg_state_unavailable(getattr(exc, "sqlstate", None) or "")


def _one_sync(stmt: Select, params: Mapping[str, Any], engine: Engine) -> Mapping[str, Any] | None:
    with engine.connect().execution_options(**{WRITE_OPTION: False}) as conn:
        row = conn.execute(stmt, dict(params)).mappings().first()
        result = None if row is None else dict(row)
        conn.rollback()
    return result
