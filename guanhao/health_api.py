"""Is the process alive, is the service ready: `/healthz`, `/readyz`, and `/api/v1/health` (which
answers like `/readyz`, so that it no longer says ok while every request fails). The check is `guanhao.health`."""

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from guanhao import __version__
from guanhao.health import check
from guanhao.schemas import Problem
from guanhao.settings import get_settings

router = APIRouter(tags=["ops"])


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
