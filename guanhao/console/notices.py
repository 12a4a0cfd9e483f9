"""站内信: what the merchant is told, from the subject's event stream (auto upgrade done, the holder's answer,
the review result, cancels and changes) and, computed on reading, the cancel windows closing soon."""

import datetime as dt
from dataclasses import dataclass

from guanhao.clock import CHINA
from guanhao.db import Session
from guanhao.events import service as events
from guanhao.i18n import Message, _l
from guanhao.subjects import service as subjects
from guanhao.upgrades.service import OfficialView

TYPES = (
    "upgrade.succeeded",
    "upgrade.reviewing",
    "upgrade.rejected",
    "upgrade.expired",
    "upgrade.cancelled",
    "operator.changed",
    "login_phone.changed",
)
# A reminder shows once an auto upgrade's cancel window has this little left.
REMIND_BEFORE = dt.timedelta(days=3)
PAGE_SIZE = 50


@dataclass(frozen=True)
class Notice:
    at: dt.datetime
    kind: str  # info | success | warning | danger
    title: Message
    text: Message
    shop_id: str | None
    seq: int | None = None


def _describe(event_type: str, data: dict, shop_name: str) -> tuple[str, Message, Message]:
    reasons = data.get("reasons") or []
    if event_type == "upgrade.succeeded" and data.get("origin") == "auto":
        return (
            "success",
            _l("Automatic upgrade done"),
            _l(
                "The platform upgraded the official account of {shop}; you may cancel within the window", shop=shop_name
            ),
        )
    if event_type == "upgrade.succeeded":
        return "success", _l("Upgrade succeeded"), _l("The official account of {shop} is upgraded", shop=shop_name)
    if event_type == "upgrade.reviewing":
        return (
            "info",
            _l("The account holder agreed"),
            _l("The holder of {shop}'s account confirmed the upgrade", shop=shop_name),
        )
    if event_type == "upgrade.rejected" and "HOLDER_DECLINED" in reasons:
        return (
            "warning",
            _l("The account holder declined"),
            _l("The holder of {shop}'s account declined the upgrade", shop=shop_name),
        )
    if event_type == "upgrade.rejected" and "STAFF_REJECTED" in reasons:
        return (
            "danger",
            _l("Review result: rejected"),
            _l("Platform staff rejected the upgrade of {shop}", shop=shop_name),
        )
    if event_type == "upgrade.rejected":
        return "danger", _l("Upgrade rejected"), _l("The upgrade of {shop} failed the checks on review", shop=shop_name)
    if event_type == "upgrade.expired":
        return (
            "warning",
            _l("Confirmation expired"),
            _l("The holder of {shop}'s account did not confirm in time", shop=shop_name),
        )
    if event_type == "upgrade.cancelled":
        return "info", _l("Upgrade cancelled"), _l("The upgrade of {shop} was cancelled", shop=shop_name)
    if event_type == "operator.changed":
        return (
            "info",
            _l("Operator changed"),
            _l("The operator of {shop}'s official account was changed", shop=shop_name),
        )
    return (
        "info",
        _l("Login phone changed"),
        _l("The login phone of {shop}'s official account was changed", shop=shop_name),
    )


def from_events(session: Session, subject_id: str, *, limit: int = PAGE_SIZE) -> list[Notice]:
    out = []
    for event in events.for_subject(session, subject_id, types=TYPES, before_seq=None, limit=limit):
        shop_name = subjects.get_shop(session, event.shop_id).name if event.shop_id else "—"
        kind, title, text = _describe(event.type, event.data, shop_name)
        out.append(Notice(at=event.at, kind=kind, title=title, text=text, shop_id=event.shop_id, seq=event.seq))
    return out


def closing_windows(views: list[OfficialView], *, now: dt.datetime) -> list[Notice]:
    """Upgrades the merchant can still cancel, for a few days only (R-12: the window itself is the service's)."""
    out = []
    for view in views:
        record = view.record
        deadline = record.cancel_deadline if record is not None else None
        if view.can_cancel and deadline is not None and deadline - now <= REMIND_BEFORE:
            out.append(
                Notice(
                    at=now,
                    kind="warning",
                    title=_l("Cancel window closing"),
                    text=_l(
                        "The upgrade of {shop} can be cancelled until {deadline} (Beijing time), then no longer",
                        shop=view.shop.name,
                        deadline=deadline.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S"),
                    ),
                    shop_id=view.shop.id,
                )
            )
    return out


def unread(session: Session, subject_id: str, *, seen_seq: int) -> int:
    return events.count_for_subject(session, subject_id, types=TYPES, after_seq=seen_seq)
