"""The merchant console (商家后台 · 店铺官方账号): the subject's shops, one page per shop's official account,
the upgrade wizard, cancel, operator and login-phone changes, the ownership record, batch upgrades and 站内信.

Every answer comes from the services the JSON API calls (upgrades, operators, subjects, audit, events);
a view reads and composes them and holds no query and no rule of its own. Another subject's shop is the
same 404 as a missing one (R-62).
"""

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import Response

from guanhao import errors, pii
from guanhao.audit import service as audit
from guanhao.auth import users
from guanhao.console import forms, notices, pages
from guanhao.console.session import CurrentVisit, Form, Viewer, Visit, form_list
from guanhao.db import Session
from guanhao.http import decode_key_cursor, key_page
from guanhao.i18n import Message, _l
from guanhao.operators import service as operators
from guanhao.settings import get_settings
from guanhao.subjects import service as subjects
from guanhao.subjects.models import Shop
from guanhao.upgrades import lifecycle, ownership, rules, visibility
from guanhao.upgrades import service as upgrades
from guanhao.upgrades.models import IN_PROGRESS, Application, State

router = APIRouter(route_class=pages.ConsoleRoute, include_in_schema=False)

SHOPS_PAGE = 100
HISTORY = 20
TRAIL = 50
BATCH_MOST = 50
FINISHED_UNSUCCESSFULLY = ("rejected", "expired")


def merchant(current: Visit) -> Viewer:
    if current.viewer is None:
        raise errors.Unauthenticated(_l("Sign in first"))
    if current.viewer.role != "merchant":
        raise errors.NotFound(_l("This page is for merchants"))
    return current.viewer


def _subject_id(viewer: Viewer) -> str:
    if viewer.subject_id is None:  # the users table holds every merchant to a subject; staff never get here
        raise errors.NotFound(_l("This page is for merchants"))
    return viewer.subject_id


def _shop(session: Session, viewer: Viewer, shop_id: str) -> Shop:
    """R-62: another subject's shop looks exactly like a missing one."""
    shop = subjects.get_shop(session, shop_id)
    if shop.subject_id != viewer.subject_id:
        raise errors.NotFound(_l("Shop {shop_id} not found", shop_id=shop_id))
    return shop


def _scope(viewer: Viewer | None) -> str:
    """R-62: a merchant sees its own subject's applications only (visibility.scope_of)."""
    return visibility.scope_of(is_staff=False, subject_id=viewer.subject_id if viewer is not None else None) or ""


def _application(session: Session, viewer: Viewer, shop: Shop, application_id: str) -> Application:
    """R-62: the viewer's subject's application of this shop; any other is the same 404 as a missing one."""
    app = upgrades.get_application(session, application_id)
    if not visibility.readable(app, _scope(viewer)) or app.shop_id != shop.id:
        raise errors.NotFound(_l("Application {application_id} not found", application_id=application_id))
    return app


# ---------------------------------------------------------------- a shop's state, as the pages show it


@dataclass(frozen=True)
class ShopState:
    view: upgrades.OfficialView
    latest: Application | None
    now: dt.datetime

    @property
    def latest_status(self) -> str | None:
        """The latest application's state as every read shows it (R-15: a lapsed one reads expired)."""
        return None if self.latest is None else lifecycle.status_at(self.latest, self.now).value

    @property
    def status(self) -> str:
        """The account card's 升级状态: 未升级 / 升级中 / 已升级 / 已取消 / 升级失败."""
        if self.view.record is not None:
            return "upgraded"
        if self.view.in_progress:
            return "in_progress"
        if self.latest_status in FINISHED_UNSUCCESSFULLY:
            return "failed"
        if self.latest_status == "cancelled":
            return "cancelled"
        return "not_upgraded"

    @property
    def waiting(self) -> bool:
        return self.view.in_progress

    @property
    def can_apply(self) -> bool:
        """Whether to offer 【立即升级】/【重新升级】 (the wizard's checks say whether it may go on)."""
        return self.view.account is not None and self.view.record is None and not self.view.in_progress

    @property
    def again(self) -> bool:
        return self.latest is not None


def shop_state(session: Session, shop: Shop, current: Visit, now: dt.datetime) -> ShopState:
    scope = _scope(current.viewer)
    view = upgrades.official_view(session, shop, current.policy, now=now, scope=scope)
    latest = upgrades.applications_for_shop(session, shop.id, scope=scope, before_seq=None, limit=1)
    return ShopState(view=view, latest=latest[0] if latest else None, now=now)


def _unread(session: Session, viewer: Viewer) -> int:
    return notices.unread(session, _subject_id(viewer), seen_seq=viewer.notices_seen_seq)


def _steps(app: Application | None, lang: str, now: dt.datetime) -> list[dict]:
    if app is None:
        return []
    state = {"done": "finish", "current": "process", "pending": "wait", "failed": "error", "skipped": "wait"}
    out = []
    for step in lifecycle.steps(app, now):
        if step["state"] == "skipped":
            description = _l("Skipped").render(lang)
        elif step["at"] is not None:
            description = pages.china_time(step["at"])
        else:
            description = ""
        out.append(
            {
                "title": pages.labels.text("step", step["step"], lang),
                "description": description,
                "state": state[step["state"]],
            }
        )
    return out


def _trail(session: Session, shop: Shop, lang: str) -> list[dict]:
    kinds = {
        "upgrade.succeeded": "success",
        "upgrade.rejected": "error",
        "upgrade.expired": "warning",
        "official_account.cancelled": "warning",
        "upgrade.submitted": "ongoing",
    }
    items = []
    for row in audit.for_shop(session, subject_id=shop.subject_id, shop_id=shop.id, limit=TRAIL):
        if row.action not in pages.labels.LABELS["action"]:
            continue
        detail = None
        reasons = row.detail.get("reasons") if isinstance(row.detail, dict) else None
        if reasons:
            detail = "; ".join(_reason_text(r, lang) for r in reasons)
        items.append(
            {
                "text": pages.labels.text("action", row.action, lang),
                "at": row.at,
                "kind": kinds.get(row.action, "default"),
                "detail": detail,
            }
        )
    return items


def _reason_text(stored: dict, lang: str) -> str:
    reason = rules.reason(stored["code"], stored.get("text"))
    message = reason.message
    return message.render(lang) if isinstance(message, Message) else message


def _reasons(app: Application | None, lang: str, now: dt.datetime) -> list[str]:
    return [_reason_text(r, lang) for r in upgrades.reasons_at(app, now)] if app is not None else []


def _official_context(session: Session, current: Visit, viewer: Viewer, shop: Shop, now: dt.datetime) -> dict:
    state = shop_state(session, shop, current, now)
    record = state.view.record
    refusal = upgrades.cancel_refusal(record, current.policy, now=now) if record is not None else None
    holder = None
    if state.view.account is not None:
        account = state.view.account
        holder = pii.open_person(
            account.holder_name_enc, account.holder_id_number_enc, account.holder_phone_enc, context="person"
        ).masked()
    return {
        "shop": shop,
        "subject": subjects.get_subject(session, shop.subject_id),
        "state": state,
        "view": state.view,
        "record": record,
        "latest": state.latest,
        "holder": holder,
        "progress": _steps(state.latest, current.lang, now),
        "reasons": _reasons(state.latest, current.lang, now),
        "cancel_refusal": refusal,
        "days_left": pages.days_until(record.cancel_deadline, now) if record is not None else 0,
        "now": now,
        "policy": current.policy,
    }


# ---------------------------------------------------------------- the shop list and batch upgrades


@router.get("/shops")
def shop_list(current: CurrentVisit, cursor: str | None = Query(default=None, max_length=200)):
    viewer = merchant(current)
    with current.unit() as (session, now):
        subject = subjects.get_subject(session, _subject_id(viewer))
        shops = subjects.shops_of(session, _subject_id(viewer), after=decode_key_cursor(cursor), limit=SHOPS_PAGE)
        rows = [(shop, shop_state(session, shop, current, now)) for shop in shops]
        quotas = upgrades.subject_quotas(session, subject, current.policy, now=now)
        unread = _unread(session, viewer)
    return pages.render(
        current,
        "merchant/shops.html",
        nav="shops",
        unread=unread,
        subject=subject,
        rows=rows,
        quotas=quotas,
        next_cursor=key_page(shops, limit=SHOPS_PAGE),
        now=now,
    )


@router.post("/shops/batch-upgrade")
def batch_upgrade(current: CurrentVisit, form: Form):
    """Several shops at once: each becomes its own application, in its own transaction, so one refusal never
    stops the others (R-10, R-19)."""
    viewer = merchant(current)
    shop_ids = list(dict.fromkeys(form_list(form, "shop_id")))[:BATCH_MOST]
    if not shop_ids:
        current.flash("warning", _l("Choose at least one shop"))
        return pages.redirect(current, "/shops")
    agreed = form.get("agree_terms") == "1"
    submitted, refused = [], []
    for shop_id in shop_ids:
        try:
            with current.unit() as (session, now):
                _shop(session, viewer, shop_id)
                upgrades.submit(
                    session,
                    shop_id,
                    current.policy,
                    account_type=None,
                    operator=None,
                    agree_terms=agreed,
                    actor=viewer.actor,
                    now=now,
                    public_url=get_settings().public_url,
                )
            submitted.append(shop_id)
        except errors.DomainError as exc:
            refused.append(f"{shop_id}:{exc.code}")
    current.flash(
        "success" if submitted else "warning",
        _l("{submitted} submitted, {refused} refused", submitted=len(submitted), refused=len(refused)),
    )
    query = urlencode([("id", s) for s in shop_ids] + [("refused", r) for r in refused])
    return pages.redirect(current, f"/shops/batch?{query}")


def _batch_rows(session: Session, current: Visit, viewer: Viewer, ids: list[str], refused: list[str], now):
    codes = dict(r.rsplit(":", 1) for r in refused if ":" in r)
    rows = []
    for shop_id in ids[:BATCH_MOST]:
        try:
            shop = _shop(session, viewer, shop_id)
        except errors.NotFound:
            continue
        refusal = errors.BY_CODE.get(codes.get(shop_id, ""))
        rows.append({"shop": shop, "state": shop_state(session, shop, current, now), "refusal": refusal})
    return rows


@router.get("/shops/batch")
def batch_progress(
    current: CurrentVisit,
    id: list[str] = Query(default=[], max_length=BATCH_MOST),
    refused: list[str] = Query(default=[], max_length=BATCH_MOST),
):
    viewer = merchant(current)
    with current.unit() as (session, now):
        rows = _batch_rows(session, current, viewer, id, refused, now)
        unread = _unread(session, viewer)
    return pages.render(
        current, "merchant/batch.html", nav="shops", unread=unread, rows=rows, query=current.request.url.query
    )


@router.get("/shops/batch/live")
def batch_live(
    current: CurrentVisit,
    id: list[str] = Query(default=[], max_length=BATCH_MOST),
    refused: list[str] = Query(default=[], max_length=BATCH_MOST),
):
    viewer = merchant(current)
    with current.unit() as (session, now):
        rows = _batch_rows(session, current, viewer, id, refused, now)
    return pages.fragment(current, "merchant/_batch_live.html", rows=rows, query=current.request.url.query)


# ---------------------------------------------------------------- 站内信


@router.get("/notifications")
def notifications(current: CurrentVisit):
    viewer = merchant(current)
    with current.unit() as (session, now):
        items = notices.from_events(session, _subject_id(viewer))
        shops = subjects.shops_of(session, _subject_id(viewer), after=None, limit=SHOPS_PAGE)
        views = [upgrades.official_view(session, shop, current.policy, now=now, scope=_scope(viewer)) for shop in shops]
        reminders = notices.closing_windows(views, now=now)
        if items and items[0].seq is not None:
            users.mark_notices_seen(session, viewer.user_id, items[0].seq)
        unseen = {n.seq for n in items if n.seq is not None and n.seq > viewer.notices_seen_seq}
    return pages.render(
        current, "merchant/notifications.html", nav="notices", unread=0, items=reminders + items, unseen=unseen
    )


# ---------------------------------------------------------------- 店铺官方账号


@router.get("/shops/{shop_id}")
def official_account(shop_id: str, current: CurrentVisit):
    viewer = merchant(current)
    with current.unit() as (session, now):
        shop = _shop(session, viewer, shop_id)
        context = _official_context(session, current, viewer, shop, now)
        history = upgrades.applications_for_shop(session, shop.id, scope=_scope(viewer), before_seq=None, limit=HISTORY)
        trail = _trail(session, shop, current.lang)
        unread = _unread(session, viewer)
    return pages.render(
        current,
        "merchant/official.html",
        nav="shops",
        unread=unread,
        history=history,
        trail=trail,
        reasons_of=lambda app: _reasons(app, current.lang, now),
        status_of=lambda app: lifecycle.status_at(app, now).value,
        **context,
    )


@router.get("/shops/{shop_id}/live")
def official_live(shop_id: str, current: CurrentVisit):
    viewer = merchant(current)
    with current.unit() as (session, now):
        shop = _shop(session, viewer, shop_id)
        context = _official_context(session, current, viewer, shop, now)
    return pages.fragment(current, "merchant/_live.html", **context)


# ---------------------------------------------------------------- the upgrade wizard


def _wizard(session: Session, current: Visit, viewer: Viewer, shop_id: str, now: dt.datetime, account_type):
    shop = _shop(session, viewer, shop_id)
    state = shop_state(session, shop, current, now)
    checks, resolved = upgrades.eligibility(session, shop, current.policy, now=now, account_type=account_type)
    return shop, state, checks, resolved


def _account_type(value: str | None) -> str | None:
    return value if value in pages.labels.LABELS["account_type"] else None


@router.get("/shops/{shop_id}/upgrade")
def wizard_checks(shop_id: str, current: CurrentVisit):
    """Step 1, 资质检查: every check, passed or not, with what to do (R-04)."""
    viewer = merchant(current)
    with current.unit() as (session, now):
        shop, state, checks, _resolved = _wizard(session, current, viewer, shop_id, now, None)
        unread = _unread(session, viewer)
    return pages.render(
        current,
        "merchant/wizard_checks.html",
        nav="shops",
        unread=unread,
        shop=shop,
        state=state,
        checks=checks,
        eligible=all(c.passed for c in checks),
        step=0,
    )


@router.get("/shops/{shop_id}/upgrade/type")
def wizard_type(shop_id: str, current: CurrentVisit, account_type: str | None = Query(default=None, max_length=16)):
    """Step 2, 选择账号类型: the slots left of each type; no choice is 自动 (main → vertical → dedicated, R-32)."""
    viewer = merchant(current)
    with current.unit() as (session, now):
        shop, _state, _checks, resolved = _wizard(session, current, viewer, shop_id, now, None)
        subject = subjects.get_subject(session, shop.subject_id)
        quotas = upgrades.subject_quotas(session, subject, current.policy, now=now)
        unread = _unread(session, viewer)
    return pages.render(
        current,
        "merchant/wizard_type.html",
        nav="shops",
        unread=unread,
        shop=shop,
        subject=subject,
        quotas=quotas,
        resolved=resolved,
        chosen=_account_type(account_type),
        step=1,
    )


def _holder_masked(state: ShopState) -> dict | None:
    account = state.view.account
    if account is None:
        return None
    return pii.open_person(
        account.holder_name_enc, account.holder_id_number_enc, account.holder_phone_enc, context="person"
    ).masked()


@router.get("/shops/{shop_id}/upgrade/operator")
def wizard_operator(shop_id: str, current: CurrentVisit, account_type: str | None = Query(default=None, max_length=16)):
    """Step 3, 运营人: the account holder (R-40), or another person the merchant names."""
    viewer = merchant(current)
    with current.unit() as (session, now):
        shop = _shop(session, viewer, shop_id)
        state = shop_state(session, shop, current, now)
        unread = _unread(session, viewer)
    return pages.render(
        current,
        "merchant/wizard_operator.html",
        nav="shops",
        unread=unread,
        shop=shop,
        holder=_holder_masked(state),
        account_type=_account_type(account_type),
        operator="holder",
        person=forms.PersonForm(),
        step=2,
    )


def _confirm_page(current: Visit, viewer: Viewer, shop_id: str, form: dict, *, error=None, status=200):
    account_type = _account_type(str(form.get("account_type") or "") or None)
    other = form.get("operator") == "other"
    person = forms.person_form(form) if other else forms.PersonForm()
    with current.unit() as (session, now):
        shop = _shop(session, viewer, shop_id)
        state = shop_state(session, shop, current, now)
        unread = _unread(session, viewer)
    common = {"nav": "shops", "unread": unread, "shop": shop, "account_type": account_type, "status": status}
    if other and person.person() is None:
        return pages.render(
            current,
            "merchant/wizard_operator.html",
            holder=_holder_masked(state),
            operator="other",
            person=person,
            step=2,
            **common,
        )
    return pages.render(
        current,
        "merchant/wizard_confirm.html",
        holder=_holder_masked(state),
        operator="other" if other else "holder",
        person=person,
        masked=pii.Person(person.name, person.id_number, person.phone).masked() if other else None,
        what_changes=rules.WHAT_CHANGES,
        error=error,
        step=3,
        **common,
    )


@router.post("/shops/{shop_id}/upgrade/confirm")
def wizard_confirm(shop_id: str, current: CurrentVisit, form: Form):
    """Step 4, 确认协议: what will be submitted, and the agreement with its version."""
    return _confirm_page(current, merchant(current), shop_id, form)


@router.post("/shops/{shop_id}/upgrade")
def submit(shop_id: str, current: CurrentVisit, form: Form):
    """立即升级: the same `upgrades.submit` as POST /api/v1/shops/{shop_id}/upgrade-applications."""
    viewer = merchant(current)
    other = form.get("operator") == "other"
    person = forms.person_form(form).person() if other else None
    if other and person is None:
        return _confirm_page(current, viewer, shop_id, form, status=422)
    try:
        with current.unit() as (session, now):
            _shop(session, viewer, shop_id)
            app = upgrades.submit(
                session,
                shop_id,
                current.policy,
                account_type=_account_type(str(form.get("account_type") or "") or None),
                operator=person,
                agree_terms=form.get("agree_terms") == "1",
                actor=viewer.actor,
                now=now,
                public_url=get_settings().public_url,
            )
    except (errors.NotFound, errors.Forbidden):
        raise
    except errors.DomainError as exc:
        return _confirm_page(current, viewer, shop_id, form, error=exc, status=exc.status)
    current.flash("success", _l("Upgrade application submitted; waiting for the account holder"))
    return pages.redirect(current, f"/shops/{shop_id}/applications/{app.id}")


def _application_context(session: Session, current: Visit, viewer: Viewer, shop_id: str, application_id: str, now):
    shop = _shop(session, viewer, shop_id)
    app = _application(session, viewer, shop, application_id)
    link = None
    if get_settings().sandbox and lifecycle.status_at(app, now) == State.SUBMITTED:
        # Sandbox only: the holder's link, so a demo can play the holder (outside sandbox it goes to the holder alone).
        token = upgrades.confirmation_token(app)
        link = upgrades.confirmation_url("", token) if token else None
    return {
        "shop": shop,
        "app": app,
        "progress": _steps(app, current.lang, now),
        "reasons": _reasons(app, current.lang, now),
        "holder_link": link,
        "app_status": lifecycle.status_at(app, now).value,
        "waiting": lifecycle.status_at(app, now) in IN_PROGRESS,
    }


@router.get("/shops/{shop_id}/applications/{application_id}")
def application_page(shop_id: str, application_id: str, current: CurrentVisit):
    """Submitted → waiting for the holder (polling) → the result."""
    viewer = merchant(current)
    with current.unit() as (session, now):
        context = _application_context(session, current, viewer, shop_id, application_id, now)
        unread = _unread(session, viewer)
    return pages.render(current, "merchant/application.html", nav="shops", unread=unread, step=4, **context)


@router.get("/shops/{shop_id}/applications/{application_id}/live")
def application_live(shop_id: str, application_id: str, current: CurrentVisit):
    viewer = merchant(current)
    with current.unit() as (session, now):
        context = _application_context(session, current, viewer, shop_id, application_id, now)
    return pages.fragment(current, "merchant/_application_live.html", **context)


@router.post("/shops/{shop_id}/applications/{application_id}/withdraw")
def withdraw(shop_id: str, application_id: str, current: CurrentVisit, form: Form):
    viewer = merchant(current)
    with current.unit() as (session, now):
        shop = _shop(session, viewer, shop_id)
        _application(session, viewer, shop, application_id)
        upgrades.withdraw(session, application_id, actor=viewer.actor, now=now)
    current.flash("success", _l("Application withdrawn"))
    return pages.redirect(current, f"/shops/{shop_id}")


# ---------------------------------------------------------------- 取消升级


@router.get("/shops/{shop_id}/cancel")
def cancel_page(shop_id: str, current: CurrentVisit):
    viewer = merchant(current)
    with current.unit() as (session, now):
        shop = _shop(session, viewer, shop_id)
        context = _official_context(session, current, viewer, shop, now)
        unread = _unread(session, viewer)
    return pages.render(current, "merchant/cancel.html", nav="shops", unread=unread, **context)


@router.post("/shops/{shop_id}/cancel")
def cancel(shop_id: str, current: CurrentVisit, form: Form):
    """取消升级 (R-12, R-13): the same `upgrades.cancel` as the API; its refusal is shown as it is."""
    viewer = merchant(current)
    try:
        with current.unit() as (session, now):
            _shop(session, viewer, shop_id)
            upgrades.cancel(session, shop_id, current.policy, actor=viewer.actor, now=now)
    except (errors.CancelWindowClosed, errors.CancelNotAllowed, errors.NotUpgraded) as exc:
        current.flash("error", exc.detail)
        return pages.redirect(current, f"/shops/{shop_id}")
    current.flash("success", _l("The upgrade was cancelled; the account is back as it was before"))
    return pages.redirect(current, f"/shops/{shop_id}")


# ---------------------------------------------------------------- 更换运营人 and 换绑手机号 (SMS codes)


def _change_page(current: Visit, viewer: Viewer, shop_id: str, kind: str, *, status: int = 200, **form_state):
    with current.unit() as (session, now):
        shop = _shop(session, viewer, shop_id)
        context = _official_context(session, current, viewer, shop, now)
        unread = _unread(session, viewer)
    if context["record"] is None:
        raise errors.NotUpgraded(_l("The shop's official account is not upgraded yet; upgrade it first"))
    template = "merchant/operator.html" if kind == "operator" else "merchant/phone.html"
    defaults: dict[str, Any] = {"change_id": "", "countdown": 0, "sent_to": None, "error": None, "code_error": None}
    if kind == "operator":
        defaults["person"] = forms.PersonForm()
    else:
        defaults.update(new_phone="", phone_error=None)
    return pages.render(
        current, template, status=status, nav="shops", unread=unread, **context, **(defaults | form_state)
    )


@router.get("/shops/{shop_id}/operator")
def operator_page(shop_id: str, current: CurrentVisit):
    return _change_page(current, merchant(current), shop_id, "operator")


@router.post("/shops/{shop_id}/operator/code")
def operator_code(shop_id: str, current: CurrentVisit, form: Form):
    """获取验证码: `operators.request_operator_change`, a code to the new operator's phone (R-42)."""
    viewer = merchant(current)
    person_form = forms.person_form(form)
    person = person_form.person()
    if person is None:
        return _change_page(current, viewer, shop_id, "operator", status=422, person=person_form)
    try:
        with current.unit() as (session, now):
            _shop(session, viewer, shop_id)
            change = operators.request_operator_change(
                session, shop_id, person, current.policy, actor=viewer.actor, now=now
            )
    except (errors.NotFound, errors.NotUpgraded):
        raise
    except errors.DomainError as exc:
        return _change_page(
            current, viewer, shop_id, "operator", status=exc.status, person=person_form, error=exc.detail
        )
    return _change_page(
        current,
        viewer,
        shop_id,
        "operator",
        person=person_form,
        change_id=change.id,
        countdown=current.policy.sms.resend_cooldown_seconds,
        sent_to=pii.mask_phone(person.phone),
    )


def _verify(current: Visit, viewer: Viewer, shop_id: str, kind: str, form: dict, **form_state) -> Response:
    change_id = str(form.get("change_id", ""))[:64]
    code, code_error = forms.code_or_error(str(form.get("code", "")))
    if code is None or not change_id:
        error = None if change_id else _l("Get a code first")
        return _change_page(
            current,
            viewer,
            shop_id,
            kind,
            status=422,
            change_id=change_id,
            code_error=code_error,
            error=error,
            **form_state,
        )
    with current.unit() as (session, now):
        _shop(session, viewer, shop_id)
        result = operators.verify(session, shop_id, change_id, code, kind, current.policy, actor=viewer.actor, now=now)
    if result.error is not None:
        return _change_page(
            current,
            viewer,
            shop_id,
            kind,
            status=result.error.status,
            change_id=change_id if result.error.code == "CODE_INVALID" else "",
            error=result.error.detail,
            **form_state,
        )
    done = _l("The operator was changed") if kind == "operator" else _l("The login phone was changed")
    current.flash("success", done)
    return pages.redirect(current, f"/shops/{shop_id}")


@router.post("/shops/{shop_id}/operator/verify")
def operator_verify(shop_id: str, current: CurrentVisit, form: Form):
    return _verify(current, merchant(current), shop_id, "operator", form, person=forms.person_form(form))


@router.get("/shops/{shop_id}/phone")
def phone_page(shop_id: str, current: CurrentVisit):
    return _change_page(current, merchant(current), shop_id, "login_phone")


@router.post("/shops/{shop_id}/phone/code")
def phone_code(shop_id: str, current: CurrentVisit, form: Form):
    """获取验证码: `operators.request_phone_rebind`, a code to the new login phone (R-24)."""
    viewer = merchant(current)
    raw = str(form.get("new_phone", ""))[:20]
    phone, phone_error = forms.phone_or_error(raw)
    if phone is None:
        return _change_page(current, viewer, shop_id, "login_phone", status=422, new_phone=raw, phone_error=phone_error)
    try:
        with current.unit() as (session, now):
            _shop(session, viewer, shop_id)
            change = operators.request_phone_rebind(
                session, shop_id, phone, current.policy, actor=viewer.actor, now=now
            )
    except (errors.NotFound, errors.NotUpgraded):
        raise
    except errors.DomainError as exc:
        return _change_page(current, viewer, shop_id, "login_phone", status=exc.status, new_phone=raw, error=exc.detail)
    return _change_page(
        current,
        viewer,
        shop_id,
        "login_phone",
        new_phone=raw,
        change_id=change.id,
        countdown=current.policy.sms.resend_cooldown_seconds,
        sent_to=pii.mask_phone(phone),
    )


@router.post("/shops/{shop_id}/phone/verify")
def phone_verify(shop_id: str, current: CurrentVisit, form: Form):
    return _verify(
        current, merchant(current), shop_id, "login_phone", form, new_phone=str(form.get("new_phone", ""))[:20]
    )


# ---------------------------------------------------------------- 升级凭证


@router.get("/shops/{shop_id}/ownership-record.json")
def ownership_json(shop_id: str, current: CurrentVisit):
    """The ownership record exactly as GET /api/v1/shops/{shop_id}/official-account/ownership-record gives it."""
    viewer = merchant(current)
    with current.unit() as (session, now):
        _shop(session, viewer, shop_id)
        record = ownership.build(session, shop_id, now=now)
    body = json.dumps(record, ensure_ascii=False, indent=2, default=str)
    headers = {"Content-Disposition": f'attachment; filename="ownership-record-{shop_id}.json"'}
    return pages.finish(current, Response(body, media_type="application/json", headers=headers))


@router.get("/shops/{shop_id}/ownership-record")
def ownership_page(shop_id: str, current: CurrentVisit):
    viewer = merchant(current)
    with current.unit() as (session, now):
        shop = _shop(session, viewer, shop_id)
        record = ownership.build(session, shop_id, now=now)
        unread = _unread(session, viewer)
    return pages.render(
        current, "merchant/ownership.html", nav="shops", unread=unread, shop=shop, record=record, full_page=True
    )
