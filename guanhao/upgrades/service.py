"""The upgrade verbs: submit, accept, decline, approve, reject, withdraw, expire.

Every state change goes through `_transition`, which locks the row, checks TRANSITIONS, stamps
the time, writes the audit row and queues the outbox event — in the caller's transaction.
"""

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from guanhao import clock, errors, pii
from guanhao.audit import service as audit
from guanhao.db import Session
from guanhao.events import service as events
from guanhao.i18n import _l
from guanhao.operators.models import PendingChange
from guanhao.policy import Policy
from guanhao.posting import service as posting
from guanhao.subjects import service as subjects
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.upgrades import quotas, rules
from guanhao.upgrades.models import (
    FALLBACK_ORDER,
    IN_PROGRESS,
    TRANSITIONS,
    AccountType,
    Application,
    Consent,
    OfficialAccount,
    Origin,
    State,
)

NOT_WAITING_FOR_STAFF = _l("Only applications waiting for staff review can be approved or rejected")

# Codes that may stand alone as the error code of a refused submit (API.md: 409 list).
_SPECIFIC_409 = {
    "TYPE_QUOTA_EXHAUSTED",
    "QUOTA_EXHAUSTED",
    "VERTICAL_NOT_AVAILABLE",
    "APPLICATION_IN_PROGRESS",
    "ALREADY_UPGRADED",
    "OPERATOR_LIMIT_REACHED",
}


@dataclass(frozen=True)
class Context:
    shop: Shop
    subject: Subject
    account: Account | None
    facts: rules.Facts
    operator_hash: str | None


# ---------------------------------------------------------------- reading the world


@subjects.guard_shop_moves
def keep_shop_in_place(session: Session, shop: Shop) -> None:
    """R-21: an upgraded (or upgrading) shop keeps its binding and its subject."""
    if official_account(session, shop.id) is not None:
        raise errors.AlreadyUpgraded(_l("The shop's official account is upgraded; its binding and subject are kept"))
    if active_application(session, shop.id) is not None:
        raise errors.ApplicationInProgress(_l("An upgrade application for this shop is in progress"))


def bound_followers(session: Session, subject_id: str) -> int:
    stmt = (
        select(func.coalesce(func.sum(Account.followers), 0))
        .select_from(Shop)
        .join(Account, Shop.official_account_id == Account.id)
        .where(Shop.subject_id == subject_id)
    )
    return int(session.scalar(stmt) or 0)


def quota_facts(
    session: Session, subject: Subject, policy: Policy, *, excluding_application: str | None = None
) -> rules.QuotaFacts:
    totals = rules.quota_totals(
        policy,
        subject_type=subject.subject_type,
        cross_border=subject.cross_border,
        bound_followers=bound_followers(session, subject.id),
    )
    used = quotas.used_by_type(session, subject.id, excluding_application=excluding_application)
    return rules.QuotaFacts(totals=totals, used=used, cross_border=subject.cross_border)


def gather(
    session: Session,
    shop: Shop,
    policy: Policy,
    *,
    now: dt.datetime,
    explicit_type: str | None,
    operator: pii.Person | None,
    own: Application | None = None,
) -> Context:
    """The facts the rules need. With `own`, the application's own reservations are not counted (R-16)."""
    subject = session.get(Subject, shop.subject_id)
    account = session.get(Account, shop.official_account_id) if shop.official_account_id else None
    own_id = own.id if own is not None else None

    in_progress = (
        select(func.count())
        .select_from(Application)
        .where(Application.shop_id == shop.id, Application.status.in_(IN_PROGRESS))
    )
    if own_id:
        in_progress = in_progress.where(Application.id != own_id)

    operator_hash = None
    operator_used = None
    if own is not None:
        operator_hash = own.operator_id_hash
    elif operator is not None:
        operator_hash = operator.id_hash
    elif account is not None:
        operator_hash = account.holder_id_hash
    if operator_hash is not None:
        operator_used = quotas.used(session, quotas.operator_pool(operator_hash), excluding_application=own_id)

    already = account is not None and session.get(OfficialAccount, account.id) is not None
    facts = rules.Facts(
        shop_type=shop.shop_type,
        shop_status=shop.status,
        license_valid_until=subject.license_valid_until,
        today=clock.china_date(now),
        account_bound=account is not None,
        real_name_verified=account.real_name_verified if account else None,
        account_status=account.status if account else None,
        violations_90d=account.violations_90d if account else None,
        already_upgraded=already,
        other_in_progress=bool(session.scalar(in_progress)),
        quota=quota_facts(session, subject, policy, excluding_application=own_id),
        explicit_type=explicit_type,
        operator_used=operator_used,
        operator_capacity=policy.operators.capacity,
    )
    return Context(shop=shop, subject=subject, account=account, facts=facts, operator_hash=operator_hash)


def eligibility(
    session: Session, shop: Shop, policy: Policy, *, now: dt.datetime, account_type: str | None
) -> tuple[list[rules.Check], str | None]:
    ctx = gather(session, shop, policy, now=now, explicit_type=account_type, operator=None)
    return rules.evaluate(policy, ctx.facts)


def subject_quotas(session: Session, subject: Subject, policy: Policy) -> dict:
    q = quota_facts(session, subject, policy)
    return {t.value: {"total": q.totals[t.value], "used": q.used[t.value]} for t in AccountType}


def refusal(failures: list[rules.Check]) -> errors.DomainError:
    """The error for failed checks; reasons carry codes only and are worded in the caller's language on the way out."""
    reasons = [c.reason() for c in failures]
    detail = _l("Failed checks: {codes}", codes=", ".join(c.code for c in failures))
    if len(failures) == 1 and failures[0].code in _SPECIFIC_409:
        return errors.BY_CODE[failures[0].code](detail, reasons=reasons)
    return errors.NotEligible(detail, reasons=reasons)


# ---------------------------------------------------------------- the state machine


def _transition(
    session: Session,
    app: Application,
    to: State,
    *,
    actor: str,
    now: dt.datetime,
    reasons: list[dict] | None = None,
    action: str | None = None,
) -> Application:
    # Lock the row and read its state as committed; a concurrent verb waits here, then sees ours.
    current = State(session.scalar(select(Application.status).where(Application.id == app.id).with_for_update()))
    if to not in TRANSITIONS[current]:
        raise errors.InvalidTransition(
            _l("An application in state {state} cannot become {to}", state=current.value, to=to.value)
        )
    app.status = to.value
    app.updated_at = now
    if reasons is not None:
        app.reasons = reasons
    if to not in IN_PROGRESS:
        app.finished_at = now
    audit.record(
        session,
        at=now,
        actor=actor,
        action=action or f"upgrade.{to.value}",
        target_kind="upgrade_application",
        target_id=app.id,
        subject_id=app.subject_id,
        shop_id=app.shop_id,
        from_state=current.value,
        to_state=to.value,
        detail={"reasons": app.reasons} if reasons else {},
    )
    events.emit(
        session, f"upgrade.{to.value}", at=now, shop_id=app.shop_id, subject_id=app.subject_id, data=event_data(app)
    )
    session.flush()
    return app


def event_data(app: Application) -> dict:
    return {
        "application_id": app.id,
        "shop_id": app.shop_id,
        "account_id": app.account_id,
        "subject_id": app.subject_id,
        "origin": app.origin,
        "status": app.status,
        "account_type": app.account_type,
        "attempt": app.attempt,
        "reasons": [r["code"] for r in app.reasons],
    }


# ---------------------------------------------------------------- verbs


def submit(
    session: Session,
    shop_id: str,
    policy: Policy,
    *,
    account_type: str | None,
    operator: pii.Person | None,
    agree_terms: bool,
    actor: str,
    now: dt.datetime,
    public_url: str,
) -> Application:
    """SPEC R-10, R-15, R-19, R-32, R-33, R-40, R-41: a merchant's application, slots reserved at once."""
    if not agree_terms:
        raise errors.TermsNotAccepted(_l("agree_terms must be true: the merchant must accept the upgrade agreement"))
    shop = session.get(Shop, shop_id, with_for_update=True)
    if shop is None:
        raise errors.NotFound(_l("Shop {shop_id} not found", shop_id=shop_id))
    ctx = gather(session, shop, policy, now=now, explicit_type=account_type, operator=operator)
    checks, resolved = rules.evaluate(policy, ctx.facts)
    failures = rules.failed(checks)
    if failures:
        raise refusal(failures)

    account = ctx.account
    person = operator or pii.open_person(
        account.holder_name_enc, account.holder_id_number_enc, account.holder_phone_enc, context="person"
    )
    sealed = pii.seal_person(person, context="person")
    attempt = (session.scalar(select(func.max(Application.attempt)).where(Application.shop_id == shop.id)) or 0) + 1
    token = secrets.token_urlsafe(32)
    app = Application(
        id="app_" + uuid.uuid4().hex[:20],
        shop_id=shop.id,
        account_id=account.id,
        subject_id=shop.subject_id,
        origin=Origin.MANUAL.value,
        status=State.SUBMITTED.value,
        account_type=resolved,
        type_chosen=account_type is not None,
        attempt=attempt,
        reasons=[],
        operator_is_holder=operator is None,
        operator_name_enc=sealed["name_enc"],
        operator_id_number_enc=sealed["id_number_enc"],
        operator_phone_enc=sealed["phone_enc"],
        operator_id_hash=sealed["id_hash"],
        confirmation_token_hash=_token_hash(token),
        confirmation_token_enc=pii.vault().encrypt(token, context="confirmation_token"),
        confirmation_expires_at=now + policy.confirmation_ttl,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(app)
            session.flush()
    except IntegrityError:
        raise errors.ApplicationInProgress(_l("An upgrade application for this shop is already in progress")) from None

    app.account_type = _reserve_type(session, app, ctx, explicit=account_type, first=resolved, now=now)
    if (
        quotas.reserve(
            session,
            quotas.operator_pool(sealed["id_hash"]),
            policy.operators.capacity,
            application_id=app.id,
            account_id=account.id,
            now=now,
        )
        is None
    ):
        raise errors.OperatorLimitReached(_l("The operator already runs the most official accounts allowed"))

    session.add(
        Consent(
            application_id=app.id,
            party="merchant",
            decision="agreed",
            actor=actor,
            agreement_version=policy.confirmation.agreement_version,
            at=now,
        )
    )
    audit.record(
        session,
        at=now,
        actor=actor,
        action="upgrade.submitted",
        target_kind="upgrade_application",
        target_id=app.id,
        subject_id=app.subject_id,
        shop_id=app.shop_id,
        from_state=None,
        to_state=State.SUBMITTED.value,
        detail={
            "account_type": app.account_type,
            "type_chosen": app.type_chosen,
            "attempt": attempt,
            "operator": person.masked(),
            "agreement_version": policy.confirmation.agreement_version,
        },
    )
    events.emit(
        session, "upgrade.submitted", at=now, shop_id=app.shop_id, subject_id=app.subject_id, data=event_data(app)
    )
    events.emit(
        session,
        "upgrade.confirmation_requested",
        at=now,
        shop_id=app.shop_id,
        subject_id=app.subject_id,
        data={
            **event_data(app),
            "confirmation_url": confirmation_url(public_url, token),
            "expires_at": app.confirmation_expires_at.isoformat(),
        },
    )
    _notify_holder(session, account, shop, token, public_url=public_url, now=now)
    session.flush()
    return app


def _reserve_type(
    session: Session, app: Application, ctx: Context, *, explicit: str | None, first: str, now: dt.datetime
) -> str:
    totals = ctx.facts.quota.totals
    order = (
        [explicit] if explicit else [t.value for t in FALLBACK_ORDER][[t.value for t in FALLBACK_ORDER].index(first) :]
    )
    for candidate in order:
        pool = quotas.quota_pool(app.subject_id, candidate)
        if quotas.reserve(session, pool, totals[candidate], application_id=app.id, account_id=app.account_id, now=now):
            return candidate
    if explicit:
        raise errors.TypeQuotaExhausted(_l("No {type} slot left for this subject", type=explicit))
    raise errors.QuotaExhausted(_l("No account-type slot left for this subject"))


def _notify_holder(
    session: Session, account: Account, shop: Shop, token: str, *, public_url: str, now: dt.datetime
) -> None:
    from guanhao.sandbox import sms

    phone = pii.vault().decrypt(account.holder_phone_enc, context="person")
    text = (
        f"【抖店】店铺「{shop.name}」申请将您实名的抖音账号升级为店铺官方账号，"
        f"请在抖音 App 内确认：{confirmation_url(public_url, token)}"
    )
    sms.get_sender().send(session, phone=phone, text=text, code=None, purpose="holder_confirmation", now=now)


def confirmation_url(public_url: str, token: str) -> str:
    """The holder's page (HTML, phone-sized); the token is the last path segment. Apps read the same
    confirmation as JSON at /api/v1/confirmations/{token}."""
    return f"{public_url}/confirm/{token}"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def by_token(session: Session, token: str, *, lock: bool = False) -> Application:
    stmt = select(Application).where(Application.confirmation_token_hash == _token_hash(token))
    app = session.scalar(stmt.with_for_update() if lock else stmt)
    if app is None:
        raise errors.NotFound(_l("No such confirmation"))
    return app


def accept(session: Session, token: str, policy: Policy, *, now: dt.datetime) -> Application:
    """SPEC R-15, R-16: the holder consents; the review re-runs every check at once."""
    app = _holder_answers(session, token, "accepted", policy, now=now)
    _transition(session, app, State.REVIEWING, actor="holder", now=now)
    return review(session, app, policy, now=now)


def decline(session: Session, token: str, policy: Policy, *, now: dt.datetime) -> Application:
    app = _holder_answers(session, token, "declined", policy, now=now)
    _end(session, app, State.REJECTED, actor="holder", now=now, reasons=[{"code": "HOLDER_DECLINED"}])
    return app


def _holder_answers(session: Session, token: str, decision: str, policy: Policy, *, now: dt.datetime) -> Application:
    """The holder's consent (or refusal) recorded with the agreement version they saw (R-15)."""
    app = by_token(session, token, lock=True)
    _refuse_if_confirmation_closed(app, now)
    session.add(
        Consent(
            application_id=app.id,
            party="holder",
            decision=decision,
            actor="holder",
            agreement_version=policy.confirmation.agreement_version,
            at=now,
        )
    )
    app.confirmed_at = now
    return app


def _refuse_if_confirmation_closed(app: Application, now: dt.datetime) -> None:
    if app.status != State.SUBMITTED:
        raise errors.InvalidTransition(_l("The confirmation is closed: the application is {status}", status=app.status))
    if app.confirmation_expires_at is not None and now >= app.confirmation_expires_at:
        raise errors.ConfirmationExpired(_l("The confirmation has expired"))


def review(
    session: Session, app: Application, policy: Policy, *, now: dt.datetime, actor: str = "system"
) -> Application:
    """SPEC R-16: every check again, not counting the application's own reservations."""
    app.reviewed_at = now
    failures = recheck(session, app, policy, now=now)
    if failures:
        _end(session, app, State.REJECTED, actor=actor, now=now, reasons=[{"code": c.code} for c in failures])
        return app
    threshold = policy.review.staff_review_min_followers
    account = session.get(Account, app.account_id)
    if threshold is not None and account.followers >= threshold:
        app.awaiting_staff = True
        audit.record(
            session,
            at=now,
            actor=actor,
            action="upgrade.queued_for_staff_review",
            target_kind="upgrade_application",
            target_id=app.id,
            subject_id=app.subject_id,
            shop_id=app.shop_id,
            from_state=app.status,
            to_state=app.status,
            detail={"followers": account.followers, "threshold": threshold},
        )
        session.flush()
        return app
    return _succeed(session, app, policy, actor=actor, now=now)


def recheck(session: Session, app: Application, policy: Policy, *, now: dt.datetime) -> list[rules.Check]:
    shop = session.get(Shop, app.shop_id)
    ctx = gather(session, shop, policy, now=now, explicit_type=app.account_type, operator=None, own=app)
    checks, _ = rules.evaluate(policy, ctx.facts)
    failures = rules.failed(checks)
    if shop.official_account_id != app.account_id:
        failures.insert(0, rules.Check("ACCOUNT_NOT_BOUND", False))
    if not app.type_chosen:
        failures = [rules.Check("QUOTA_EXHAUSTED", False) if c.code == "TYPE_QUOTA_EXHAUSTED" else c for c in failures]
    return failures


def approve(session: Session, application_id: str, policy: Policy, *, actor: str, now: dt.datetime) -> Application:
    app = get_application(session, application_id, lock=True)
    if app.status != State.REVIEWING or not app.awaiting_staff:
        raise errors.InvalidTransition(NOT_WAITING_FOR_STAFF)
    failures = recheck(session, app, policy, now=now)
    if failures:
        raise refusal(failures)
    app.awaiting_staff = False
    app.reviewed_at = now
    return _succeed(session, app, policy, actor=actor, now=now)


def staff_reject(session: Session, application_id: str, *, reason: str, actor: str, now: dt.datetime) -> Application:
    app = get_application(session, application_id, lock=True)
    if app.status != State.REVIEWING or not app.awaiting_staff:
        raise errors.InvalidTransition(NOT_WAITING_FOR_STAFF)
    app.awaiting_staff = False
    app.reviewed_at = now
    _end(session, app, State.REJECTED, actor=actor, now=now, reasons=[{"code": "STAFF_REJECTED", "text": reason}])
    return app


def withdraw(session: Session, application_id: str, *, actor: str, now: dt.datetime) -> Application:
    app = get_application(session, application_id, lock=True)
    _end(session, app, State.WITHDRAWN, actor=actor, now=now)
    return app


def expire_confirmations(session: Session, *, now: dt.datetime, limit: int = 1000) -> int:
    """The expire-confirmations job: submitted applications past their confirmation deadline."""
    stmt = (
        select(Application)
        .where(Application.status == State.SUBMITTED.value, Application.confirmation_expires_at <= now)
        .order_by(Application.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    count = 0
    for app in session.scalars(stmt).all():
        _end(
            session,
            app,
            State.EXPIRED,
            actor="job:expire-confirmations",
            now=now,
            reasons=[{"code": "CONFIRMATION_EXPIRED"}],
        )
        count += 1
    return count


def _end(
    session: Session, app: Application, to: State, *, actor: str, now: dt.datetime, reasons: list[dict] | None = None
) -> None:
    """An unsuccessful end: the transition, then the slot and the operator place are freed (R-33, R-41)."""
    _transition(session, app, to, actor=actor, now=now, reasons=reasons)
    quotas.release(session, application_id=app.id)


def _succeed(session: Session, app: Application, policy: Policy, *, actor: str, now: dt.datetime) -> Application:
    account = session.get(Account, app.account_id)
    _transition(session, app, State.SUCCEEDED, actor=actor, now=now)
    cancellable = app.origin == Origin.AUTO or policy.cancel.allow_manual
    session.add(
        OfficialAccount(
            account_id=app.account_id,
            shop_id=app.shop_id,
            subject_id=app.subject_id,
            application_id=app.id,
            account_type=app.account_type,
            origin=app.origin,
            upgraded_at=now,
            cancel_deadline=now + policy.cancel_window if cancellable else None,
            operator_name_enc=app.operator_name_enc,
            operator_id_number_enc=app.operator_id_number_enc,
            operator_phone_enc=app.operator_phone_enc,
            operator_id_hash=app.operator_id_hash,
            operator_since=now,
            login_phone_before_enc=account.login_phone_enc,
        )
    )
    session.flush()
    return app


# ---------------------------------------------------------------- reads


def get_application(session: Session, application_id: str, *, lock: bool = False) -> Application:
    stmt = select(Application).where(Application.id == application_id)
    if lock:
        stmt = stmt.with_for_update()
    app = session.scalar(stmt)
    if app is None:
        raise errors.NotFound(_l("Application {application_id} not found", application_id=application_id))
    return app


def active_application(session: Session, shop_id: str) -> Application | None:
    return session.scalar(
        select(Application).where(Application.shop_id == shop_id, Application.status.in_(IN_PROGRESS))
    )


def applications_for_shop(session: Session, shop_id: str, *, before_seq: int | None, limit: int) -> list[Application]:
    stmt = select(Application).where(Application.shop_id == shop_id).order_by(Application.seq.desc()).limit(limit)
    if before_seq is not None:
        stmt = stmt.where(Application.seq < before_seq)
    return list(session.scalars(stmt))


def review_queue(session: Session, *, after_seq: int | None, limit: int) -> list[Application]:
    stmt = (
        select(Application)
        .where(Application.status == State.REVIEWING.value, Application.awaiting_staff.is_(True))
        .order_by(Application.seq)
        .limit(limit)
    )
    if after_seq is not None:
        stmt = stmt.where(Application.seq > after_seq)
    return list(session.scalars(stmt))


def consents(session: Session, application_id: str) -> list[Consent]:
    return list(session.scalars(select(Consent).where(Consent.application_id == application_id).order_by(Consent.seq)))


def official_account(session: Session, shop_id: str) -> OfficialAccount | None:
    return session.scalar(select(OfficialAccount).where(OfficialAccount.shop_id == shop_id))


def confirmation_token(app: Application) -> str | None:
    return pii.vault().decrypt(app.confirmation_token_enc, context="confirmation_token")


# ---------------------------------------------------------------- the official account as the merchant sees it


def is_upgraded(session: Session, account_id: str) -> bool:
    return session.get(OfficialAccount, account_id) is not None


def can_cancel(record: OfficialAccount | None, policy: Policy, *, now: dt.datetime) -> bool:
    """R-12: the merchant may still cancel this upgrade (取消升级)."""
    return record is not None and cancel_refusal(record, policy, now=now) is None


def cancel_refusal(record: OfficialAccount, policy: Policy, *, now: dt.datetime) -> errors.DomainError | None:
    """R-12: why this upgrade can no longer be cancelled — an auto upgrade within 30 days (policy) of its
    success can be; a manual one cannot (policy); at the deadline itself the window is closed."""
    if record.origin == Origin.MANUAL and not policy.cancel.allow_manual:
        return errors.CancelNotAllowed(_l("A manual upgrade cannot be cancelled"))
    if record.cancel_deadline is None or now >= record.cancel_deadline:
        deadline = record.cancel_deadline or record.upgraded_at
        return errors.CancelWindowClosed(
            _l("The upgrade could be cancelled until {deadline}", deadline=deadline.isoformat())
        )
    return None


def can_sell_as_official(policy: Policy, *, bound: bool, upgraded: bool, now: dt.datetime) -> bool:
    """R-14: after the platform's upgrade deadline only an upgraded official account sells as the shop."""
    deadline = policy.upgrade_deadline
    return bound and (upgraded or deadline is None or now < deadline)


@dataclass(frozen=True)
class OfficialView:
    """A shop's official account (店铺官方账号) with every rule's answer, for the API and the consoles alike."""

    shop: Shop
    account: Account | None
    record: OfficialAccount | None
    active: Application | None
    can_cancel: bool
    daily_post_limit: int
    can_sell_as_official: bool
    upgrade_deadline: dt.datetime | None

    @property
    def upgrade_status(self) -> str:
        if self.record is not None:
            return "upgraded"
        return "in_progress" if self.active is not None else "not_upgraded"

    @property
    def operator(self) -> dict | None:
        """The masked operator (运营人) of the upgraded account."""
        if self.record is None:
            return None
        r = self.record
        return pii.open_person(
            r.operator_name_enc, r.operator_id_number_enc, r.operator_phone_enc, context="person"
        ).masked()

    @property
    def login_phone(self) -> str | None:
        return (
            None if self.account is None else pii.masked_phone_from(self.account.login_phone_enc, context="login_phone")
        )


def official_view(session: Session, shop: Shop, policy: Policy, *, now: dt.datetime) -> OfficialView:
    account = session.get(Account, shop.official_account_id) if shop.official_account_id else None
    record = official_account(session, shop.id)
    upgraded = record is not None
    return OfficialView(
        shop=shop,
        account=account,
        record=record,
        active=None if upgraded else active_application(session, shop.id),
        can_cancel=can_cancel(record, policy, now=now),
        daily_post_limit=posting.daily_limit(policy, upgraded=upgraded),
        can_sell_as_official=can_sell_as_official(policy, bound=account is not None, upgraded=upgraded, now=now),
        upgrade_deadline=policy.upgrade_deadline,
    )


def cancel(session: Session, shop_id: str, policy: Policy, *, actor: str, now: dt.datetime) -> Application:
    """取消升级 (SPEC R-12, R-13): within the window of an auto upgrade, back to exactly the state before."""
    record = session.scalar(select(OfficialAccount).where(OfficialAccount.shop_id == shop_id).with_for_update())
    if record is None:
        raise errors.NotUpgraded(_l("The shop's official account is not upgraded"))
    if record.origin == Origin.MANUAL and not policy.cancel.allow_manual:
        raise errors.CancelNotAllowed(_l("A manual upgrade cannot be cancelled"))
    if record.cancel_deadline is None or now >= record.cancel_deadline:
        raise errors.CancelWindowClosed(
            _l("The upgrade could be cancelled until {deadline}", deadline=record.cancel_deadline.isoformat())
        )
    app = get_application(session, record.application_id, lock=True)
    account = session.get(Account, record.account_id, with_for_update=True)
    operator = pii.open_person(
        record.operator_name_enc, record.operator_id_number_enc, record.operator_phone_enc, context="person"
    )
    _transition(session, app, State.CANCELLED, actor=actor, now=now)
    # personal ownership, the holder, no operator, the login phone from before, the slot freed.
    account.login_phone_enc = record.login_phone_before_enc
    account.updated_at = now
    quotas.release(session, application_id=app.id)
    # A code sent for the upgraded account must not change it later, even once it is upgraded again.
    # SKIP LOCKED: a verify holding its change waits for our record lock, then finds the account not upgraded.
    pending = session.scalars(
        select(PendingChange.id)
        .where(PendingChange.account_id == record.account_id, PendingChange.status == "pending")
        .with_for_update(skip_locked=True)
    ).all()
    if pending:
        session.execute(
            update(PendingChange).where(PendingChange.id.in_(pending)).values(status="superseded", finished_at=now)
        )
    session.delete(record)
    audit.record(
        session,
        at=now,
        actor=actor,
        action="official_account.cancelled",
        target_kind="account",
        target_id=record.account_id,
        subject_id=record.subject_id,
        shop_id=record.shop_id,
        from_state="upgraded",
        to_state="not_upgraded",
        detail={
            "application_id": app.id,
            "origin": record.origin,
            "account_type": record.account_type,
            "operator_removed": operator.masked(),
        },
    )
    session.flush()
    return app
