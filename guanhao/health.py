"""Is the service ready: the database answers and its schema is at this release's head. `guanhao.health_api`
serves it as `/readyz` and `/api/v1/health` (and `/healthz`, which asks nothing)."""

import structlog
from sqlalchemy.exc import SQLAlchemyError

from guanhao import db, errors, migrate
from guanhao.i18n import _l
from guanhao.settings import get_settings

log = structlog.get_logger("guanhao.health")


def check() -> str:
    """The schema revision of a reachable database at this release's head; else ServiceUnavailable
    saying what is wrong (`checks` names the failed part)."""
    head = migrate.head()
    retry_after = get_settings().retry_after
    try:
        with db.session_scope(write=False) as session:
            revision = migrate.current(session.connection())
    except SQLAlchemyError as exc:
        log.warning("readiness.database_unreachable", error_type=type(exc).__name__)
        raise errors.ServiceUnavailable(
            _l("The database cannot be reached"),
            retry_after=retry_after,
            checks={"database": "unreachable", "schema": None, "expected_schema": head},
        ) from None
    if revision != head:
        detail = (
            _l(
                "The database has no schema yet; this release needs revision {head} (run: guanhao db upgrade)",
                head=head,
            )
            if revision is None
            else _l(
                "The database schema is at revision {revision}; this release needs {head} (run: guanhao db upgrade)",
                revision=revision,
                head=head,
            )
        )
        raise errors.ServiceUnavailable(
            detail, retry_after=retry_after, checks={"database": "ok", "schema": revision, "expected_schema": head}
        )
    return revision
