"""The upgrade verbs (SPEC R-10..R-20): submit, accept, decline, approve, staff_reject, withdraw, expire,
cancel — and the official account as the merchant reads it.

States change only through guanhao.upgrades.lifecycle (the tables in models); the facts come from
guanhao.upgrades.facts and the decisions from guanhao.upgrades.rules, which a wave asks too.
"""

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import func, not_, select

from guanhao import errors, pii, sms
from guanhao.audit import service as audit
from guanhao.db import Session, refusing
from guanhao.events import service as events
from guanhao.i18n import _l
from guanhao.policy import Policy
from guanhao.posting import service as posting
from guanhao.subjects import service as subjects
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.subjects.schemas import AccountIn
from guanhao.upgrades import facts, lifecycle, quotas, rules, visibility
from guanhao.upgrades.lifecycle import NOT_WAITING_FOR_STAFF, lapsed, status_at
from guanhao.upgrades.models import (
    FALLBACK_ORDER,
    IN_PROGRESS,
    Application,
    Consent,
    OfficialAccount,
    Origin,
    Review,
    State,
)

# Codes that may stand alone as the error code of a refused submit (API.md: 409 list).
_SPECIFIC_409 = {
    "TYPE_QUOTA_EXHAUSTED",
    "QUOTA_EXHAUSTED",
    "VERTICAL_NOT_AVAILABLE",
    "APPLICATION_IN_PROGRESS",
    "ALREADY_UPGRADED",
    "OPERATOR_LIMIT_REACHED",
}
SWEEP_ACTOR = "job:expire-confirmations"

# What other domains do when an upgrade is cancelled (operators: pending SMS changes die with it).
CancelHook = Callable[[Session, OfficialAccount, str, dt.datetime], None]
CANCEL_HOOKS: list[CancelHook] = []


def on_cancel(hook: CancelHook) -> CancelHook:
    """Registers what another domain does when an upgrade is cancelled (R-13)."""
    CANCEL_HOOKS.append(hook)
    return hook


@dataclass(frozen=True)
class Client:
    """Where a holder's answer came from, for the audit row (R-60)."""

    address: str | None
    user_agent: str | None

    def detail(self) -> dict:
        return {"address": self.address, "user_agent": (self.user_agent or "")[:200] or None}


# ---------------------------------------------------------------- guards on the platform's sync


@subjects.guard_shop_moves
def keep_shop_in_place(session: Session, shop: Shop, now: dt.datetime) -> None:
    """R-21: an upgraded (or upgrading) shop keeps its binding and its subject."""
    expire_lapsed(session, shop_ids=[shop.id], now=now)
    if official_account(session, shop.id) is not None:
        raise errors.AlreadyUpgraded(_l("The shop's official account is upgraded; its binding and subject are kept"))
    if active_application(session, shop.id, now=now) is not None:
        raise errors.ApplicationInProgress(_l("An upgrade application for this shop is in progress"))


@subjects.guard_account_sync
def keep_what_the_subject_manages(session: Session, account: Account, incoming: AccountIn) -> None:
    """R-24: from the upgrade on, the login phone and the operator are the subject's to manage; a sync of an
    upgraded account may change its other fields, never its login phone or its holder."""
    if not is_upgraded(session, account.id):
        return
    holder = pii.open_person(
        account.holder_name_enc, account.holder_id_number_enc, account.holder_phone_enc, context="person"
    )
    login_phone = pii.vault().decrypt(account.login_phone_enc, context="login_phone")
    if incoming.login_phone != login_phone or incoming.holder.person() != holder:
        raise errors.ManagedBySubject(
            _l(
                "Account {account_id} is upgraded: its login phone and holder are managed by the subject",
                account_id=account.id,
            )
        )


# ---------------------------------------------------------------- what the rules say now


def eligibility(
    session: Session, shop: Shop, policy: Policy, *, now: dt.datetime, account_type: str | None
) -> tuple[list[rules.Check], str | None]:
    """R-04: every check, passed or not, and the type an application would get."""
    ctx = facts.gather(session, shop, policy, now=now, explicit_type=account_type)
    return rules.evaluate(policy, ctx.facts)


def subject_quotas(session: Session, subject: Subject, policy: Policy, *, now: dt.datetime) -> dict:
    """R-30, R-33: each type's total and the slots held now, reservations included."""
    totals = facts.quota_totals(session, subject, policy)
    used = facts.quota_used(session, subject.id, now=now)
    return {t: {"total": totals[t], "used": used[t]} for t in totals}


def refusal(failures: list[rules.Check]) -> errors.DomainError:
    """R-04: the error for failed checks, with every failed check as a reason."""
    reasons = [c.reason() for c in failures]
    detail = _l("Failed checks: {codes}", codes=", ".join(c.code for c in failures))
    if len(failures) == 1 and failures[0].code in _SPECIFIC_409:
        return errors.BY_CODE[failures[0].code](detail, reasons=reasons)
    return errors.NotEligible(detail, reasons=reasons)


# ---------------------------------------------------------------- the merchant applies


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
    """R-10, R-15, R-18, R-19, R-32, R-33, R-40, R-41: a merchant's application (its attempt number counts the
    shop's applications); its slot and its operator's place are reserved at once, under the database's bounds."""
    if not agree_terms:
        raise errors.TermsNotAccepted(_l("agree_terms must be true: the merchant must accept the upgrade agreement"))
    # FOR NO KEY UPDATE: it serialises the shop's submits without blocking the foreign-key checks of
    # other transactions writing rows that reference the shop (an expiry, an audit of its applications).
    shop = session.get(Shop, shop_id, with_for_update={"key_share": True})
    if shop is None:
        raise errors.NotFound(_l("Shop {shop_id} not found", shop_id=shop_id))
    account = session.get(Account, shop.official_account_id) if shop.official_account_id else None
    named = operator.id_hash if operator is not None else None
    operator_hash = rules.operator_id_hash(named=named, holder=account.holder_id_hash if account else None)
    pools = [quotas.quota_pool(shop.subject_id, t.value) for t in FALLBACK_ORDER]
    if operator_hash is not None:
        pools.append(quotas.operator_pool(operator_hash))
    # Lock the pools in key order (no circular waits with waves, ends or operator changes), recording the
    # expiry of what lapsed among their holders and the shop's own: every write treats it as ended.
    lock_pools(session, pools, shop_ids=[shop.id], now=now)
    ctx = facts.gather(session, shop, policy, now=now, explicit_type=account_type, operator_hash=named)
    checks, resolved = rules.evaluate(policy, ctx.facts)
    failures = rules.failed(checks)
    if failures:
        raise refusal(failures)
    assert account is not None and resolved is not None and operator_hash is not None

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
    # one application in progress per shop, held by a partial unique index.
    with refusing(
        session, errors.ApplicationInProgress(_l("An upgrade application for this shop is already in progress"))
    ):
        session.add(app)
    app.account_type = _reserve_type(
        session, app, ctx.facts.quota.totals, explicit=account_type, first=resolved, now=now
    )
    if not quotas.reserve(
        session, quotas.operator_pool(operator_hash), policy.operators.capacity,
        application_id=app.id, account_id=account.id, now=now,
    ):  # fmt: skip
        raise errors.OperatorLimitReached(_l("The operator already runs the most official accounts allowed"))

    consent = _consent(session, app, "merchant", "agreed", policy, actor=actor, now=now)
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
            "consent": consent,
        },
    )
    data = lifecycle.event_data_of(app)
    events.emit(session, "upgrade.submitted", at=now, shop_id=app.shop_id, subject_id=app.subject_id, data=data)
    # the capability travels towards the holder only: this event (the platform's app asks the holder
    # with it) and the SMS to the holder's phone.
    link = confirmation_url(public_url, token)
    expires_at = now + policy.confirmation_ttl
    events.emit(
        session,
        "upgrade.confirmation_requested",
        at=now,
        shop_id=app.shop_id,
        subject_id=app.subject_id,
        data={**data, "confirmation_url": link, "expires_at": expires_at.isoformat()},
    )
    sms.send(
        session,
        phone=pii.vault().decrypt(account.holder_phone_enc, context="person"),
        message=_l(
            "[Douyin Shop] The shop {shop} asks to upgrade the Douyin account registered to you to its official account; confirm in the Douyin app: {link}",
            shop=shop.name,
            link=link,
        ),
        code=None,
        purpose="holder_confirmation",
        now=now,
    )
    session.flush()
    return app


def _reserve_type(
    session: Session, app: Application, totals: dict[str, int], *, explicit: str | None, first: str, now: dt.datetime
) -> str:
    """R-32, R-33: the chosen type, or main → vertical → dedicated from the first with room; an explicitly
    chosen full type never falls back."""
    order = (
        [explicit] if explicit else [t.value for t in FALLBACK_ORDER[[t.value for t in FALLBACK_ORDER].index(first) :]]
    )
    for candidate in order:
        pool = quotas.quota_pool(app.subject_id, candidate)
        if quotas.reserve(session, pool, totals[candidate], application_id=app.id, account_id=app.account_id, now=now):
            return candidate
    if explicit:
        raise errors.TypeQuotaExhausted(_l("No {type} slot left for this subject", type=explicit))
    raise errors.QuotaExhausted(_l("No account-type slot left for this subject"))


def _consent(
    session: Session, app: Application, party: str, decision: str, policy: Policy, *, actor: str, now: dt.datetime
) -> dict:
    """R-15, R-60: a party's consent with the agreement version they saw; its facts go into the audit row."""
    version = policy.confirmation.agreement_version
    session.add(
        Consent(application_id=app.id, party=party, decision=decision, actor=actor, agreement_version=version, at=now)
    )
    return {"party": party, "decision": decision, "agreement_version": version}


def confirmation_url(public_url: str, token: str) -> str:
    """R-62: the holder's link, a capability that travels only towards the holder — their phone-sized page,
    the token its last path segment. Apps read the same confirmation as JSON at /api/v1/confirmations/{token}."""
    return f"{public_url}/confirm/{token}"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------- the holder answers


def by_token(session: Session, token: str, *, lock: bool = False) -> Application:
    """R-62: the holder's confirmation, found by its capability (stored as a hash)."""
    stmt = select(Application).where(Application.confirmation_token_hash == _token_hash(token))
    app = session.scalar(stmt.with_for_update().execution_options(populate_existing=True) if lock else stmt)
    if app is None:
        raise errors.NotFound(_l("No such confirmation"))
    return app


def accept(
    session: Session, token: str, policy: Policy, *, now: dt.datetime, client: Client | None = None
) -> Application:
    """R-15, R-16: the holder consents; the review re-runs every check at once."""
    app = _holder_answers(session, token, now=now)
    consent = _consent(session, app, "holder", "accepted", policy, actor="holder", now=now)
    lifecycle.transition(session, app, State.REVIEWING, actor="holder", now=now, detail=_answer_detail(consent, client))
    return review(session, app, policy, now=now)


def decline(
    session: Session, token: str, policy: Policy, *, now: dt.datetime, client: Client | None = None
) -> Application:
    """R-15: the holder refuses → rejected (HOLDER_DECLINED); the slot and the operator place go back."""
    app = _holder_answers(session, token, now=now)
    consent = _consent(session, app, "holder", "declined", policy, actor="holder", now=now)
    lifecycle.end(
        session, app, State.REJECTED, actor="holder", now=now,
        reasons=[{"code": "HOLDER_DECLINED"}], detail=_answer_detail(consent, client),
    )  # fmt: skip
    return app


def _holder_answers(session: Session, token: str, *, now: dt.datetime) -> Application:
    """R-15, R-20: only an application waiting for the holder, before its deadline, takes an answer."""
    # The shop before the application, the order every writer keeps (a wave chunk holds its shops, then waits for
    # their lapsed applications): an answer writes the application's row more than once, and PostgreSQL then
    # checks its foreign key again, taking KEY SHARE on the shop — which, taken last, could close a deadlock.
    shop_id = by_token(session, token).shop_id
    session.get(Shop, shop_id, with_for_update={"key_share": True})
    app = by_token(session, token, lock=True)
    if status_at(app, now) == State.EXPIRED:
        raise errors.ConfirmationExpired(_l("The confirmation has expired"))
    if app.status != State.SUBMITTED:
        raise errors.InvalidTransition(_l("The confirmation is closed: the application is {status}", status=app.status))
    app.confirmed_at = now
    return app


def _answer_detail(consent: dict, client: Client | None) -> dict:
    return {"consent": consent, "client": client.detail() if client else None}


# ---------------------------------------------------------------- review


def review(
    session: Session, app: Application, policy: Policy, *, now: dt.datetime, actor: str = "system"
) -> Application:
    """R-16: every check again, not counting the application's own reservations. Any failure → rejected
    with every failed reason; big accounts (policy) wait for staff; the rest succeed."""
    app.reviewed_at = now
    failures = recheck(session, app, policy, now=now)
    if failures:
        lifecycle.end(session, app, State.REJECTED, actor=actor, now=now, reasons=[{"code": c.code} for c in failures])
        return app
    account = session.get_one(Account, app.account_id)
    if rules.needs_staff_review(policy, account.followers):
        lifecycle.review_step(
            session, app, Review.WAITING, actor=actor, now=now,
            detail={"followers": account.followers, "threshold": policy.review.staff_review_min_followers},
        )  # fmt: skip
        session.flush()
        return app
    return _succeed(session, app, policy, actor=actor, now=now)


def recheck(session: Session, app: Application, policy: Policy, *, now: dt.datetime) -> list[rules.Check]:
    """R-16: the checks that fail now (`recheck_all`)."""
    return rules.failed(recheck_all(session, app, policy, now=now))


def recheck_all(session: Session, app: Application, policy: Policy, *, now: dt.datetime) -> list[rules.Check]:
    """R-16: every check again, passed or not, not counting the application's own reservations; a shop whose
    binding changed meanwhile fails ACCOUNT_NOT_BOUND, and a type the merchant did not choose fails as
    QUOTA_EXHAUSTED. What staff see before approving is what `approve` decides on."""
    shop = session.get_one(Shop, app.shop_id)
    ctx = facts.gather(session, shop, policy, now=now, explicit_type=app.account_type, own=app)
    checks, _ = rules.evaluate(policy, ctx.facts)
    if shop.official_account_id != app.account_id:
        checks.insert(0, rules.Check("ACCOUNT_NOT_BOUND", False))
    if not app.type_chosen:
        checks = [
            rules.Check("QUOTA_EXHAUSTED", False) if c.code == "TYPE_QUOTA_EXHAUSTED" and not c.passed else c
            for c in checks
        ]
    return checks


def approve(
    session: Session, application_id: str, policy: Policy, *, actor: str, now: dt.datetime, note: str | None = None
) -> Application:
    """R-16: staff approve an application waiting for them. The checks run again first: one that now fails
    rejects the application with every failed reason instead (the answer says so)."""
    app = get_application(session, application_id, lock=True)
    if not app.awaiting_staff:
        raise errors.InvalidTransition(NOT_WAITING_FOR_STAFF)
    failures = recheck(session, app, policy, now=now)
    if failures:
        reasons = [{"code": c.code} for c in failures]
        lifecycle.review_step(session, app, Review.REJECTED, actor=actor, now=now, detail={"recheck": reasons})
        lifecycle.end(session, app, State.REJECTED, actor=actor, now=now, reasons=reasons)
        return app
    lifecycle.review_step(session, app, Review.APPROVED, actor=actor, now=now, detail={"note": note} if note else {})
    return _succeed(session, app, policy, actor=actor, now=now)


def staff_reject(session: Session, application_id: str, *, reason: str, actor: str, now: dt.datetime) -> Application:
    """R-16: staff reject with a reason the merchant reads (STAFF_REJECTED)."""
    app = get_application(session, application_id, lock=True)
    if not app.awaiting_staff:
        raise errors.InvalidTransition(NOT_WAITING_FOR_STAFF)
    lifecycle.review_step(session, app, Review.REJECTED, actor=actor, now=now, detail={})
    lifecycle.end(
        session, app, State.REJECTED, actor=actor, now=now, reasons=[{"code": "STAFF_REJECTED", "text": reason}]
    )
    return app


def _succeed(session: Session, app: Application, policy: Policy, *, actor: str, now: dt.datetime) -> Application:
    """The account becomes the subject's (R-16, R-22): its record, with the type fixed for good (R-34), the
    operator named at submit (R-40), the login phone a cancel restores (R-13) and, when the policy lets this
    upgrade be cancelled, its deadline (R-12)."""
    account = session.get_one(Account, app.account_id)
    cancellable = app.origin == Origin.AUTO or policy.cancel.allow_manual
    deadline = now + policy.cancel_window if cancellable else None
    lifecycle.transition(
        session, app, State.SUCCEEDED, actor=actor, now=now,
        event={"cancel_deadline": deadline.isoformat() if deadline else None, "wave_id": app.wave_id},
    )  # fmt: skip
    session.add(
        OfficialAccount(
            account_id=app.account_id,
            shop_id=app.shop_id,
            subject_id=app.subject_id,
            application_id=app.id,
            account_type=app.account_type,
            origin=app.origin,
            upgraded_at=now,
            cancel_deadline=deadline,
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


# ---------------------------------------------------------------- withdraw, expire


def withdraw(session: Session, application_id: str, *, actor: str, now: dt.datetime) -> Application:
    """R-18, R-20: the merchant withdraws an application still waiting for the holder."""
    app = get_application(session, application_id, lock=True)
    return lifecycle.end(session, app, State.WITHDRAWN, actor=actor, now=now)


def expire_confirmations(session: Session, *, now: dt.datetime, limit: int = 1000) -> int:
    """R-15, the sweep: records the expiry of lapsed applications nobody touched. Applications another
    transaction holds are left for the next run (or that transaction records them itself)."""
    stmt = (
        select(Application)
        .where(facts.lapsed(now))
        .order_by(Application.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    apps = list(session.scalars(stmt))
    # The pools they give back, in key order before the first release: releasing application by
    # application would take pools out of order and close a circle with a submit holding some of them.
    quotas.lock(session, quotas.pools_held_by(session, [a.id for a in apps]))
    for app in apps:
        lifecycle.expire(session, app, actor=SWEEP_ACTOR, now=now)
    return len(apps)


def expire_lapsed(session: Session, *, now: dt.datetime, shop_ids: Iterable[str] = ()) -> int:
    """R-15: a write that meets lapsed applications of the shops it touches records their expiry first, in its
    own transaction (the applications, then their pools in key order)."""
    lapsed = facts.lapsed_among(session, shop_ids=shop_ids, now=now)
    quotas.lock(session, quotas.pools_held_by(session, [a.id for a in lapsed]))
    for app in lapsed:
        lifecycle.expire(session, app, actor=SWEEP_ACTOR, now=now)
    return len(lapsed)


def lock_pools(
    session: Session, pools: Iterable[str], *, shop_ids: Iterable[str], now: dt.datetime
) -> tuple[dict[str, int], int]:
    """R-15, R-33, R-41: locks `pools` for a write that counts them, having recorded the expiry of what lapsed
    among the shops' applications and the pools' holders; returns (what each pool holds, how many expired).

    The lock order is an application, then pools in key order, and no pool after that: the shops' own lapsed
    applications are locked first (waiting for them); the lapsed holders of the pools, found without a lock,
    have their pools locked together with ours, then are locked themselves with SKIP LOCKED — one that
    another transaction holds is being ended by that transaction, which then releases into pools we hold:
    waiting for it would close a circle. Such a holder's place counts until it is released (never too few)."""
    pools = list(pools)
    own = facts.lapsed_among(session, shop_ids=shop_ids, now=now)
    mine = {a.id for a in own}
    holders = [a for a in facts.lapsed_holders(session, pools, now=now) if a not in mine]
    held = quotas.lock(session, [*pools, *quotas.pools_held_by(session, [*mine, *holders])])
    lapsed = own + facts.lock_lapsed(session, holders, now=now)
    for app in lapsed:
        lifecycle.expire(session, app, actor=SWEEP_ACTOR, now=now)
    if lapsed:
        held = quotas.counts(session, pools)
    return {p: held.get(p, 0) for p in pools}, len(lapsed)


# ---------------------------------------------------------------- cancel


def cancel(session: Session, shop_id: str, policy: Policy, *, actor: str, now: dt.datetime) -> Application:
    """取消升级 (R-12, R-13): within the window of an auto upgrade, back to exactly the state before —
    personal ownership, the holder, no operator, the login phone from before, the slot freed."""
    record = session.scalar(select(OfficialAccount).where(OfficialAccount.shop_id == shop_id).with_for_update())
    if record is None:
        raise errors.NotUpgraded(_l("The shop's official account is not upgraded"))
    refused = cancel_refusal(record, policy, now=now)
    if refused is not None:
        raise refused
    app = get_application(session, record.application_id, lock=True)
    account = session.get_one(Account, record.account_id, with_for_update={"key_share": True})
    operator = pii.open_person(
        record.operator_name_enc, record.operator_id_number_enc, record.operator_phone_enc, context="person"
    )
    lifecycle.transition(session, app, State.CANCELLED, actor=actor, now=now)
    account.login_phone_enc = record.login_phone_before_enc
    account.updated_at = now
    quotas.release(session, application_id=app.id)
    for hook in CANCEL_HOOKS:
        hook(session, record, actor, now)
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


# ---------------------------------------------------------------- reads


def get_application(session: Session, application_id: str, *, lock: bool = False) -> Application:
    stmt = select(Application).where(Application.id == application_id)
    if lock:
        stmt = stmt.with_for_update()
    app = session.scalar(stmt)
    if app is None:
        raise errors.NotFound(_l("Application {application_id} not found", application_id=application_id))
    return app


def active_application(session: Session, shop_id: str, *, now: dt.datetime) -> Application | None:
    """R-19: the shop's application in progress, if any (a lapsed one is not)."""
    return session.scalar(
        select(Application).where(
            Application.shop_id == shop_id, Application.status.in_(IN_PROGRESS), not_(facts.lapsed(now))
        )
    )


def applications_for_shop(
    session: Session, shop_id: str, *, scope: str | None, before_seq: int | None, limit: int
) -> list[Application]:
    """R-62: the shop's applications the caller of `scope` may read (visibility.scope_of), newest first: after
    the shop changed subject, the earlier subject's applications are not the new subject's to see."""
    stmt = visibility.only_visible(
        select(Application).where(Application.shop_id == shop_id).order_by(Application.seq.desc()).limit(limit), scope
    )
    if before_seq is not None:
        stmt = stmt.where(Application.seq < before_seq)
    return list(session.scalars(stmt))


def review_queue(session: Session, *, after_seq: int | None, limit: int) -> list[Application]:
    """R-16: the applications waiting for staff, oldest first."""
    stmt = (
        select(Application)
        .where(Application.status == State.REVIEWING.value, Application.staff_review == Review.WAITING.value)
        .order_by(Application.seq)
        .limit(limit)
    )
    if after_seq is not None:
        stmt = stmt.where(Application.seq > after_seq)
    return list(session.scalars(stmt))


def consents(session: Session, application_id: str) -> list[Consent]:
    """R-15, R-60: the merchant's and the holder's consents, with the agreement version each saw."""
    return list(session.scalars(select(Consent).where(Consent.application_id == application_id).order_by(Consent.seq)))


def official_account(session: Session, shop_id: str) -> OfficialAccount | None:
    return session.scalar(select(OfficialAccount).where(OfficialAccount.shop_id == shop_id))


def confirmation_token(app: Application) -> str | None:
    return pii.vault().decrypt(app.confirmation_token_enc, context="confirmation_token")


def reasons_at(app: Application, now: dt.datetime) -> list[dict]:
    """The application's reasons as every read shows them: a lapsed one has CONFIRMATION_EXPIRED (R-15)."""
    return [{"code": "CONFIRMATION_EXPIRED"}] if lapsed(app, now) else app.reasons


# ---------------------------------------------------------------- the official account as the merchant sees it


def is_upgraded(session: Session, account_id: str) -> bool:
    """The account is upgraded: it posts 100 a day (R-23) and its login phone and holder are the subject's (R-24)."""
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
    # The shop's application in progress, if the viewer may read it (R-62: another subject's is not shown) …
    active: Application | None
    can_cancel: bool
    daily_post_limit: int
    can_sell_as_official: bool
    upgrade_deadline: dt.datetime | None
    # … and whether the shop has one at all, whoever's it is (R-19: then no other may be submitted).
    in_progress: bool = False

    @property
    def upgrade_status(self) -> str:
        if self.record is not None:
            return "upgraded"
        return "in_progress" if self.in_progress or self.active is not None else "not_upgraded"

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
        if self.account is None:
            return None
        return pii.masked_phone_from(self.account.login_phone_enc, context="login_phone")


def official_view(
    session: Session, shop: Shop, policy: Policy, *, now: dt.datetime, scope: str | None = visibility.STAFF
) -> OfficialView:
    """The shop's official account and what the rules say of it now: cancellable (R-12), may sell as the official
    account (R-14), its daily post limit (R-23), its masked operator and login phone (R-50); its application in
    progress as the viewer of `scope` may see it (R-62, visibility.scope_of)."""
    account = session.get(Account, shop.official_account_id) if shop.official_account_id else None
    record = official_account(session, shop.id)
    upgraded = record is not None
    active = None if upgraded else active_application(session, shop.id, now=now)
    return OfficialView(
        shop=shop,
        account=account,
        record=record,
        active=active if active is not None and visibility.readable(active, scope) else None,
        in_progress=active is not None,
        can_cancel=can_cancel(record, policy, now=now),
        daily_post_limit=posting.daily_limit(policy, upgraded=upgraded),
        can_sell_as_official=can_sell_as_official(policy, bound=account is not None, upgraded=upgraded, now=now),
        upgrade_deadline=policy.upgrade_deadline,
    )
