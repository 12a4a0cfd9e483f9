import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from guanhao.auth import service, users
from guanhao.auth.models import ApiKey
from guanhao.http import Admin, CursorParam, decode_cursor, decode_key_cursor, feed_cursor, key_feed_cursor
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
        after = decode_key_cursor(cursor)
        keys = service.keys_page(session, after=after, limit=PAGE_SIZE)
        return {"items": [_info(k) for k in keys], "next_cursor": key_feed_cursor(keys, after=after)}


@router.post("/api-keys/{key_id}/revoke", response_model=ApiKeyInfo, responses=problem_responses(401, 403, 404, 422))
def revoke_api_key(key_id: IdPath, call: Admin):
    """From the answer on, the key is 401: requests it was still running finished before it."""
    with call.unit() as (session, now):
        return _info(service.revoke(session, key_id, actor=call.actor, now=now))


# ---------------------------------------------------------------- console users


class UserIn(RequestBody):
    username: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=64)]
    password: Annotated[str, Field(min_length=users.PASSWORD_MIN, max_length=users.PASSWORD_MAX)]
    role: Literal["merchant", "staff"]
    subject_id: ObjectId | None = None


class UserCreated(BaseModel):
    user_id: str


class UserOut(BaseModel):
    user_id: str
    username: str
    role: Literal["merchant", "staff"]
    subject_id: str | None
    created_at: dt.datetime
    disabled_at: dt.datetime | None


class UserList(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


def _user_out(user) -> dict:
    return {
        "user_id": user.id,
        "username": user.username,
        "role": user.role,
        "subject_id": user.subject_id,
        "created_at": user.created_at,
        "disabled_at": user.disabled_at,
    }


@router.post(
    "/users", status_code=201, response_model=UserCreated, responses=problem_responses(400, 401, 403, 409, 422)
)
def create_user(body: UserIn, call: Admin):
    """A console user: a merchant of one subject (`subject_id` required), or platform staff (none)."""
    with call.unit() as (session, now):
        user = users.create_user(
            session,
            username=body.username,
            password=body.password,
            role=body.role,
            subject_id=body.subject_id,
            actor=call.actor,
            now=now,
        )
        return {"user_id": user.id}


@router.get("/users", response_model=UserList, responses=problem_responses(401, 403, 422))
def list_users(call: Admin, cursor: CursorParam = None):
    with call.unit() as (session, _now):
        after = decode_cursor(cursor)
        rows = users.list_users(session, after_seq=after, limit=PAGE_SIZE)
        return {
            "items": [_user_out(u) for u in rows],
            "next_cursor": feed_cursor(rows, seq_of=lambda u: u.seq, after=after),
        }


@router.post("/users/{user_id}/disable", response_model=UserOut, responses=problem_responses(401, 403, 404, 422))
def disable_user(user_id: IdPath, call: Admin):
    """The user can no longer sign in to the consoles; their sessions end at once."""
    with call.unit() as (session, now):
        return _user_out(users.disable_user(session, user_id, actor=call.actor, now=now))
