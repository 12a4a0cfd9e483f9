import datetime as dt
import threading
from typing import Literal

import structlog
from fastapi import APIRouter
from pydantic import BaseModel, Field

from guanhao import clock
from guanhao.db import session_scope
from guanhao.http import Admin
from guanhao.schemas import IdPath, NonNegInt, RequestBody, Score, problem_responses
from guanhao.upgrades import waves
from guanhao.upgrades.models import Wave

router = APIRouter(prefix="/admin", tags=["auto-upgrade waves (系统自动升级)"])
log = structlog.get_logger("guanhao.waves")


class WaveIn(RequestBody):
    limit: NonNegInt = Field(description="the most upgrades this wave makes")
    min_experience_score: Score | None = Field(default=None, description="default: the policy minimum")


class WaveStarted(BaseModel):
    wave_id: str
    status: Literal["running", "done", "failed"]


class WaveOut(BaseModel):
    wave_id: str
    status: Literal["running", "done", "failed"]
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


def wave_out(w: Wave) -> dict:
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
    }


def _run_in_background(wave_id: str, policy) -> None:
    def target():
        try:
            waves.work(wave_id, policy)
        except Exception as exc:
            log.error("wave.failed", wave_id=wave_id, error_type=type(exc).__name__)
            with session_scope() as session:
                waves.fail(session, wave_id, type(exc).__name__, now=clock.now(session))

    threading.Thread(target=target, name=f"wave-{wave_id}", daemon=True).start()


@router.post(
    "/auto-upgrade-waves", status_code=202, response_model=WaveStarted, responses=problem_responses(400, 401, 403, 422)
)
def start_wave(body: WaveIn, call: Admin):
    """Starts a wave in the background; poll GET …/auto-upgrade-waves/{wave_id}."""
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
    _run_in_background(wave_id, call.policy)
    return {"wave_id": wave_id, "status": "running"}


@router.get("/auto-upgrade-waves/{wave_id}", response_model=WaveOut, responses=problem_responses(401, 403, 404))
def get_wave(wave_id: IdPath, call: Admin):
    with call.unit() as (session, _now):
        return wave_out(waves.get(session, wave_id))
