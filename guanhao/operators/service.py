"""Operator management (运营人管理, SPEC R-40..R-42) and login-phone rebinding (登录手机号换绑, R-24):
the two SMS-confirmed changes a merchant makes to an upgraded official account."""

import datetime as dt
import hmac
import math
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from guanhao import errors, pii
from guanhao.audit import service as audit
from guanhao.db import Session
from guanhao.events import service as events
from guanhao.i18n import _l
from guanhao.operators.models import PendingChange
from guanhao.policy import Policy
from guanhao.sandbox import sms
from guanhao.subjects.models import Account
from guanhao.upgrades import quotas
from guanhao.upgrades.models import OfficialAccount, Slot

KINDS = ("operator", "login_phone")
TOO_MANY_WRONG_CODES = _l("Too many wrong codes; request a new one")


def _code_hash(change_id: str, code: str) -> str:
    return pii.vault().blind_index(f"{change_id}:{code}", kind="sms_code")


def official(session: Session, shop_id: str, *, lock: bool = False) -> OfficialAccount:
    stmt = select(OfficialAccount).where(OfficialAccount.shop_id == shop_id)
    record = session.scalar(stmt.with_for_update() if lock else stmt)
    if record is None:
        raise errors.NotUpgraded(_l("The shop's official account is not upgraded yet; upgrade it first"))
    return record


def request_operator_change(
    session: Session, shop_id: str, person: pii.Person, policy: Policy, *, actor: str, now: dt.datetime
) -> PendingChange:
    """更换运营人: a code goes to the new operator's phone; nothing changes until it is verified."""
    record = official(session, shop_id, lock=True)
    if person.id_hash != record.operator_id_hash:
        used = quotas.used(session, quotas.operator_pool(person.id_hash))
        if used >= policy.operators.capacity:
            raise errors.OperatorLimitReached(_l("This person already operates the most official accounts allowed"))
    sealed = pii.seal_person(person, context="person")
    return _request(
        session,
        record,
        "operator",
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
    record = official(session, shop_id, lock=True)
    return _request(
        session,
        record,
        "login_phone",
        policy,
        actor=actor,
        now=now,
        phone=new_phone,
        phone_enc=pii.vault().encrypt(new_phone, context="login_phone"),
    )


def _request(
    session: Session,
    record: OfficialAccount,
    kind: str,
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
    cfg = policy.sms
    # The cooldown runs from the last code that was not used, whatever became of it: a change that failed
    # on too many wrong codes must not let the next code (and 5 more guesses) follow at once.
    last_sent = session.scalar(
        select(func.max(PendingChange.sent_at)).where(
            PendingChange.account_id == record.account_id,
            PendingChange.kind == kind,
            PendingChange.status != "verified",
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
            PendingChange.account_id == record.account_id, PendingChange.kind == kind, PendingChange.status == "pending"
        )
        .with_for_update()
    )
    if previous is not None:
        previous.status, previous.finished_at = "superseded", now
        session.flush()
    code = f"{secrets.randbelow(10**6):06d}"
    change = PendingChange(
        id=("opc_" if kind == "operator" else "rbd_") + uuid.uuid4().hex[:20],
        kind=kind,
        account_id=record.account_id,
        shop_id=record.shop_id,
        subject_id=record.subject_id,
        application_id=record.application_id,
        status="pending",
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
    try:
        with session.begin_nested():
            session.add(change)
            session.flush()
    except IntegrityError:
        raise errors.TooManyAttempts(
            _l("Another code for this change was just sent; try again shortly"), retry_after=1
        ) from None
    purpose = "运营人变更" if kind == "operator" else "登录手机号换绑"
    text = f"【抖店】您正在进行店铺官方账号{purpose}，验证码 {code}，{cfg.code_ttl_seconds // 60} 分钟内有效。请勿泄露给他人。"
    sms.get_sender().send(session, phone=phone, text=text, code=code, purpose=kind, now=now)
    audit.record(
        session,
        at=now,
        actor=actor,
        action=f"{kind}.change_requested",
        target_kind="account",
        target_id=record.account_id,
        subject_id=record.subject_id,
        shop_id=record.shop_id,
        detail={"change_id": change.id, "phone": pii.mask_phone(phone)},
    )
    return change


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
    """Checks the code. A wrong code is counted (and the count kept even though the call fails),
    so the caller commits and then raises `error`."""
    change = session.scalar(
        select(PendingChange)
        .where(PendingChange.id == change_id, PendingChange.kind == kind, PendingChange.shop_id == shop_id)
        .with_for_update()
    )
    if change is None:
        raise errors.NotFound(_l("Change {change_id} not found", change_id=change_id))
    if change.status == "verified":
        raise errors.InvalidTransition(_l("This change was verified already"))
    if change.status == "failed":
        raise errors.TooManyAttempts(TOO_MANY_WRONG_CODES)
    if change.status != "pending":
        raise errors.CodeExpired(_l("This code is no longer valid; request a new one"))
    if now >= change.expires_at:
        change.status, change.finished_at = "expired", now
        return Verified(change, errors.CodeExpired(_l("The code has expired; request a new one")))
    if not hmac.compare_digest(change.code_hash, _code_hash(change.id, code)):
        change.attempts += 1
        if change.attempts >= policy.sms.max_attempts:
            change.status, change.finished_at = "failed", now
            return Verified(change, errors.TooManyAttempts(TOO_MANY_WRONG_CODES))
        left = policy.sms.max_attempts - change.attempts
        return Verified(change, errors.CodeInvalid(_l("Wrong code; {left} tries left", left=left)))
    record = session.scalar(select(OfficialAccount).where(OfficialAccount.shop_id == shop_id).with_for_update())
    if record is None or record.application_id != change.application_id:
        # The upgrade this code was sent for was cancelled meanwhile: the code dies with it,
        # and does not carry over to a later upgrade of the same account.
        change.status, change.finished_at = "superseded", now
        return Verified(
            change, errors.CodeExpired(_l("The upgrade this code was sent for no longer stands; request a new one"))
        )
    if kind == "operator":
        _apply_operator(session, record, change, policy, actor=actor, now=now)
    else:
        _apply_phone(session, record, change, actor=actor, now=now)
    change.status, change.finished_at = "verified", now
    session.flush()
    return Verified(change)


def _apply_operator(
    session: Session, record: OfficialAccount, change: PendingChange, policy: Policy, *, actor: str, now: dt.datetime
) -> None:
    old = pii.open_person(
        record.operator_name_enc, record.operator_id_number_enc, record.operator_phone_enc, context="person"
    )
    if change.new_id_hash != record.operator_id_hash:
        # Move the account's place from the old person's five to the new person's, held by the slot index.
        session.execute(
            Slot.__table__.delete().where(
                Slot.application_id == record.application_id, Slot.pool == quotas.operator_pool(record.operator_id_hash)
            )
        )
        if (
            quotas.reserve(
                session,
                quotas.operator_pool(change.new_id_hash),
                policy.operators.capacity,
                application_id=record.application_id,
                account_id=record.account_id,
                now=now,
            )
            is None
        ):
            raise errors.OperatorLimitReached(_l("This person already operates the most official accounts allowed"))
    record.operator_name_enc = change.new_name_enc
    record.operator_id_number_enc = change.new_id_number_enc
    record.operator_phone_enc = change.new_phone_enc
    record.operator_id_hash = change.new_id_hash
    record.operator_since = now
    new = pii.open_person(change.new_name_enc, change.new_id_number_enc, change.new_phone_enc, context="person")
    audit.record(
        session,
        at=now,
        actor=actor,
        action="operator.changed",
        target_kind="account",
        target_id=record.account_id,
        subject_id=record.subject_id,
        shop_id=record.shop_id,
        detail={"change_id": change.id, "from": old.masked(), "to": new.masked()},
    )
    events.emit(
        session,
        "operator.changed",
        at=now,
        shop_id=record.shop_id,
        subject_id=record.subject_id,
        data={
            "shop_id": record.shop_id,
            "account_id": record.account_id,
            "change_id": change.id,
            "operator": new.masked(),
        },
    )


def _apply_phone(
    session: Session, record: OfficialAccount, change: PendingChange, *, actor: str, now: dt.datetime
) -> None:
    account = session.get(Account, record.account_id, with_for_update=True)
    v = pii.vault()
    old = v.decrypt(account.login_phone_enc, context="login_phone")
    new = v.decrypt(change.new_phone_enc, context="login_phone")
    account.login_phone_enc = change.new_phone_enc
    account.updated_at = now
    audit.record(
        session,
        at=now,
        actor=actor,
        action="login_phone.changed",
        target_kind="account",
        target_id=record.account_id,
        subject_id=record.subject_id,
        shop_id=record.shop_id,
        detail={"change_id": change.id, "from": pii.mask_phone(old), "to": pii.mask_phone(new)},
    )
    events.emit(
        session,
        "login_phone.changed",
        at=now,
        shop_id=record.shop_id,
        subject_id=record.subject_id,
        data={
            "shop_id": record.shop_id,
            "account_id": record.account_id,
            "change_id": change.id,
            "login_phone": pii.mask_phone(new),
        },
    )


def operator_view(record: OfficialAccount) -> dict:
    return pii.open_person(
        record.operator_name_enc, record.operator_id_number_enc, record.operator_phone_enc, context="person"
    ).masked()
