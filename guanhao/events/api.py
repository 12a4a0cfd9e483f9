import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from guanhao.events import service
from guanhao.http import Admin, CursorParam, decode_cursor, feed_cursor
from guanhao.schemas import IdQuery, problem_responses

router = APIRouter(prefix="/admin", tags=["staff"])


class EventItem(BaseModel):
    event_id: str
    seq: int
    type: str
    shop_id: str | None
    at: dt.datetime
    data: dict


class EventPage(BaseModel):
    items: list[EventItem]
    next_cursor: str | None


@router.get("/events", response_model=EventPage, responses=problem_responses(401, 403, 422))
def outbox(
    call: Admin,
    cursor: CursorParam = None,
    shop_id: IdQuery | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
):
    """The outbox in commit order. `next_cursor` is on every page: the position after the last event, or the same
    position when nothing is new; poll with it (an empty page means caught up)."""
    with call.unit() as (session, _now):
        after = decode_cursor(cursor)
        rows = service.events_after(session, after_seq=after, limit=limit, shop_id=shop_id)
        items = [
            {"event_id": r.event_id, "seq": r.seq, "type": r.type, "shop_id": r.shop_id, "at": r.at, "data": r.data}
            for r in rows
        ]
        return {"items": items, "next_cursor": feed_cursor(rows, seq_of=lambda r: r.seq, after=after)}
