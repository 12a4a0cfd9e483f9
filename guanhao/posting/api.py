import datetime as dt

from fastapi import APIRouter
from pydantic import BaseModel

from guanhao.http import Admin
from guanhao.posting import service
from guanhao.schemas import IdPath, problem_responses
from guanhao.subjects import service as subjects
from guanhao.upgrades import service as upgrades

router = APIRouter(tags=["posting quota"])


class QuotaOut(BaseModel):
    account_id: str
    limit: int
    used: int
    remaining: int
    day: dt.date


class PostOut(BaseModel):
    account_id: str
    used: int
    remaining: int
    limit: int
    day: dt.date


def _out(account_id: str, q: service.Quota) -> dict:
    return {"account_id": account_id, "limit": q.limit, "used": q.used, "remaining": q.remaining, "day": q.day}


@router.get("/accounts/{account_id}/posting-quota", response_model=QuotaOut, responses=problem_responses(401, 403, 404))
def posting_quota(account_id: IdPath, call: Admin):
    with call.unit() as (session, now):
        subjects.get_account(session, account_id)
        upgraded = upgrades.is_upgraded(session, account_id)
        return _out(account_id, service.quota(session, account_id, call.policy, upgraded=upgraded, now=now))


@router.post(
    "/accounts/{account_id}/posts",
    status_code=201,
    response_model=PostOut,
    responses=problem_responses(401, 403, 404, 429),
)
def record_post(account_id: IdPath, call: Admin):
    """Platform systems ask before a post is published; 429 DAILY_POST_LIMIT_REACHED refuses it."""
    with call.unit() as (session, now):
        subjects.get_account(session, account_id)
        upgraded = upgrades.is_upgraded(session, account_id)
        return _out(account_id, service.record_post(session, account_id, call.policy, upgraded=upgraded, now=now))
