"""操作日志 (R-60): the trail filtered by who, what, which object and when; its hash chains verified; a CSV export.
Audit rows hold masked personal data only; the export masks once more whatever looks like an ID card or a mobile
number (R-50), in case a value was not masked at its source."""

import csv
import datetime as dt
import io
import json
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Query
from fastapi.responses import Response

from guanhao import clock, pii
from guanhao.audit import service as audit
from guanhao.audit.models import AuditEntry
from guanhao.console import labels, pages
from guanhao.console.session import CurrentVisit
from guanhao.console.staff.common import render, router, staff
from guanhao.i18n import _l

TRAIL_PAGE = 100
EXPORT_MOST = 50_000
BAD_DATE = _l("Enter a date as YYYY-MM-DD")


def _day_start(value: str) -> dt.datetime:
    """A calendar day in Asia/Shanghai → its first instant (UTC)."""
    day = dt.date.fromisoformat(value)
    return dt.datetime.combine(day, dt.time(), tzinfo=clock.CHINA).astimezone(dt.UTC)


def _filters(actor: str, action: str, target_id: str, subject_id: str, shop_id: str, since: str, until: str):
    problems = {}
    start = end = None
    try:
        start = _day_start(since) if since else None
    except ValueError:
        problems["since"] = BAD_DATE
    try:
        end = _day_start(until) + dt.timedelta(days=1) if until else None
    except ValueError:
        problems["until"] = BAD_DATE
    return (
        audit.Filters(
            actor=actor.strip() or None,
            action=action.strip() or None,
            target_id=target_id.strip() or None,
            subject_id=subject_id.strip() or None,
            shop_id=shop_id.strip() or None,
            since=start,
            until=end,
        ),
        problems,
    )


def masked_detail(entry: AuditEntry) -> str:
    return pii.mask_text(json.dumps(entry.detail, ensure_ascii=False, sort_keys=True, default=str))


def client_address(entry: AuditEntry) -> str:
    """Where a holder's answer came from, its last part masked (an address can name a person too)."""
    detail = entry.detail if isinstance(entry.detail, dict) else {}
    client = detail.get("client")
    address = str(client.get("address") or "") if isinstance(client, dict) else ""
    if "." in address:
        return address.rsplit(".", 1)[0] + ".*"
    if ":" in address:
        return address.rsplit(":", 1)[0] + ":*"
    return address


def _given(
    actor: str = Query(default="", max_length=120),
    action: str = Query(default="", max_length=120),
    target_id: str = Query(default="", max_length=120),
    subject_id: str = Query(default="", max_length=120),
    shop_id: str = Query(default="", max_length=120),
    since: str = Query(default="", max_length=10),
    until: str = Query(default="", max_length=10),
) -> dict[str, str]:
    """The trail's filters as the staff typed them (the page and its CSV export take the same ones)."""
    given = {"actor": actor, "action": action, "target_id": target_id, "subject_id": subject_id}
    return given | {"shop_id": shop_id, "since": since, "until": until}


Given = Annotated[dict[str, str], Depends(_given)]


@router.get("/audit")
def trail(
    current: CurrentVisit,
    given: Given,
    before: int | None = Query(default=None, ge=1),
    verify: bool = False,
):
    staff(current)
    filters, problems = _filters(**given)
    query = urlencode({k: v for k, v in given.items() if v})
    with current.unit() as (session, _now):
        rows = [] if problems else audit.search(session, filters, before_seq=before, limit=TRAIL_PAGE)
        actions = audit.actions(session)
        verification = audit.verify(session) if verify else None
    return render(
        current,
        "staff/audit.html",
        nav="audit",
        status=422 if problems else 200,
        rows=rows,
        given=given,
        query=query,
        problems=problems,
        actions=[(a, labels.action_text(a, current.lang)) for a in actions],
        verification=verification,
        next_before=rows[-1].seq if len(rows) == TRAIL_PAGE else None,
        detail_of=masked_detail,
        address_of=client_address,
        role_of=labels.role_of,
        action_text=lambda a: labels.action_text(a, current.lang),
    )


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


@router.get("/audit.csv")
def export(current: CurrentVisit, given: Given):
    """The filtered trail as CSV (UTF-8 with a BOM, so spreadsheet programs read the Chinese), newest first."""
    staff(current)
    filters, problems = _filters(**given)
    lang = current.lang
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    header = [_l("Sequence"), _l("Time (Asia/Shanghai)"), _l("Actor"), _l("Role"), _l("Action"), _l("Action code")]
    header += [_l("Object type"), _l("Object"), _l("Subject"), _l("Shop"), _l("From"), _l("To"), _l("Details")]
    header += [_l("IP address"), _l("Row hash")]
    writer.writerow([h.render(lang) for h in header])
    before = None
    written = 0
    with current.unit() as (session, _now):
        while not problems and written < EXPORT_MOST:
            rows = audit.search(session, filters, before_seq=before, limit=1000)
            for e in rows:
                writer.writerow(
                    _cell(v)
                    for v in [
                        e.seq,
                        pages.china_time(e.at),
                        e.actor,
                        labels.text("role", labels.role_of(e.actor), lang),
                        labels.action_text(e.action, lang),
                        e.action,
                        e.target_kind,
                        e.target_id,
                        e.subject_id or "",
                        e.shop_id or "",
                        e.from_state or "",
                        e.to_state or "",
                        masked_detail(e),
                        client_address(e),
                        e.row_hash,
                    ]
                )
            written += len(rows)
            if len(rows) < 1000:
                break
            before = rows[-1].seq
    stamp = clock.real_now().astimezone(clock.CHINA).strftime("%Y%m%d-%H%M%S")
    headers = {"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'}
    return pages.finish(current, Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers))
