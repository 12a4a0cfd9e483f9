"""Sandbox-only paths (GUANHAO_SANDBOX=1): a settable service clock and the SMS that were 'sent'."""

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, field_validator

from guanhao import clock, errors, pii
from guanhao.http import Admin
from guanhao.i18n import _l
from guanhao.sandbox import service, sms
from guanhao.schemas import RequestBody, Rfc3339, phone_value, problem_responses

router = APIRouter(prefix="/sandbox", tags=["sandbox"])


class ClockIn(RequestBody):
    now: Rfc3339 = Field(description="RFC 3339 with offset, between the years 2000 and 2100")

    @field_validator("now")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("give the time with an offset, e.g. 2026-01-01T09:00:00+08:00")
        if not service.in_range(value):
            raise ValueError("the sandbox clock takes a time between the years 2000 and 2100")
        return value


class ClockOut(BaseModel):
    now: dt.datetime
    frozen: bool


class SmsItem(BaseModel):
    phone: str
    text: str
    code: str | None
    purpose: str
    at: dt.datetime


class SmsPage(BaseModel):
    items: list[SmsItem]


@router.get("/clock", response_model=ClockOut, responses=problem_responses(401, 403, 404))
def get_clock(call: Admin):
    with call.unit() as (session, now):
        return {"now": now, "frozen": clock.sandbox_now(session) is not None}


@router.post("/clock", response_model=ClockOut, responses=problem_responses(400, 401, 403, 404, 422))
def set_clock(body: ClockIn, call: Admin):
    """Freezes the service clock at `now` (forwards or backwards; 2000–2100); audited."""
    with call.unit() as (session, _now):
        return {"now": service.set_clock(session, body.now, actor=call.actor), "frozen": True}


@router.delete("/clock", response_model=ClockOut, responses=problem_responses(401, 403, 404))
def unfreeze_clock(call: Admin):
    """Real time again (a clock that was not set stays as it is); audited."""
    with call.unit() as (session, _now):
        return {"now": service.unfreeze(session, actor=call.actor), "frozen": False}


@router.get("/sms", response_model=SmsPage, responses=problem_responses(401, 403, 404, 422))
def sent_sms(call: Admin, phone: Annotated[str, Query(description="mainland mobile number")]):
    try:
        normalized = phone_value(phone)
    except ValueError:
        raise errors.InvalidPhone(_l("The phone is not a mainland mobile number")) from None
    with call.unit() as (session, _now):
        return {
            "items": [
                {
                    "phone": pii.mask_phone(sms.decrypt_phone(m)),
                    "text": m.text,
                    "code": m.code,
                    "purpose": m.purpose,
                    "at": m.at,
                }
                for m in sms.messages_for(session, normalized)
            ]
        }
