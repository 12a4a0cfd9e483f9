"""审核队列: the applications of big accounts waiting for staff (R-16). Each one's page shows the checks run again
now — exactly what `approve` will decide on — before staff approve it or reject it with a reason the merchant
reads. The same `upgrades.approve` and `upgrades.staff_reject` as POST /api/v1/admin/upgrade-applications/…"""

from fastapi import Query

from guanhao import errors
from guanhao.console import pages
from guanhao.console.session import CurrentVisit, Form, Visit
from guanhao.console.staff.common import render, router, staff
from guanhao.db import Session
from guanhao.http import decode_cursor, page
from guanhao.i18n import _l
from guanhao.subjects import service as subjects
from guanhao.upgrades import lifecycle
from guanhao.upgrades import service as upgrades
from guanhao.upgrades.models import Application, State

QUEUE_PAGE = 50
REASON_MOST = 500
REASON_REQUIRED = _l("Give the reason for the rejection; the merchant reads it")


def _row(session: Session, app: Application) -> dict:
    shop = subjects.get_shop(session, app.shop_id)
    return {"app": app, "shop": shop, "account": subjects.get_account(session, app.account_id)}


@router.get("/review")
def queue(current: CurrentVisit, cursor: str | None = Query(default=None, max_length=200)):
    staff(current)
    with current.unit() as (session, _now):
        apps = upgrades.review_queue(session, after_seq=decode_cursor(cursor), limit=QUEUE_PAGE)
        rows = [_row(session, app) for app in apps]
    return render(
        current,
        "staff/review_queue.html",
        nav="review",
        rows=rows,
        next_cursor=page(apps, limit=QUEUE_PAGE, seq_of=lambda a: a.seq),
    )


def _detail(current: Visit, application_id: str, *, status: int = 200, reason: str = "", error=None):
    with current.unit() as (session, now):
        app = upgrades.get_application(session, application_id)
        row = _row(session, app)
        checks = upgrades.recheck_all(session, app, current.policy, now=now) if app.awaiting_staff else []
        consents = upgrades.consents(session, app.id)
        subject = subjects.get_subject(session, app.subject_id)
        app_status = lifecycle.status_at(app, now).value
        reasons = upgrades.reasons_at(app, now)
    return render(
        current,
        "staff/review_detail.html",
        status=status,
        nav="review",
        subject=subject,
        checks=checks,
        failed=[c for c in checks if not c.passed and c.evaluated],
        consents=consents,
        app_status=app_status,
        reasons=reasons,
        reason=reason,
        error=error,
        **row,
    )


@router.get("/review/{application_id}")
def detail(application_id: str, current: CurrentVisit):
    staff(current)
    return _detail(current, application_id)


@router.post("/review/{application_id}/approve")
def approve(application_id: str, current: CurrentVisit, form: Form):
    """通过: the checks run again first; one that fails now rejects the application with every reason (R-16)."""
    viewer = staff(current)
    note = str(form.get("note", "")).strip()[:REASON_MOST] or None
    try:
        with current.unit() as (session, now):
            app = upgrades.approve(session, application_id, current.policy, actor=viewer.actor, now=now, note=note)
            succeeded = app.status == State.SUCCEEDED
    except errors.InvalidTransition as exc:
        current.flash("warning", exc.detail)
        return pages.redirect(current, f"/staff/review/{application_id}")
    if succeeded:
        current.flash("success", _l("Approved: the account is upgraded"))
    else:
        current.flash(
            "warning", _l("The checks failed when run again: the application was rejected with their reasons")
        )
    return pages.redirect(current, "/staff/review")


@router.post("/review/{application_id}/reject")
def reject(application_id: str, current: CurrentVisit, form: Form):
    """驳回 with a required reason, which the merchant reads as STAFF_REJECTED (R-16)."""
    viewer = staff(current)
    reason = str(form.get("reason", "")).strip()[:REASON_MOST]
    if not reason:
        return _detail(current, application_id, status=422, error=REASON_REQUIRED)
    try:
        with current.unit() as (session, now):
            upgrades.staff_reject(session, application_id, reason=reason, actor=viewer.actor, now=now)
    except errors.InvalidTransition as exc:
        current.flash("warning", exc.detail)
        return pages.redirect(current, f"/staff/review/{application_id}")
    current.flash("success", _l("Rejected; the merchant sees the reason"))
    return pages.redirect(current, "/staff/review")
