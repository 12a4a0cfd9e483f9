"""The policy in force (the typed policy file the rules read), the API keys (created with the token shown once,
revoked) and the webhook endpoints with how their deliveries fare (R-61) — on the services behind
/api/v1/admin/api-keys and /api/v1/admin/webhook-endpoints."""

from fastapi import Query

from guanhao import errors
from guanhao.auth import service as auth
from guanhao.console import pages
from guanhao.console.session import CurrentVisit, Form
from guanhao.console.staff.common import render, router, staff
from guanhao.http import decode_key_cursor, key_page
from guanhao.i18n import _l
from guanhao.settings import get_settings
from guanhao.subjects import service as subjects
from guanhao.webhooks import service as webhooks

KEYS_PAGE = 100
ENDPOINTS_MOST = 100
SECTIONS = {
    "eligibility": _l("Eligibility (R-01, R-03)"),
    "quotas": _l("Account-type slots (R-30)"),
    "confirmation": _l("Holder confirmation (R-15)"),
    "review": _l("Staff review (R-16)"),
    "cancel": _l("Cancelling an upgrade (R-12)"),
    "posting": _l("Daily posting limit (R-23)"),
    "operators": _l("Operators (R-41)"),
    "auto_upgrade": _l("Auto upgrades (R-11)"),
    "sms": _l("SMS codes (R-24, R-42)"),
    "idempotency": _l("Idempotency keys"),
    "webhooks": _l("Webhooks (R-61)"),
    "login": _l("Console sign-in"),
}


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    """A policy section as (key, value) lines; sets sorted, nested tables as dotted keys."""
    if isinstance(value, dict):
        out = []
        for key, inner in value.items():
            out += _flatten(inner, f"{prefix}{key}." if isinstance(inner, dict) else f"{prefix}{key}")
        return out
    if isinstance(value, (set, frozenset, list, tuple)):
        value = ", ".join(sorted(str(v) for v in value))
    return [(prefix.rstrip("."), "—" if value is None else str(value))]


@router.get("/policy")
def policy_page(current: CurrentVisit):
    staff(current)
    dumped = current.policy.model_dump()
    sections = [(title, _flatten(dumped[key])) for key, title in SECTIONS.items() if key in dumped]
    return render(
        current,
        "staff/policy.html",
        nav="policy",
        sections=sections,
        deadline=current.policy.upgrade_deadline,
        source=get_settings().policy,
    )


def _integrations(current, *, cursor: str | None = None, created=None, status: int = 200, error=None):
    with current.unit() as (session, _now):
        keys = auth.keys_page(session, after=decode_key_cursor(cursor), limit=KEYS_PAGE)
        endpoints = webhooks.endpoints(session, after=None, limit=ENDPOINTS_MOST)
        health = webhooks.delivery_health(session, [e.id for e in endpoints])
    return render(
        current,
        "staff/integrations.html",
        nav="integrations",
        status=status,
        keys=keys,
        next_cursor=key_page(keys, limit=KEYS_PAGE),
        endpoints=endpoints,
        health=health,
        created=created,
        error=error,
    )


@router.get("/integrations")
def integrations(current: CurrentVisit, cursor: str | None = Query(default=None, max_length=200)):
    staff(current)
    return _integrations(current, cursor=cursor)


@router.post("/api-keys")
def create_key(current: CurrentVisit, form: Form):
    """A new key; its token is on this answer only (stored as a keyed hash), so it is shown, not redirected to."""
    viewer = staff(current)
    role = str(form.get("role", ""))
    subject_id = str(form.get("subject_id", "")).strip()[:64] or None
    label = str(form.get("label", "")).strip()[:200] or None
    try:
        with current.unit() as (session, now):
            if role == "merchant" and subject_id is not None:
                subjects.get_subject(session, subject_id)
            key, token = auth.create_key(
                session, role=role, subject_id=subject_id, label=label, actor=viewer.actor, now=now
            )
            created = {"id": key.id, "token": token, "role": key.role, "subject_id": key.subject_id}
    except errors.DomainError as exc:
        return _integrations(current, status=exc.status, error=exc.detail)
    return _integrations(current, created=created)


@router.post("/api-keys/{key_id}/revoke")
def revoke_key(key_id: str, current: CurrentVisit, form: Form):
    viewer = staff(current)
    with current.unit() as (session, now):
        auth.revoke(session, key_id, actor=viewer.actor, now=now)
    current.flash("success", _l("API key {key_id} revoked", key_id=key_id))
    return pages.redirect(current, "/staff/integrations")
