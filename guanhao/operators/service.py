"""Operator management (运营人管理, SPEC R-40..R-42) and login-phone rebinding (登录手机号换绑, R-24):
the two SMS-confirmed changes a merchant makes to an upgraded official account.

A change waits for the code sent to the new phone; it moves through the states of
models.CHANGE_TRANSITIONS, only by `_transition`, which audits each step.
"""

import datetime as dt
import hmac
import math
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select

from guanhao import errors, pii, sms
from guanhao.audit import service as audit
from guanhao.db import Session, refusing
from guanhao.events import service as events
from guanhao.i18n import Message, _l
from guanhao.operators.models import CHANGE_TRANSITIONS, ChangeState, Kind, PendingChange
from guanhao.policy import Policy
from guanhao.subjects.models import Account
from guanhao.upgrades import facts, quotas
from guanhao.upgrades import service as upgrades
from guanhao.upgrades.models import OfficialAccount

TOO_MANY_WRONG_CODES = _l("Too many wrong codes; request a new one")
OPERATOR_FULL = _l("This person already operates the most official accounts allowed")
SWEEP_ACTOR = "job:expire-pending-changes"


def _code_hash(change_id: str, code: str) -> str:
    return pii.vault().blind_index(f"{change_id}:{code}", kind="sms_code")


def _transition(
    session: Session, change: PendingChange, to: ChangeState, *, actor: str, now: dt.datetime, **detail: object
) -> None:
    """The one way a pending change moves (models.CHANGE_TRANSITIONS); every step is in the trail (R-60)."""
    current = ChangeState(change.status)
    if to not in CHANGE_TRANSITIONS[current]:
        raise errors.InvalidTransition(_l("This change is {state} already", state=current.value))
    change.status = to.value
    change.finished_at = now
    audit.record(
        session,
        at=now,
        actor=actor,
        action=f"{change.kind}.change_{to.value}",
        target_kind="account",
        target_id=change.account_id,
        subject_id=change.subject_id,
        shop_id=change.shop_id,
        from_state=current.value,
        to_state=to.value,
        detail={"change_id": change.id, **detail},
    )


def official(session: Session, shop_id: str, *, lock: bool = False) -> OfficialAccount:
    """R-24, R-42: the upgraded account's record; an account that is not upgraded has no changes to make."""
    stmt = select(OfficialAccount).where(OfficialAccount.shop_id == shop_id)
    record = session.scalar(stmt.with_for_update() if lock else stmt)
    if record is None:
        raise errors.NotUpgraded(_l("The shop's official account is not upgraded yet; upgrade it first"))
    return record


def request_operator_change(
    session: Session, shop_id: str, person: pii.Person, policy: Policy, *, actor: str, now: dt.datetime
) -> PendingChange:
    """更换运营人 (R-42): a code goes to the new operator's phone; nothing changes until it is verified.
    A person already at their limit (R-41) is refused now rather than after the code."""
    record = official(session, shop_id, lock=True)
    if person.id_hash != record.operator_id_hash:
        used = facts.operator_used(session, person.id_hash, now=now, excluding_application=None)
        if used >= policy.operators.capacity:
            raise errors.OperatorLimitReached(OPERATOR_FULL)
    sealed = pii.seal_person(person, context="person")
    return _request(
        session,
        record,
        Kind.OPERATOR,
        policy,
        actor=actor,
        now=now,
        phone=person.phone,
        name_enc=sealed["name_enc"],
        id_number_enc=sealed["id_number_enc"],
        phone_enc=sealed["phone_enc"],
        id_hash=sealed["id_hash"],
    )


def request_phone_rebind(
    session: Session, shop_id: str, new_phone: str, policy: Policy, *, actor: str, now: dt.datetime
) -> PendingChange:
    """登录手机号换绑 (R-24): a code goes to the new login phone."""
    record = official(session, shop_id, lock=True)
    return _request(
        session,
        record,
        Kind.LOGIN_PHONE,
        policy,
        actor=actor,
        now=now,
        phone=new_phone,
        phone_enc=pii.vault().encrypt(new_phone, context="login_phone"),
    )


def _request(
    session: Session,
    record: OfficialAccount,
    kind: Kind,
    policy: Policy,
    *,
    actor: str,
    now: dt.datetime,
    phone: str,
    phone_enc: str,
    name_enc: str | None = None,
    id_number_enc: str | None = None,
    id_hash: str | None = None,
) -> PendingChange:
    """R-24, R-42: one pending change of a kind per account: a newer request supersedes the older code, after
    a resend cooldown (policy); the code goes by SMS to the new phone and is kept only as a keyed hash (R-50)."""
    cfg = policy.sms
    # The cooldown runs from the last code that was not used, whatever became of it: a change that failed
    # on too many wrong codes must not let the next code (and 5 more guesses) follow at once.
    last_sent = session.scalar(
        select(func.max(PendingChange.sent_at)).where(
            PendingChange.account_id == record.account_id,
            PendingChange.kind == kind,
            PendingChange.status != ChangeState.VERIFIED,
        )
    )
    if last_sent is not None:
        wait = last_sent + dt.timedelta(seconds=cfg.resend_cooldown_seconds) - now
        if wait > dt.timedelta(0):
            seconds = math.ceil(wait.total_seconds())
            raise errors.TooManyAttempts(
                _l("A code was sent moments ago; ask again in {seconds} s", seconds=seconds), retry_after=seconds
            )
    previous = session.scalar(
        select(PendingChange)
        .where(
            PendingChange.account_id == record.account_id,
            PendingChange.kind == kind,
            PendingChange.status == ChangeState.PENDING,
        )
        .with_for_update()
    )
    if previous is not None:
        _transition(session, previous, ChangeState.SUPERSEDED, actor=actor, now=now, by="newer_request")
        session.flush()
    code = f"{secrets.randbelow(10**6):06d}"
    change = PendingChange(
        id=("opc_" if kind == Kind.OPERATOR else "rbd_") + uuid.uuid4().hex[:20],
        kind=kind.value,
        account_id=record.account_id,
        shop_id=record.shop_id,
        subject_id=record.subject_id,
        application_id=record.application_id,
        status=ChangeState.PENDING.value,
        new_name_enc=name_enc,
        new_id_number_enc=id_number_enc,
        new_phone_enc=phone_enc,
        new_id_hash=id_hash,
        code_hash="",
        attempts=0,
        expires_at=now + dt.timedelta(seconds=cfg.code_ttl_seconds),
        sent_at=now,
        actor=actor,
        created_at=now,
    )
    change.code_hash = _code_hash(change.id, code)
    # One pending change of a kind per account, held by a partial unique index.
    just_sent = _l("Another code for this change was just sent; try again shortly")
    with refusing(session, errors.TooManyAttempts(just_sent, retry_after=cfg.resend_cooldown_seconds)):
        session.add(change)
    minutes = cfg.code_ttl_seconds // 60
    sms.send(
        session, phone=phone, message=_sms_text(kind, code=code, minutes=minutes),
        code=code, purpose=kind.value, now=now,
    )  # fmt: skip
    audit.record(
        session,
        at=now,
        actor=actor,
        action=f"{kind.value}.change_requested",
        target_kind="account",
        target_id=record.account_id,
        subject_id=record.subject_id,
        shop_id=record.shop_id,
        to_state=ChangeState.PENDING.value,
        detail={"change_id": change.id, "phone": pii.mask_phone(phone)},
    )
    return change


def _sms_text(kind: Kind, *, code: str, minutes: int) -> Message:
    if kind == Kind.OPERATOR:
        return _l(
            "[Douyin Shop] You are replacing the operator of a shop's official account. Code {code}, valid for {minutes} minutes. Do not share it.",
            code=code,
            minutes=minutes,
        )
    return _l(
        "[Douyin Shop] You are rebinding the login phone of a shop's official account. Code {code}, valid for {minutes} minutes. Do not share it.",
        code=code,
        minutes=minutes,
    )


def _cooldown_left(change: PendingChange, policy: Policy, now: dt.datetime) -> int:
    """Seconds until a new code may be asked for (the cooldown runs from this change's code): Retry-After."""
    wait = change.sent_at + dt.timedelta(seconds=policy.sms.resend_cooldown_seconds) - now
    return max(1, math.ceil(wait.total_seconds()))


@dataclass(frozen=True)
class Verified:
    change: PendingChange
    error: errors.DomainError | None = None


def verify(
    session: Session,
    shop_id: str,
    change_id: str,
    code: str,
    kind: str,
    policy: Policy,
    *,
    actor: str,
    now: dt.datetime,
) -> Verified:
    """R-24, R-42: checks the code. A wrong code is counted and the count kept (at most `sms.max_attempts`
    tries) even though the call fails: the caller commits, then raises `error`."""
    change = session.scalar(
        select(PendingChange)
        .where(PendingChange.id == change_id, PendingChange.kind == kind, PendingChange.shop_id == shop_id)
        .with_for_update()
    )
    if change is None:
        raise errors.NotFound(_l("Change {change_id} not found", change_id=change_id))
    state = ChangeState(change.status)
    if state == ChangeState.VERIFIED:
        raise errors.InvalidTransition(_l("This change was verified already"))
    if state == ChangeState.FAILED:
        raise errors.TooManyAttempts(TOO_MANY_WRONG_CODES, retry_after=_cooldown_left(change, policy, now))
    if state != ChangeState.PENDING:
        raise errors.CodeExpired(_l("This code is no longer valid; request a new one"))
    if now >= change.expires_at:
        _transition(session, change, ChangeState.EXPIRED, actor=actor, now=now)
        return Verified(change, errors.CodeExpired(_l("The code has expired; request a new one")))
    if not hmac.compare_digest(change.code_hash, _code_hash(change.id, code)):
        change.attempts += 1
        if change.attempts >= policy.sms.max_attempts:
            _transition(session, change, ChangeState.FAILED, actor=actor, now=now, attempts=change.attempts)
            return Verified(
                change, errors.TooManyAttempts(TOO_MANY_WRONG_CODES, retry_after=_cooldown_left(change, policy, now))
            )
        left = policy.sms.max_attempts - change.attempts
        return Verified(change, errors.CodeInvalid(_l("Wrong code; {left} tries left", left=left)))
    record = session.scalar(select(OfficialAccount).where(OfficialAccount.shop_id == shop_id).with_for_update())
    if record is None or record.application_id != change.application_id:
        # The upgrade this code was sent for was cancelled meanwhile: the code dies with it,
        # and does not carry over to a later upgrade of the same account.
        _transition(session, change, ChangeState.SUPERSEDED, actor=actor, now=now, by="cancel")
        return Verified(
            change, errors.CodeExpired(_l("The upgrade this code was sent for no longer stands; request a new one"))
        )
    if kind == Kind.OPERATOR:
        _apply_operator(session, record, change, policy, actor=actor, now=now)
    else:
        _apply_phone(session, record, change, actor=actor, now=now)
    _transition(session, change, ChangeState.VERIFIED, actor=actor, now=now)
    session.flush()
    return Verified(change)


def _apply_operator(
    session: Session, record: OfficialAccount, change: PendingChange, policy: Policy, *, actor: str, now: dt.datetime
) -> None:
    """R-40, R-41: the account's one operator is replaced; its place moves to the new person's five."""
    assert change.new_id_hash is not None and change.new_name_enc and change.new_id_number_enc
    old = pii.open_person(
        record.operator_name_enc, record.operator_id_number_enc, record.operator_phone_enc, context="person"
    )
    if change.new_id_hash != record.operator_id_hash and not quotas.move(
        session,
        application_id=record.application_id,
        account_id=record.account_id,
        from_pool=quotas.operator_pool(record.operator_id_hash),
        to_pool=quotas.operator_pool(change.new_id_hash),
        capacity=policy.operators.capacity,
        now=now,
    ):
        raise errors.OperatorLimitReached(OPERATOR_FULL)
    record.operator_name_enc = change.new_name_enc
    record.operator_id_number_enc = change.new_id_number_enc
    record.operator_phone_enc = change.new_phone_enc
    record.operator_id_hash = change.new_id_hash
    record.operator_since = now
    new = pii.open_person(change.new_name_enc, change.new_id_number_enc, change.new_phone_enc, context="person")
    _record_applied(
        session,
        record,
        change,
        "operator",
        old=old.masked(),
        new=new.masked(),
        actor=actor,
        now=now,
    )


def _apply_phone(
    session: Session, record: OfficialAccount, change: PendingChange, *, actor: str, now: dt.datetime
) -> None:
    """R-24: the login phone the subject now manages is rebound."""
    account = session.get_one(Account, record.account_id, with_for_update=True)
    v = pii.vault()
    old = v.decrypt(account.login_phone_enc, context="login_phone")
    new = v.decrypt(change.new_phone_enc, context="login_phone")
    account.login_phone_enc = change.new_phone_enc
    account.updated_at = now
    _record_applied(
        session,
        record,
        change,
        "login_phone",
        old=pii.mask_phone(old),
        new=pii.mask_phone(new),
        actor=actor,
        now=now,
    )


def _record_applied(
    session: Session,
    record: OfficialAccount,
    change: PendingChange,
    what: str,
    *,
    old: object,
    new: object,
    actor: str,
    now: dt.datetime,
) -> None:
    """R-60, R-61: an applied change is audited (from → to, masked) and announced as `<what>.changed`
    (the new value under `<what>`)."""
    audit.record(
        session,
        at=now,
        actor=actor,
        action=f"{what}.changed",
        target_kind="account",
        target_id=record.account_id,
        subject_id=record.subject_id,
        shop_id=record.shop_id,
        detail={"change_id": change.id, "from": old, "to": new},
    )
    events.emit(
        session,
        f"{what}.changed",
        at=now,
        shop_id=record.shop_id,
        subject_id=record.subject_id,
        data={"shop_id": record.shop_id, "account_id": record.account_id, "change_id": change.id, what: new},
    )


@upgrades.on_cancel
def supersede_pending(session: Session, record: OfficialAccount, actor: str, now: dt.datetime) -> None:
    """R-13, R-24, R-42: a code sent for the cancelled upgrade can no longer change the account, even once it
    is upgraded again. SKIP LOCKED: a verify holding its change waits for the record lock the cancel
    holds, then finds the upgrade gone."""
    pending = session.scalars(
        select(PendingChange)
        .where(PendingChange.account_id == record.account_id, PendingChange.status == ChangeState.PENDING)
        .with_for_update(skip_locked=True)
    ).all()
    for change in pending:
        _transition(session, change, ChangeState.SUPERSEDED, actor=actor, now=now, by="cancel")


def expire_pending(session: Session, *, now: dt.datetime, limit: int = 1000) -> int:
    """The sweep: pending changes whose code has expired are recorded as expired (R-60)."""
    stmt = (
        select(PendingChange)
        .where(PendingChange.status == ChangeState.PENDING, PendingChange.expires_at <= now)
        .order_by(PendingChange.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    changes = list(session.scalars(stmt))
    for change in changes:
        _transition(session, change, ChangeState.EXPIRED, actor=SWEEP_ACTOR, now=now)
    return len(changes)


def operator_view(record: OfficialAccount) -> dict:
    """R-40: the account's one operator, masked (R-50)."""
    return pii.open_person(
        record.operator_name_enc, record.operator_id_number_enc, record.operator_phone_enc, context="person"
    ).masked()
