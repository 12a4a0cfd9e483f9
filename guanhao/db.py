"""Engine, sessions and the one unit of work per request, command or job."""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import DateTime, Engine, MetaData, Table, create_engine, event, insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

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
    from guanhao.settings import get_settings

    s = get_settings()
    return make_engine(s.resolved_database_url, pool_size=s.db_pool_size, max_overflow=s.db_max_overflow)


@lru_cache
def _factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=True)


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


def is_postgres(session_or_engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "postgresql"


COMMIT_ORDER_LOCK = 0x6775616E68616F  # "guanhao"

# Rows some domains write only at commit (the audit chain, the outbox), queued per session. A
# rolled-back savepoint drops what was queued inside it; a rolled-back transaction drops all.
_QUEUES = "guanhao.queued"
_MARKS = "guanhao.queue_marks"


def queue(session: Session, name: str, rows) -> None:
    session.info.setdefault(_QUEUES, {}).setdefault(name, []).extend(rows)


def take_queued(session: Session, name: str) -> list[dict]:
    """For a before_commit listener: the rows to write now. SQLAlchemy also calls before_commit
    when a savepoint is released; that is not the commit, so nothing is taken then."""
    if session.in_nested_transaction():
        return []
    return session.info.get(_QUEUES, {}).pop(name, [])


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction) -> None:
    if transaction.nested:
        queued = session.info.get(_QUEUES, {})
        session.info.setdefault(_MARKS, {})[id(transaction)] = {name: len(rows) for name, rows in queued.items()}


@event.listens_for(Session, "after_soft_rollback")
def _unqueue(session: Session, previous_transaction) -> None:
    queued = session.info.get(_QUEUES)
    if previous_transaction.nested:
        mark = session.info.get(_MARKS, {}).pop(id(previous_transaction), None)
        if queued and mark is not None:
            for name, rows in queued.items():
                del rows[mark.get(name, 0) :]
    elif previous_transaction.parent is None:
        session.info.pop(_QUEUES, None)
        session.info.pop(_MARKS, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_marks(session: Session, transaction) -> None:
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_MARKS, None)


def take_commit_order_lock(session: Session) -> None:
    """Serialises the last step of writing transactions, so that rows written under it (outbox
    events, the audit chain) get sequence numbers in commit order. Held until commit; PostgreSQL
    only — SQLite serialises writers already (BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": COMMIT_ORDER_LOCK})


COPY_MIN_ROWS = 20


def bulk_insert(session: Session, table: Table, rows: list[dict]) -> None:
    """Inserts many rows that all have the same keys (a wave's chunk, its audit rows and events).

    On PostgreSQL, from COPY_MIN_ROWS rows on, one COPY in the session's transaction: several times
    cheaper than executemany in Python and in the server. Values go through the columns' own bind
    processing, and a database error is raised as SQLAlchemy's (IntegrityError, OperationalError…)
    exactly as an INSERT's would be. Elsewhere, or for a few rows, a plain executemany INSERT.
    """
    if not rows:
        return
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
    cursor = conn.connection.dbapi_connection.cursor()
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
