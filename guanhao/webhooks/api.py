import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator, AnyHttpUrl, BaseModel, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from guanhao import clock, errors
from guanhao.events import types as event_types
from guanhao.http import Admin, CursorParam, decode_cursor, decode_key_cursor, key_feed_cursor, page
from guanhao.i18n import _l
from guanhao.schemas import INT32_MAX, IdPath, RequestBody, problem_responses
from guanhao.settings import get_settings
from guanhao.webhooks import service, targets
from guanhao.webhooks.models import WebhookDelivery

router = APIRouter(prefix="/admin", tags=["webhooks"])
PAGE_SIZE = 50


def _known_type(value: str) -> str:
    if value not in event_types.KNOWN:
        raise PydanticCustomError("unknown_event_type", "not an event type this service emits")
    return value


EventType = Annotated[
    str, AfterValidator(_known_type), WithJsonSchema({"type": "string", "enum": list(event_types.TYPES)})
]


class EndpointIn(RequestBody):
    url: AnyHttpUrl = Field(
        description="https:// to a host with public addresses only (sandbox mode: http:// and loopback too)"
    )
    event_types: list[EventType] | None = Field(default=None, description="omit for every event type")


class EndpointOut(BaseModel):
    endpoint_id: str
    url: str
    event_types: list[str] | None
    created_at: dt.datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="whsec_… signing secret; shown once")


class EndpointList(BaseModel):
    items: list[EndpointOut]
    next_cursor: str | None


class DeliveryOut(BaseModel):
    delivery_id: int
    endpoint_id: str
    event_seq: int
    shop_id: str | None
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    next_attempt_at: dt.datetime
    last_status: int | None
    last_error: str | None
    delivered_at: dt.datetime | None


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


def _endpoint_out(e) -> dict:
    return {"endpoint_id": e.id, "url": e.url, "event_types": e.event_types, "created_at": e.created_at}


def _delivery_out(d: WebhookDelivery) -> dict:
    return {
        "delivery_id": d.seq,
        "endpoint_id": d.endpoint_id,
        "event_seq": d.event_seq,
        "shop_id": d.shop_key or None,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "delivered_at": d.delivered_at,
    }


@router.post(
    "/webhook-endpoints",
    status_code=201,
    response_model=EndpointCreated,
    responses=problem_responses(400, 401, 403, 422),
)
def create_endpoint(body: EndpointIn, call: Admin):
    try:
        target = targets.check(str(body.url), sandbox=get_settings().sandbox)
    except targets.Refused as exc:
        raise errors.ValidationFailed(
            _l("The webhook URL is not allowed: {reason}", reason=exc.reason),
            errors=[{"field": "url", "type": "url_not_allowed", "message": exc.reason.render("en")}],
        ) from None
    with call.unit() as (session, now):
        endpoint, secret = service.create_endpoint(
            session, target=target, event_types=body.event_types, actor=call.actor, now=now
        )
        return {**_endpoint_out(endpoint), "secret": secret}


@router.get("/webhook-endpoints", response_model=EndpointList, responses=problem_responses(401, 403, 422))
def list_endpoints(call: Admin, cursor: CursorParam = None):
    with call.unit() as (session, _now):
        after = decode_key_cursor(cursor)
        rows = service.endpoints(session, after=after, limit=PAGE_SIZE)
        return {"items": [_endpoint_out(e) for e in rows], "next_cursor": key_feed_cursor(rows, after=after)}


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204, responses=problem_responses(401, 403, 404))
def delete_endpoint(endpoint_id: IdPath, call: Admin):
    with call.unit() as (session, _now):
        service.remove_endpoint(session, endpoint_id, actor=call.actor, now=clock.real_now())


@router.get("/webhook-deliveries", response_model=DeliveryList, responses=problem_responses(401, 403, 422))
def list_deliveries(
    call: Admin,
    status: Annotated[Literal["pending", "delivered", "dead"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: CursorParam = None,
):
    """Newest first; `next_cursor` pages back to older ones."""
    with call.unit() as (session, _now):
        rows = service.deliveries(session, status=status, before_seq=decode_cursor(cursor), limit=limit)
        return {
            "items": [_delivery_out(d) for d in rows],
            "next_cursor": page(rows, limit=limit, seq_of=lambda d: d.seq),
        }


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    responses=problem_responses(401, 403, 404, 409),
)
def redeliver(delivery_id: Annotated[int, Path(ge=1, le=INT32_MAX)], call: Admin):
    with call.unit() as (session, _now):
        # the worker's clock: a redelivery is due now in real time, whatever the sandbox clock says
        return _delivery_out(service.redeliver(session, delivery_id, actor=call.actor, now=clock.real_now()))
