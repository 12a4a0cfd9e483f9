"""Engine, sessions and the one unit of work per request, command or job."""

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, ClassVar, cast

from sqlalchemy import DateTime, Engine, MetaData, Table, any_, bindparam, create_engine, event, insert, orm, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, IntegrityError
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


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 40) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # Let SQLAlchemy own transactions, then start every one with BEGIN IMMEDIATE:
            # SQLite then serialises writers up front instead of failing a read-then-write later.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)


@lru_cache
def get_engine() -> Engine:
    s = get_settings()
    return make_engine(s.resolved_database_url, pool_size=s.db_pool_size, max_overflow=s.db_max_overflow)


Writer = Callable[["Session", list[dict]], None]


class Session(orm.Session):
    """Our unit of work. Besides the ORM's own changes it writes, at the real commit and in commit
    order, the rows domains queued while it ran: the audit chain (R-60) and the outbox (R-61).

    A domain registers its writer once (`@Session.writes_at_commit("audit")`) and queues rows with
    `session.queue(name, rows)`. At commit the session flushes, takes the commit-order lock once and
    hands each writer its rows, in registration order. A rolled-back savepoint drops only the rows
    queued inside it; a rolled-back transaction drops all.
    """

    writers: ClassVar[dict[str, Writer]] = {}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.queued: dict[str, list[dict]] = {}
        self._marks: dict[int, dict[str, int]] = {}

    @classmethod
    def writes_at_commit(cls, name: str) -> Callable[[Writer], Writer]:
        def register(writer: Writer) -> Writer:
            cls.writers[name] = writer
            return writer

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


@event.listens_for(Session, "after_transaction_end")
def _forget_marks(session: Session, transaction: orm.SessionTransaction) -> None:
    if transaction.parent is None and not transaction.nested:
        session._marks.clear()


@lru_cache
def _factory(engine: Engine) -> orm.sessionmaker[Session]:
    return orm.sessionmaker(engine, class_=Session, expire_on_commit=False, autoflush=True)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error."""
    session = _factory(engine or get_engine())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset() -> None:
    """Forgets what was read from the environment — settings, policy, keys — and the engine built
    from it (tests, and a CLI that changes a setting before it starts)."""
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
    events, the audit chain) get sequence numbers in commit order. Held until commit; PostgreSQL
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
    processors = [(k, c.type._cached_bind_processor(dialect)) for k, c in zip(keys, columns, strict=True)]
    quote = dialect.identifier_preparer.quote
    statement = f"COPY {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) FROM STDIN"
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([row[k] if p is None else p(row[k]) for k, p in processors])
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
    finally:
        cursor.close()


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
