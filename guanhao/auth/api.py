import datetime as dt
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from guanhao.auth import service
from guanhao.http import Admin
from guanhao.schemas import ObjectId, RequestBody, problem_responses
from guanhao.subjects import service as subjects

router = APIRouter(prefix="/admin", tags=["staff"])


class ApiKeyIn(RequestBody):
    role: Literal["merchant", "admin"]
    subject_id: ObjectId | None = None
    label: str | None = Field(default=None, max_length=200)


class ApiKeyOut(BaseModel):
    key_id: str
    role: str
    subject_id: str | None
    token: str = Field(description="shown once; only its hash is stored")
    created_at: dt.datetime


@router.post("/api-keys", status_code=201, response_model=ApiKeyOut, responses=problem_responses(400, 401, 403, 422))
def create_api_key(body: ApiKeyIn, call: Admin):
    with call.unit() as (session, now):
        if body.role == "merchant" and body.subject_id is not None:
            subjects.known_subject(session, body.subject_id)
        key, token = service.create_key(session, role=body.role, subject_id=body.subject_id, label=body.label, now=now)
        return {
            "key_id": key.id,
            "role": key.role,
            "subject_id": key.subject_id,
            "token": token,
            "created_at": key.created_at,
        }
