"""The application's state machine and its staff review step, as the tables in models say (R-20).

`transition` and `review_step` are the only ways an application or its review changes state: each
locks the row, checks the table, stamps the time, writes the audit row and queues the event — in the
caller's transaction. A transition not in the table is refused and changes nothing.
"""

import datetime as dt

from sqlalchemy import select

from guanhao import errors
from guanhao.audit import service as audit
from guanhao.db import Session
from guanhao.events import service as events
from guanhao.i18n import _l
from guanhao.upgrades import quotas
from guanhao.upgrades.models import (
    IN_PROGRESS,
    REVIEW_TRANSITIONS,
    TRANSITIONS,
    Application,
    Origin,
    Review,
    State,
)

NOT_WAITING_FOR_STAFF = _l("Only applications waiting for staff review can be approved or rejected")


def lapsed(app: Application, now: dt.datetime) -> bool:
    """R-15: still `submitted` past the holder's confirmation deadline — expired as a fact of time."""
    return (
        app.status == State.SUBMITTED and app.confirmation_expires_at is not None and now >= app.confirmation_expires_at
    )


def status_at(app: Application, now: dt.datetime) -> State:
    """The application's state as every read shows it: a lapsed one reads `expired` (R-15)."""
    return State.EXPIRED if lapsed(app, now) else State(app.status)


def steps(app: Application, now: dt.datetime) -> list[dict]:
    """R-17: submitted → holder confirmation → review → result, each done / current / pending / failed /
    skipped with its time (an auto upgrade skips the holder and the review)."""
    status = status_at(app, now)
    finished_at = app.confirmation_expires_at if lapsed(app, now) else app.finished_at
    auto = app.origin == Origin.AUTO
    holder: dict[str, object] = {"step": "holder_confirmation", "state": "pending", "at": None}
    review: dict[str, object] = {"step": "review", "state": "pending", "at": None}
    result: dict[str, object] = {"step": "result", "state": "pending", "at": None}
    declined_or_expired = status == State.EXPIRED or any(r["code"] == "HOLDER_DECLINED" for r in app.reasons)
    if auto:
        holder["state"] = review["state"] = "skipped"
    elif status == State.SUBMITTED:
        holder["state"] = "current"
    elif status == State.WITHDRAWN:
        holder["state"] = review["state"] = "skipped"
    elif declined_or_expired:
        holder.update(state="failed", at=app.confirmed_at or finished_at)
        review["state"] = "skipped"
    else:
        holder.update(state="done", at=app.confirmed_at)
    if not auto and not declined_or_expired and status not in (State.SUBMITTED, State.WITHDRAWN):
        if status == State.REVIEWING:
            review.update(state="current", at=app.reviewed_at)
        elif status == State.REJECTED:
            review.update(state="failed", at=finished_at)
        else:
            review.update(state="done", at=app.reviewed_at)
    if status not in (State.SUBMITTED, State.REVIEWING):
        result.update(state="failed" if status in (State.REJECTED, State.EXPIRED) else "done", at=finished_at)
    return [{"step": "submitted", "state": "done", "at": app.created_at}, holder, review, result]


def current_step(step_list: list[dict]) -> str:
    """R-17: the step the application is at (the result once it has ended)."""
    for s in step_list:
        if s["state"] == "current":
            return s["step"]
    return "result"


def transition(
    session: Session,
    app: Application,
    to: State,
    *,
    actor: str,
    now: dt.datetime,
    reasons: list[dict] | None = None,
    detail: dict | None = None,
    event: dict | None = None,
    finished_at: dt.datetime | None = None,
) -> Application:
    """R-20: the one way an application changes state. A lapsed application is `expired` for every
    transition but the one that records its expiry (R-15). An end records `finished_at` (default `now`) in the
    same UPDATE: a second UPDATE of the row in this transaction would make PostgreSQL check its foreign keys
    again, taking KEY SHARE on the shop — a wait, behind a wave chunk that holds the shop, that closed a
    deadlock with that chunk waiting for this very application."""
    # Lock the row and read its state as committed; a concurrent verb waits here, then sees ours.
    locked = State(session.scalars(select(Application.status).where(Application.id == app.id).with_for_update()).one())
    app.status = locked.value
    current = State.EXPIRED if to != State.EXPIRED and lapsed(app, now) else locked
    if to not in TRANSITIONS[current]:
        raise errors.InvalidTransition(
            _l("An application in state {state} cannot become {to}", state=current.value, to=to.value)
        )
    app.status = to.value
    app.updated_at = now
    if reasons is not None:
        app.reasons = reasons
    if to not in IN_PROGRESS:
        app.finished_at = finished_at or now
    audit.record(
        session,
        at=now,
        actor=actor,
        action=f"upgrade.{to.value}",
        target_kind="upgrade_application",
        target_id=app.id,
        subject_id=app.subject_id,
        shop_id=app.shop_id,
        from_state=locked.value,
        to_state=to.value,
        detail={**({"reasons": app.reasons} if reasons else {}), **(detail or {})},
    )
    events.emit(
        session,
        f"upgrade.{to.value}",
        at=now,
        shop_id=app.shop_id,
        subject_id=app.subject_id,
        data=event_data_of(app, **(event or {})),
    )
    session.flush()
    return app


def end(
    session: Session,
    app: Application,
    to: State,
    *,
    actor: str,
    now: dt.datetime,
    reasons: list[dict] | None = None,
    detail: dict | None = None,
    finished_at: dt.datetime | None = None,
) -> Application:
    """An end without success: the transition, then the slot and the operator place go back (R-33, R-41)."""
    transition(session, app, to, actor=actor, now=now, reasons=reasons, detail=detail, finished_at=finished_at)
    quotas.release(session, application_id=app.id)
    return app


def expire(session: Session, app: Application, *, actor: str, now: dt.datetime) -> Application:
    """R-15: records the expiry of a lapsed application and frees what it held. It ended at its deadline,
    whenever this runs."""
    end(
        session,
        app,
        State.EXPIRED,
        actor=actor,
        now=now,
        reasons=[{"code": "CONFIRMATION_EXPIRED"}],
        finished_at=app.confirmation_expires_at or now,
    )
    return app


def review_step(session: Session, app: Application, to: Review, *, actor: str, now: dt.datetime, detail: dict) -> None:
    """R-16: the staff review step of an application in `reviewing` — waiting, then approved or rejected."""
    current = Review(app.staff_review) if app.staff_review else None
    if State(app.status) != State.REVIEWING or to not in REVIEW_TRANSITIONS[current]:
        raise errors.InvalidTransition(NOT_WAITING_FOR_STAFF)
    app.staff_review = to.value
    app.reviewed_at = now
    app.updated_at = now
    audit.record(
        session,
        at=now,
        actor=actor,
        action=f"upgrade.review.{to.value}",
        target_kind="upgrade_application",
        target_id=app.id,
        subject_id=app.subject_id,
        shop_id=app.shop_id,
        from_state=app.status,
        to_state=app.status,
        detail={"review": {"from": current.value if current else None, "to": to.value}, **detail},
    )


def event_data(
    *,
    application_id: str,
    shop_id: str,
    account_id: str,
    subject_id: str,
    origin: str,
    status: str,
    account_type: str,
    attempt: int,
    reasons: list[str],
    **extra: object,
) -> dict:
    """R-61: the payload of every `upgrade.*` event, whether a wave or a merchant's application made it."""
    return {
        "application_id": application_id,
        "shop_id": shop_id,
        "account_id": account_id,
        "subject_id": subject_id,
        "origin": origin,
        "status": status,
        "account_type": account_type,
        "attempt": attempt,
        "reasons": reasons,
        **extra,
    }


def event_data_of(app: Application, **extra: object) -> dict:
    """R-61: `event_data` for an application as it stands."""
    return event_data(
        application_id=app.id,
        shop_id=app.shop_id,
        account_id=app.account_id,
        subject_id=app.subject_id,
        origin=app.origin,
        status=app.status,
        account_type=app.account_type,
        attempt=app.attempt,
        reasons=[r["code"] for r in app.reasons],
        **extra,
    )
