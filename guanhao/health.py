"""Is the process alive, is the service ready: `/healthz`, `/readyz`, and `/api/v1/health` (which
answers like `/readyz`, so that it no longer says ok while every request fails)."""

from typing import Any, Literal

import structlog
from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from guanhao import __version__, db, errors, migrate
from guanhao.i18n import _l
from guanhao.schemas import Problem
from guanhao.settings import get_settings

log = structlog.get_logger("guanhao.health")
router = APIRouter(tags=["ops"])


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


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    sandbox: bool
    database: Literal["ok"]
    schema_revision: str


_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {
        "model": Problem,
        "description": "Database unreachable or its schema not at this release's revision (SERVICE_UNAVAILABLE)",
        "content": {"application/problem+json": {}},
    }
}


@router.get("/api/v1/health", response_model=Health, responses=_NOT_READY)
def health() -> dict:
    """Ready to serve: the database answers and its schema is current (same as /readyz)."""
    revision = check()
    return {
        "status": "ok",
        "version": __version__,
        "sandbox": get_settings().sandbox,
        "database": "ok",
        "schema_revision": revision,
    }


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict:
    """The process is alive and answers; the database is not asked."""
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
def readyz() -> dict:
    return {"status": "ok", "database": "ok", "schema_revision": check()}
