import datetime as dt

from fastapi import APIRouter
from pydantic import BaseModel, Field

from guanhao.audit import service
from guanhao.http import Admin, CursorParam, decode_cursor, feed_cursor
from guanhao.schemas import IdQuery, problem_responses

router = APIRouter(prefix="/admin", tags=["staff"])
PAGE_SIZE = 200


class AuditItem(BaseModel):
    seq: int
    at: dt.datetime
    actor: str
    action: str
    target_kind: str
    target_id: str
    subject_id: str | None
    shop_id: str | None
    from_: str | None = Field(alias="from")
    to: str | None
    detail: dict
    # The hash chain (SPEC R-60): lets anyone check an ownership record's history lines against the trail.
    chain: str
    prev_hash: str
    row_hash: str


class AuditPage(BaseModel):
    items: list[AuditItem]
    next_cursor: str | None


@router.get(
    "/audit", response_model=AuditPage, response_model_by_alias=True, responses=problem_responses(401, 403, 422)
)
def audit_trail(call: Admin, target_id: IdQuery | None = None, cursor: CursorParam = None):
    with call.unit() as (session, _now):
        after = decode_cursor(cursor)
        rows = service.entries(session, target_id=target_id, after_seq=after, limit=PAGE_SIZE)
        items = [
            {
                "seq": r.seq,
                "at": r.at,
                "actor": r.actor,
                "action": r.action,
                "target_kind": r.target_kind,
                "target_id": r.target_id,
                "subject_id": r.subject_id,
                "shop_id": r.shop_id,
                "from": r.from_state,
                "to": r.to_state,
                "detail": r.detail,
                "chain": r.chain,
                "prev_hash": r.prev_hash,
                "row_hash": r.row_hash,
            }
            for r in rows
        ]
        return {"items": items, "next_cursor": feed_cursor(rows, seq_of=lambda r: r.seq, after=after)}
