"""The background duties over HTTP: `GET /api/v1/admin/jobs` (each duty's schedule, last outcome and lease
holder) and `POST /api/v1/admin/jobs/{job}/run` (a named job, now)."""

import datetime as dt
from enum import StrEnum
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from guanhao import clock, jobs
from guanhao.http import Admin
from guanhao.schemas import problem_responses
from guanhao.worker import scheduler

router = APIRouter(prefix="/admin", tags=["staff"])

JobName = StrEnum("JobName", {name: name for name in jobs.JOBS})  # type: ignore[misc]


class JobResult(BaseModel):
    job: str
    processed: int


class DutyOut(BaseModel):
    job: str
    shared: bool = Field(description="run by every worker, items coordinated one by one (else one worker at a time)")
    runnable: bool = Field(description="can be run now with POST /admin/jobs/{job}/run")
    interval_seconds: float
    last_run_at: dt.datetime | None = Field(description="when the last run started (real time)")
    last_finished_at: dt.datetime | None
    last_outcome: Literal["ok", "error"] | None
    last_processed: int | None
    last_error: str | None
    last_worker: str | None
    runs: int
    failures: int = Field(description="failed runs in a row")
    next_run_at: dt.datetime | None = Field(description="when a worker takes it next; null before any worker ran")
    lease_holder: str | None = Field(description="the worker running it now (exclusive duties)")
    lease_until: dt.datetime | None


class DutyList(BaseModel):
    items: list[DutyOut]
    now: dt.datetime = Field(description="real time at the server, to read the others against")


@router.get("/jobs", response_model=DutyList, responses=problem_responses(401, 403))
def list_jobs(call: Admin):
    """Every background duty: interval, last run and outcome, next run, and who holds it now."""
    now = clock.real_now()
    with call.unit() as (session, _now):
        rows = scheduler.rows(session)
    items = []
    for name, duty in jobs.DUTIES.items():
        row = rows.get(name)
        held = row is not None and row.lease_until is not None and row.lease_until > now
        items.append(
            {
                "job": name,
                "shared": duty.shared,
                "runnable": name in jobs.JOBS,
                "interval_seconds": duty.interval(call.policy).total_seconds(),
                "last_run_at": row.last_started_at if row else None,
                "last_finished_at": row.last_finished_at if row else None,
                "last_outcome": row.last_outcome if row else None,
                "last_processed": row.last_processed if row else None,
                "last_error": row.last_error if row else None,
                "last_worker": row.last_worker if row else None,
                "runs": row.runs if row else 0,
                "failures": row.failures if row else 0,
                "next_run_at": row.next_run_at if row else None,
                "lease_holder": row.lease_owner if held and row else None,
                "lease_until": row.lease_until if held and row else None,
            }
        )
    return {"items": items, "now": now}


@router.post("/jobs/{job}/run", response_model=JobResult, responses=problem_responses(401, 403, 404, 422))
def run_job(job: JobName, call: Admin):
    """Runs a named job now, in this request (the service clock); recorded as the duty's last run."""
    with call.unit() as (session, now):
        processed = jobs.run(session, job.value, call.policy, now, actor=call.actor)
        scheduler.note(session, job.value, call.actor, now=clock.real_now(), processed=processed)
        return {"job": job.value, "processed": processed}
