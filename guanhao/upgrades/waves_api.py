"""Auto-upgrade waves over HTTP (R-11). The API records a wave; workers (`guanhao worker`, or the one inside
`guanhao serve`) pick it up, share its chunks and finish it whichever of them survives."""

import datetime as dt
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from guanhao.http import Admin
from guanhao.schemas import IdPath, NonNegInt, RequestBody, Score, problem_responses
from guanhao.upgrades import waves
from guanhao.upgrades.models import Wave, WaveWorker
from guanhao.worker import runner

router = APIRouter(prefix="/admin", tags=["auto-upgrade waves (系统自动升级)"])


class WaveIn(RequestBody):
    limit: NonNegInt = Field(description="the most upgrades this wave makes")
    min_experience_score: Score | None = Field(default=None, description="default: the policy minimum")


class WaveStarted(BaseModel):
    wave_id: str
    status: Literal["running", "done", "failed"]


class WaveWorkerOut(BaseModel):
    worker_id: str
    chunks: int = Field(description="chunks this worker committed")
    scanned: int
    upgraded: int
    skipped: int
    first_seen_at: dt.datetime
    last_heartbeat_at: dt.datetime = Field(description="when it last committed a chunk (real time)")


class WaveOut(BaseModel):
    wave_id: str
    status: Literal["running", "done", "failed", "cancelled"]
    limit: int
    min_experience_score: float
    scanned: int
    upgraded: int
    skipped: int
    skip_reasons: dict[str, int]
    started_by: str
    error: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    workers: list[WaveWorkerOut] = Field(default_factory=list, description="each worker's share so far")


def _worker_out(w: WaveWorker) -> dict:
    return {
        "worker_id": w.worker_id,
        "chunks": w.chunks,
        "scanned": w.scanned,
        "upgraded": w.upgraded,
        "skipped": w.skipped,
        "first_seen_at": w.first_seen_at,
        "last_heartbeat_at": w.heartbeat_at,
    }


def wave_out(w: Wave, workers: list[WaveWorker] = ()) -> dict:  # type: ignore[assignment]
    return {
        "wave_id": w.id,
        "status": w.status,
        "limit": w.limit,
        "min_experience_score": w.min_experience_score,
        "scanned": w.scanned,
        "upgraded": w.upgraded,
        "skipped": w.skipped,
        "skip_reasons": w.skip_reasons,
        "started_by": w.started_by,
        "error": w.error,
        "created_at": w.created_at,
        "finished_at": w.finished_at,
        "workers": [_worker_out(x) for x in workers],
    }


@router.post(
    "/auto-upgrade-waves", status_code=202, response_model=WaveStarted, responses=problem_responses(400, 401, 403, 422)
)
def start_wave(body: WaveIn, call: Admin):
    """Records a wave for the workers to run (R-11); poll GET …/auto-upgrade-waves/{wave_id}."""
    with call.unit() as (session, now):
        wave = waves.start(
            session,
            limit=body.limit,
            min_score=body.min_experience_score,
            policy=call.policy,
            actor=call.actor,
            now=now,
        )
        wave_id = wave.id
    runner.nudge("waves")  # a worker in this process starts at once; the others within their poll interval
    return {"wave_id": wave_id, "status": "running"}


@router.get("/auto-upgrade-waves/{wave_id}", response_model=WaveOut, responses=problem_responses(401, 403, 404))
def get_wave(wave_id: IdPath, call: Admin):
    """A wave's figures and each worker's share (chunks, shops, last heartbeat)."""
    with call.unit() as (session, _now):
        return wave_out(waves.get(session, wave_id), waves.workers(session, wave_id))


@router.post(
    "/auto-upgrade-waves/{wave_id}/cancel", response_model=WaveOut, responses=problem_responses(401, 403, 404, 409)
)
def cancel_wave(wave_id: IdPath, call: Admin):
    """R-11: stops a running (or failed) wave — the chunks in hand finish, no new one starts, what it upgraded
    stays; audited. 409 WAVE_FINISHED when it is done or cancelled already."""
    with call.unit() as (session, now):
        wave = waves.cancel(session, wave_id, actor=call.actor, now=now)
        return wave_out(wave, waves.workers(session, wave_id))
