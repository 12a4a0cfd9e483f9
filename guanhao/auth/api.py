import datetime as dt
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from guanhao.auth import service
from guanhao.auth.models import ApiKey
from guanhao.http import Admin, CursorParam, decode_key_cursor, key_page
from guanhao.schemas import IdPath, ObjectId, RequestBody, problem_responses
from guanhao.subjects import service as subjects

router = APIRouter(prefix="/admin", tags=["staff"])
PAGE_SIZE = 50


class ApiKeyIn(RequestBody):
    role: Literal["merchant", "admin"]
    subject_id: ObjectId | None = Field(default=None, description="required for a merchant key; not allowed for admin")
    label: str | None = Field(default=None, max_length=200)

    @field_validator("subject_id")
    @classmethod
    def _subject_for_merchants_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field the service would drop is refused, not ignored: an admin key bound to a subject is a mistake.
        if value is not None and info.data.get("role") == "admin":
            raise PydanticCustomError("extra_forbidden", "an admin key is bound to no subject")
        return value


class ApiKeyOut(BaseModel):
    key_id: str
    role: str
    subject_id: str | None
    token: str = Field(description="shown once; only its hash is stored")
    created_at: dt.datetime


class ApiKeyInfo(BaseModel):
    key_id: str
    role: Literal["merchant", "admin"]
    subject_id: str | None
    label: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class ApiKeyPage(BaseModel):
    items: list[ApiKeyInfo]
    next_cursor: str | None


def _info(key: ApiKey) -> dict:
    return {
        "key_id": key.id,
        "role": key.role,
        "subject_id": key.subject_id,
        "label": key.label,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


@router.post("/api-keys", status_code=201, response_model=ApiKeyOut, responses=problem_responses(400, 401, 403, 422))
def create_api_key(body: ApiKeyIn, call: Admin):
    with call.unit() as (session, now):
        if body.role == "merchant" and body.subject_id is not None:
            subjects.known_subject(session, body.subject_id)
        key, token = service.create_key(
            session, role=body.role, subject_id=body.subject_id, label=body.label, actor=call.actor, now=now
        )
        return {
            "key_id": key.id,
            "role": key.role,
            "subject_id": key.subject_id,
            "token": token,
            "created_at": key.created_at,
        }


@router.get("/api-keys", response_model=ApiKeyPage, responses=problem_responses(401, 403, 422))
def list_api_keys(call: Admin, cursor: CursorParam = None):
    """Stored keys (never their tokens), revoked ones included, in creation order."""
    with call.unit() as (session, _now):
        keys = service.keys_page(session, after=decode_key_cursor(cursor), limit=PAGE_SIZE)
        return {"items": [_info(k) for k in keys], "next_cursor": key_page(keys, limit=PAGE_SIZE)}


@router.post("/api-keys/{key_id}/revoke", response_model=ApiKeyInfo, responses=problem_responses(401, 403, 404, 422))
def revoke_api_key(key_id: IdPath, call: Admin):
    """From the answer on, the key is 401: requests it was still running finished before it."""
    with call.unit() as (session, now):
        return _info(service.revoke(session, key_id, actor=call.actor, now=now))
