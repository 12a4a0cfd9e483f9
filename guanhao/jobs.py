"""Named jobs, run from the admin API (`POST /api/v1/admin/jobs/{job}/run`) and the CLI (`guanhao jobs run NAME`)."""

import datetime as dt
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from guanhao import idempotency, metrics
from guanhao.audit import service as audit
from guanhao.db import Session
from guanhao.http import Admin
from guanhao.operators import service as operators
from guanhao.policy import Policy
from guanhao.schemas import problem_responses
from guanhao.upgrades import service as upgrades


def _expire_confirmations(session: Session, policy: Policy, now: dt.datetime) -> int:
    total = 0
    while batch := upgrades.expire_confirmations(session, now=now, limit=500):
        total += batch
    return total


def _expire_pending_changes(session: Session, policy: Policy, now: dt.datetime) -> int:
    total = 0
    while batch := operators.expire_pending(session, now=now, limit=500):
        total += batch
    return total


def _purge_idempotency_keys(session: Session, policy: Policy, now: dt.datetime) -> int:
    return idempotency.purge(session, now=now, retention=dt.timedelta(hours=policy.idempotency.retention_hours))


JOBS: dict[str, Callable[[Session, Policy, dt.datetime], int]] = {
    "expire-confirmations": _expire_confirmations,
    "expire-pending-changes": _expire_pending_changes,
    "purge-idempotency-keys": _purge_idempotency_keys,
}


def run(session: Session, name: str, policy: Policy, now: dt.datetime, *, actor: str | None = None) -> int:
    """Runs a job once. R-60: a run someone asked for (staff over the API, the CLI) is audited with what it
    did; the rows of the items it changed are the job's own (actor `job:NAME`)."""
    with metrics.timed_job(name):
        processed = JOBS[name](session, policy, now)
    if actor is not None:
        audit.record(
            session,
            at=now,
            actor=actor,
            action="job.run",
            target_kind="job",
            target_id=name,
            detail={"processed": processed},
        )
    return processed


router = APIRouter(prefix="/admin", tags=["staff"])


class JobResult(BaseModel):
    job: str
    processed: int


@router.post("/jobs/{job}/run", response_model=JobResult, responses=problem_responses(401, 403, 404, 422))
def run_job(job: Literal["expire-confirmations", "expire-pending-changes", "purge-idempotency-keys"], call: Admin):
    with call.unit() as (session, now):
        return {"job": job, "processed": run(session, job, call.policy, now, actor=call.actor)}
