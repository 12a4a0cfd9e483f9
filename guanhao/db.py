"""Engine, sessions and the one unit of work per request, command or job."""

import datetime as dt
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from operator import itemgetter
from typing import Any, ClassVar, cast

from sqlalchemy import DateTime, Engine, MetaData, Table, any_, bindparam, create_engine, event, insert, orm, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from guanhao import pii
from guanhao.policy import get_policy
from guanhao.settings import get_settings

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both SQLite (which stores naive text) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# Execution option that tells the SQLite "begin" listener whether the unit of work writes.
WRITE_OPTION = "guanhao_writes"


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 40, busy_timeout: float = 5.0) -> Engine:
    """`busy_timeout` (seconds) bounds how long a unit of work waits for the database: SQLite's write
    lock, a PostgreSQL connection from the pool or from the server. Past it the caller gets an error
    that `unavailable()` recognises (503 at the HTTP edge), never an endless wait."""
    # Statement parameters stay out of exception messages: they may be personal data, and
    # exception messages end up in logs.
    if url.startswith("sqlite"):
        engine = create_engine(
            url, hide_parameters=True, connect_args={"check_same_thread": False, "timeout": busy_timeout}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # SQLAlchemy owns transactions: the "begin" listener below starts each one.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            # WAL: readers read the last committed state while a writer works; they never wait for it.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # A writing unit takes the write lock up front (BEGIN IMMEDIATE), so SQLite serialises writers
            # before they read instead of failing a read-then-write later. A reading unit starts deferred
            # and never takes it: a long import does not stop anyone from reading.
            writes = conn.get_execution_options().get(WRITE_OPTION, True)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN DEFERRED")

        return engine
    return create_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_timeout=busy_timeout,
        connect_args={"connect_timeout": max(2, math.ceil(busy_timeout))},
    )


@lru_cache
def get_engine() -> Engine:
    s = get_settings()
    return make_engine(
        s.resolved_database_url,
        pool_size=s.db_pool_size,
        max_overflow=s.db_max_overflow,
        busy_timeout=s.db_busy_timeout,
    )


Writer = Callable[["Session", list[dict]], None]
Observer = Callable[[list[dict]], None]


class Session(orm.Session):
    """Our unit of work. Besides the ORM's own changes it writes, at the real commit and in commit
    order, the rows domains queued while it ran: the audit chain (R-60) and the outbox (R-61).

    A domain registers its writer once (`@Session.writes_at_commit("audit")`) and queues rows with
    `session.queue(name, rows)`. At commit the session flushes, takes the commit-order lock once and
    hands each writer its rows, in registration order. A rolled-back savepoint drops only the rows
    queued inside it; a rolled-back transaction drops all.
    """

    writers: ClassVar[dict[str, Writer]] = {}
    observers: ClassVar[dict[str, list[Observer]]] = {}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.queued: dict[str, list[dict]] = {}
        self._marks: dict[int, dict[str, int]] = {}
        self._written: dict[str, list[dict]] = {}

    @classmethod
    def writes_at_commit(cls, name: str) -> Callable[[Writer], Writer]:
        def register(writer: Writer) -> Writer:
            cls.writers[name] = writer
            return writer

        return register

    @classmethod
    def observes_commit(cls, name: str) -> Callable[[Observer], Observer]:
        """Registers a function told, after the commit succeeded, the rows of `name` it wrote (metrics
        count committed transitions from the audit rows). An observer's failure never fails the commit."""

        def register(observer: Observer) -> Observer:
            cls.observers.setdefault(name, []).append(observer)
            return observer

        return register

    def queue(self, name: str, rows: Iterable[dict]) -> None:
        if name not in self.writers:
            raise KeyError(f"no commit-time writer named {name!r}")
        self.queued.setdefault(name, []).extend(rows)


@event.listens_for(Session, "before_commit")
def _write_queued(session: Session) -> None:
    # SQLAlchemy also calls before_commit when a savepoint is released: that is not the commit.
    if session.in_nested_transaction() or not any(session.queued.values()):
        return
    queued, session.queued = session.queued, {}
    # Everything else first: a flush that waits on another transaction's row must not hold the lock.
    session.flush()
    take_commit_order_lock(session)
    for name, write in Session.writers.items():
        if queued.get(name):
            write(session, queued[name])
    session._written = queued


@event.listens_for(Session, "after_commit")
def _tell_observers(session: Session) -> None:
    written, session._written = session._written, {}
    for name, observers in Session.observers.items():
        for observe in observers if written.get(name) else ():
            try:
                observe(written[name])
            except Exception:
                logging.getLogger("guanhao.db").exception("commit observer failed")


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: orm.SessionTransaction) -> None:
    if transaction.nested:
        session._marks[id(transaction)] = {name: len(rows) for name, rows in session.queued.items()}


@event.listens_for(Session, "after_soft_rollback")
def _unqueue(session: Session, previous: orm.SessionTransaction) -> None:
    if previous.nested:
        mark = session._marks.pop(id(previous), None)
        if mark is not None:
            for name, rows in session.queued.items():
                del rows[mark.get(name, 0) :]
    elif previous.parent is None:
        session.queued.clear()
        session._marks.clear()
        session._written = {}


@event.listens_for(Session, "after_transaction_end")
def _forget_marks(session: Session, transaction: orm.SessionTransaction) -> None:
    if transaction.parent is None and not transaction.nested:
        session._marks.clear()


@lru_cache
def _factory(engine: Engine) -> orm.sessionmaker[Session]:
    return orm.sessionmaker(engine, class_=Session, expire_on_commit=False, autoflush=True)


@contextmanager
def session_scope(
    engine: Engine | None = None, *, write: bool = True, lock_timeout: float | None = None
) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error (a refused change changes nothing, R-63).

    `write=False` for a unit that only reads (an HTTP GET): on SQLite it never takes the write lock.
    `lock_timeout` (seconds, PostgreSQL) bounds each wait for a row or advisory lock in a writing unit:
    an HTTP request answers 503 past its budget; commands and jobs, the long writers, wait their turn."""
    session = _factory(engine or get_engine())(execution_options={WRITE_OPTION: write})
    try:
        if write and lock_timeout is not None and is_postgres(session):
            session.execute(text(f"SET LOCAL lock_timeout = '{max(1, int(lock_timeout * 1000))}ms'"))
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# SQLite result codes (the low byte of the extended code): busy, locked, cannot open the file.
_SQLITE_UNAVAILABLE = {5, 6, 14}
# PostgreSQL SQLSTATEs of a server that is gone or busy: connection exceptions (08), insufficient
# resources (53), operator intervention — shutdown, restart, cancelled by a timeout (57), a lock not
# obtained within lock_timeout (55P03), deadlock and serialization failures (40P01, 40001).
_PG_UNAVAILABLE_CLASSES = {"08", "53", "57"}
_PG_UNAVAILABLE_STATES = {"55P03", "40P01", "40001"}


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database is unreachable or busy past the caller's budget — a condition
    to answer with 503 and Retry-After and to retry later, not a bug. The one place that knows the
    drivers' ways of saying so; used by the HTTP edge and by anything that retries (workers)."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _SQLITE_UNAVAILABLE
    if not isinstance(exc, OperationalError):
        return False
    state = getattr(orig, "sqlstate", None)
    if state is None:  # no answer from a server: refused, closed, timed out
        return True
    return pg_state_unavailable(state)


def pg_state_unavailable(state: str) -> bool:
    """A PostgreSQL SQLSTATE that means busy or gone (see `unavailable`), whichever driver reported it."""
    return state[:2] in _PG_UNAVAILABLE_CLASSES or state in _PG_UNAVAILABLE_STATES


# What modules above this one remember from the environment (API keys seen, token hashes): forgotten by reset().
on_reset: list[Callable[[], None]] = []


def reset() -> None:
    """Forgets what was read from the environment — settings, policy, keys — and the engine built
    from it (tests, and a CLI that changes a setting before it starts)."""
    for forget in on_reset:
        forget()
    get_settings.cache_clear()
    get_policy.cache_clear()
    pii.reset_vault()
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    _factory.cache_clear()


def is_postgres(session_or_engine: "orm.Session | Engine") -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, orm.Session) else session_or_engine
    return bind.dialect.name == "postgresql"


COMMIT_ORDER_LOCK = 0x6775616E68616F  # "guanhao"


def take_commit_order_lock(session: orm.Session) -> None:
    """Serialises the last step of writing transactions, so that rows written under it (outbox
    events, R-61; the audit chain, R-60) get sequence numbers in commit order. Held until commit; PostgreSQL
    only — SQLite serialises writers already."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": COMMIT_ORDER_LOCK})


@contextmanager
def refusing(session: orm.Session, error: Exception) -> Iterator[None]:
    """Runs the block in a savepoint and flushes it; when a constraint the database holds refuses
    the write (a unique index, a CHECK), raises `error` instead, and the transaction goes on as if
    the block had not run (R-63). Make the changes inside the block: what was pending before is
    flushed before the savepoint starts."""
    try:
        with session.begin_nested():
            yield
            session.flush()
    except IntegrityError:
        raise error from None


def among(session: orm.Session, column: Any, values: Iterable[Any]) -> Any:
    """`column IN values`; on PostgreSQL `= ANY(array)`, one parameter: the statement text stays the same
    whatever the number of values (no re-rendering of thousands of placeholders, and psycopg can prepare it)."""
    values = list(values)
    if is_postgres(session):
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


COPY_MIN_ROWS = 20


def bulk_insert(session: orm.Session, model: type[Base], rows: list[dict]) -> None:
    """Inserts many rows that all have the same keys (a wave's chunk, its audit rows and events).

    On PostgreSQL, from COPY_MIN_ROWS rows on, one COPY in the session's transaction: several times
    cheaper than executemany in Python and in the server. Values go through the columns' own bind
    processing, and a database error is raised as SQLAlchemy's (IntegrityError, OperationalError…)
    exactly as an INSERT's would be. Elsewhere, or for a few rows, a plain executemany INSERT.
    """
    if not rows:
        return
    table = cast(Table, model.__table__)
    if len(rows) < COPY_MIN_ROWS or session.get_bind().dialect.name != "postgresql":
        session.execute(insert(table), rows)
        return
    session.flush()
    conn = session.connection()
    dialect = conn.dialect
    keys = list(rows[0])
    columns = [table.c[k] for k in keys]
    # The values of a row in column order in one C call; only the columns with a bind processor (datetimes,
    # JSON) go through Python, by position.
    values_of = itemgetter(*keys) if len(keys) > 1 else (lambda row: (row[keys[0]],))
    processed = [
        (i, processor)
        for i, column in enumerate(columns)
        if (processor := column.type._cached_bind_processor(dialect)) is not None
    ]
    quote = dialect.identifier_preparer.quote
    statement = f"COPY {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) FROM STDIN"
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            write = copy.write_row
            if not processed:
                for row in rows:
                    write(values_of(row))
            else:
                for row in rows:
                    values = list(values_of(row))
                    for i, processor in processed:
                        values[i] = processor(values[i])
                    write(values)
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
    finally:
        cursor.close()


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
