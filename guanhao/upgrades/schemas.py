import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from guanhao import pii
from guanhao.i18n import render
from guanhao.schemas import Bool, PersonIn, PersonOut, Reason, RequestBody
from guanhao.upgrades import lifecycle, rules
from guanhao.upgrades.models import Application, Consent
from guanhao.upgrades.service import OfficialView, reasons_at

AccountTypeName = Literal["main", "vertical", "dedicated"]
StatusName = Literal["submitted", "reviewing", "succeeded", "rejected", "expired", "withdrawn", "cancelled"]
StepState = Literal["done", "current", "pending", "failed", "skipped"]


class SubmitIn(RequestBody):
    account_type: AccountTypeName | None = Field(
        default=None, description="omit for main → vertical → dedicated in order"
    )
    operator: PersonIn | None = Field(
        default=None, description="omit to keep the holder's real-name identity as operator"
    )
    # `const` tells clients what the service enforces; false is refused as TERMS_NOT_ACCEPTED, not VALIDATION_ERROR.
    agree_terms: Bool = Field(
        description="the merchant accepts the upgrade agreement; must be true", json_schema_extra={"const": True}
    )


class StaffRejectIn(RequestBody):
    # Shown to the merchant as the rejection reason: blank is no reason.
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class ApproveIn(RequestBody):
    note: str | None = Field(default=None, max_length=500)


class Step(BaseModel):
    step: Literal["submitted", "holder_confirmation", "review", "result"]
    state: StepState
    at: dt.datetime | None


class ApplicationOut(BaseModel):
    application_id: str
    shop_id: str
    account_id: str
    subject_id: str
    origin: Literal["manual", "auto"]
    status: StatusName
    account_type: AccountTypeName
    attempt: int
    reasons: list[Reason]
    awaiting_staff_review: bool
    current_step: Literal["submitted", "holder_confirmation", "review", "result"]
    operator: PersonOut
    created_at: dt.datetime
    updated_at: dt.datetime
    confirmation_expires_at: dt.datetime | None
    steps: list[Step]


class ConsentOut(BaseModel):
    party: Literal["merchant", "holder"]
    decision: Literal["agreed", "accepted", "declined"]
    actor: str
    agreement_version: str
    at: dt.datetime


class AdminApplicationOut(ApplicationOut):
    confirmation_url: str | None = Field(
        default=None, description="sandbox mode only: the holder's link (R-62); absent otherwise"
    )
    consents: list[ConsentOut]


class ApplicationList(BaseModel):
    items: list[ApplicationOut]
    next_cursor: str | None = None


class CheckOut(BaseModel):
    code: str
    passed: bool
    evaluated: bool
    message: str
    fix: str | None


class EligibilityOut(BaseModel):
    eligible: bool
    resolved_account_type: AccountTypeName | None
    checks: list[CheckOut]


class QuotaLine(BaseModel):
    total: int
    used: int


class QuotasOut(BaseModel):
    main: QuotaLine
    vertical: QuotaLine
    dedicated: QuotaLine


class AccountBrief(BaseModel):
    account_id: str
    nickname: str
    followers: int
    login_phone: str


class OfficialAccountOut(BaseModel):
    shop_id: str
    account: AccountBrief | None
    upgrade_status: Literal["not_upgraded", "in_progress", "upgraded"]
    account_type: AccountTypeName | None
    ownership: Literal["personal", "enterprise"]
    origin: Literal["manual", "auto"] | None
    upgraded_at: dt.datetime | None
    operator: PersonOut | None
    daily_post_limit: int
    can_cancel: bool
    cancel_deadline: dt.datetime | None
    can_sell_as_official: bool
    upgrade_deadline: dt.datetime | None
    active_application_id: str | None


class ConfirmationOut(BaseModel):
    application_id: str
    status: StatusName
    expires_at: dt.datetime | None
    shop: dict
    subject: dict
    account: dict
    agreement_version: str
    what_changes: list[str]
    what_stays: list[str]


def render_reasons(reasons: list[dict], lang: str) -> list[dict]:
    out = []
    for stored in reasons:
        r = rules.reason(stored["code"], stored.get("text"))
        out.append({"code": r.code, "message": render(r.message, lang), "fix": render(r.fix, lang)})
    return out


def check_out(check: rules.Check, lang: str) -> dict:
    return {
        "code": check.code,
        "passed": check.passed,
        "evaluated": check.evaluated,
        "message": check.message.render(lang),
        "fix": render(check.fix, lang),
    }


def application_out(app: Application, lang: str, *, now: dt.datetime) -> dict:
    """An application as every read shows it at `now` (a lapsed one reads expired, R-15)."""
    step_list = lifecycle.steps(app, now)
    operator = pii.open_person(
        app.operator_name_enc, app.operator_id_number_enc, app.operator_phone_enc, context="person"
    )
    return {
        "application_id": app.id,
        "shop_id": app.shop_id,
        "account_id": app.account_id,
        "subject_id": app.subject_id,
        "origin": app.origin,
        "status": lifecycle.status_at(app, now).value,
        "account_type": app.account_type,
        "attempt": app.attempt,
        "reasons": render_reasons(reasons_at(app, now), lang),
        "awaiting_staff_review": app.awaiting_staff,
        "current_step": lifecycle.current_step(step_list),
        "operator": operator.masked(),
        "created_at": app.created_at,
        "updated_at": app.updated_at,
        "confirmation_expires_at": app.confirmation_expires_at,
        "steps": step_list,
    }


def consent_out(c: Consent) -> dict:
    return {
        "party": c.party,
        "decision": c.decision,
        "actor": c.actor,
        "agreement_version": c.agreement_version,
        "at": c.at,
    }


def official_account_out(view: OfficialView) -> dict:
    record, account = view.record, view.account
    return {
        "shop_id": view.shop.id,
        "account": None
        if account is None
        else {
            "account_id": account.id,
            "nickname": account.nickname,
            "followers": account.followers,
            "login_phone": view.login_phone,
        },
        "upgrade_status": view.upgrade_status,
        "account_type": record.account_type if record else None,
        "ownership": "enterprise" if record else "personal",
        "origin": record.origin if record else None,
        "upgraded_at": record.upgraded_at if record else None,
        "operator": view.operator,
        "daily_post_limit": view.daily_post_limit,
        "can_cancel": view.can_cancel,
        "cancel_deadline": record.cancel_deadline if record else None,
        "can_sell_as_official": view.can_sell_as_official,
        "upgrade_deadline": view.upgrade_deadline,
        "active_application_id": view.active.id if view.active is not None else None,
    }


class OwnershipOperator(BaseModel):
    operator: PersonOut | None
    since: str
    until: str | None
    by: str


class OwnershipHistoryLine(BaseModel):
    at: str
    actor: str
    action: str
    target_id: str
    from_: str | None = Field(alias="from")
    to: str | None
    audit_seq: int
    chain: str = Field(description="the audit chain holding the row: the subject id, or '-' for rows of no subject")
    row_hash: str


class OwnershipRecordOut(BaseModel):
    record_version: int
    generated_at: str
    shop: dict
    account: dict
    subject: dict
    upgrade: dict
    consents: list[dict]
    operators: list[OwnershipOperator]
    history: list[OwnershipHistoryLine]
    audit_chain: dict
    digest: str = Field(description="SHA-256 of the canonical JSON of every other field")
