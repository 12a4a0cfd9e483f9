"""Platform sync: subjects, shops, accounts and the shop → official-account binding."""

import datetime as dt
import json
from collections.abc import Iterable

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from guanhao import errors, pii
from guanhao.audit import service as audit
from guanhao.schemas import ID_RE
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.subjects.schemas import AccountIn, BindingIn, ShopIn, SubjectIn
from guanhao.upgrades.models import IN_PROGRESS, Application, OfficialAccount

SYNC_ACTOR = "platform-sync"


def get_subject(session: Session, subject_id: str) -> Subject:
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise errors.NotFound(f"subject {subject_id} not found")
    return subject


def get_shop(session: Session, shop_id: str, *, lock: bool = False) -> Shop:
    shop = session.get(Shop, shop_id, with_for_update=lock or None)
    if shop is None:
        raise errors.NotFound(f"shop {shop_id} not found")
    return shop


def get_account(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise errors.NotFound(f"account {account_id} not found")
    return account


def put_subject(
    session: Session, subject_id: str, body: SubjectIn, *, actor: str, now: dt.datetime
) -> tuple[Subject, bool]:
    subject = session.get(Subject, subject_id, with_for_update=True)
    created = subject is None
    if created:
        subject = Subject(id=subject_id, created_at=now)
        session.add(subject)
    subject.name = body.name
    subject.subject_type = body.subject_type
    subject.cross_border = body.cross_border
    subject.license_valid_until = body.license_valid_until
    subject.license_number = body.license_number
    subject.updated_at = now
    audit.record(
        session,
        at=now,
        actor=actor,
        action="subject.created" if created else "subject.updated",
        target_kind="subject",
        target_id=subject_id,
        subject_id=subject_id,
        detail={"subject_type": body.subject_type, "cross_border": body.cross_border},
    )
    session.flush()
    return subject, created


def put_shop(session: Session, shop_id: str, body: ShopIn, *, actor: str, now: dt.datetime) -> tuple[Shop, bool]:
    if session.get(Subject, body.subject_id) is None:
        raise errors.ValidationFailed(
            f"subject {body.subject_id} is not known; sync it first",
            errors=[{"field": "subject_id", "type": "unknown_reference", "message": "unknown subject"}],
        )
    shop = session.get(Shop, shop_id, with_for_update=True)
    created = shop is None
    if created:
        shop = Shop(id=shop_id, created_at=now)
        session.add(shop)
    elif shop.subject_id != body.subject_id:
        # SPEC R-21: the upgrade keeps the subject behind the account; never move a shop under one.
        _refuse_if_upgrading(session, shop)
    shop.subject_id = body.subject_id
    shop.name = body.name
    shop.shop_type = body.shop_type
    shop.status = body.status
    shop.experience_score = body.experience_score
    shop.updated_at = now
    audit.record(
        session,
        at=now,
        actor=actor,
        action="shop.created" if created else "shop.updated",
        target_kind="shop",
        target_id=shop_id,
        subject_id=body.subject_id,
        shop_id=shop_id,
        detail={"shop_type": body.shop_type, "status": body.status, "experience_score": body.experience_score},
    )
    session.flush()
    return shop, created


def put_account(
    session: Session, account_id: str, body: AccountIn, *, actor: str, now: dt.datetime
) -> tuple[Account, bool]:
    account = session.get(Account, account_id, with_for_update=True)
    created = account is None
    if created:
        account = Account(id=account_id, created_at=now)
        session.add(account)
    holder = pii.seal_person(body.holder.person(), context="person")
    account.nickname = body.nickname
    account.followers = body.followers
    account.following = body.following
    account.posts = body.posts
    account.status = body.status
    account.real_name_verified = body.real_name_verified
    account.violations_90d = body.violations_90d
    account.login_phone_enc = pii.vault().encrypt(body.login_phone, context="login_phone")
    account.holder_name_enc = holder["name_enc"]
    account.holder_id_number_enc = holder["id_number_enc"]
    account.holder_phone_enc = holder["phone_enc"]
    account.holder_id_hash = holder["id_hash"]
    account.updated_at = now
    audit.record(
        session,
        at=now,
        actor=actor,
        action="account.created" if created else "account.updated",
        target_kind="account",
        target_id=account_id,
        detail={
            "followers": body.followers,
            "status": body.status,
            "real_name_verified": body.real_name_verified,
            "holder": body.holder.person().masked(),
        },
    )
    session.flush()
    return account, created


def bind(session: Session, shop_id: str, body: BindingIn, *, actor: str, now: dt.datetime) -> Shop:
    shop = get_shop(session, shop_id, lock=True)
    account = session.get(Account, body.account_id)
    if account is None:
        raise errors.ValidationFailed(
            f"account {body.account_id} is not known; sync it first",
            errors=[{"field": "account_id", "type": "unknown_reference", "message": "unknown account"}],
        )
    if shop.official_account_id == body.account_id:
        return shop
    _refuse_if_upgrading(session, shop)
    holder = session.scalar(select(Shop.id).where(Shop.official_account_id == body.account_id))
    if holder is not None:
        raise errors.AccountAlreadyBound(f"account {body.account_id} is the official account of another shop")
    previous = shop.official_account_id
    shop.official_account_id = body.account_id
    shop.updated_at = now
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # Lost a race with another binding of the same account: the unique column decides.
        raise errors.AccountAlreadyBound(f"account {body.account_id} is the official account of another shop") from None
    audit.record(
        session,
        at=now,
        actor=actor,
        action="shop.official_account_bound",
        target_kind="shop",
        target_id=shop_id,
        subject_id=shop.subject_id,
        shop_id=shop_id,
        from_state=previous,
        to_state=body.account_id,
    )
    session.flush()
    return shop


def _refuse_if_upgrading(session: Session, shop: Shop) -> None:
    if session.scalar(select(OfficialAccount.account_id).where(OfficialAccount.shop_id == shop.id)) is not None:
        raise errors.AlreadyUpgraded("the shop's official account is upgraded; its binding and subject are kept (R-21)")
    in_progress = session.scalar(
        select(func.count())
        .select_from(Application)
        .where(Application.shop_id == shop.id, Application.status.in_(IN_PROGRESS))
    )
    if in_progress:
        raise errors.ApplicationInProgress("an upgrade application for this shop is in progress")


_KINDS = {"subject": (SubjectIn, put_subject), "shop": (ShopIn, put_shop), "account": (AccountIn, put_account)}


def import_lines(session: Session, lines: Iterable[bytes], *, actor: str, now: dt.datetime) -> dict:
    """NDJSON bulk sync: each line stands alone; a bad line is reported and never stops the others."""
    accepted = 0
    rejected: list[dict] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            with session.begin_nested():
                _import_one(session, raw, actor=actor, now=now)
            accepted += 1
        except _LineError as exc:
            rejected.append({"line": number, "code": exc.code, "detail": exc.detail})
        except errors.DomainError as exc:
            rejected.append({"line": number, "code": exc.code, "detail": exc.detail or exc.code})
    return {"accepted": accepted, "rejected": rejected}


class _LineError(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


def _import_one(session: Session, raw: bytes, *, actor: str, now: dt.datetime) -> None:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _LineError("MALFORMED_BODY", "the line is not a JSON object") from None
    if not isinstance(obj, dict):
        raise _LineError("MALFORMED_BODY", "the line is not a JSON object")
    kind = obj.pop("kind", None)
    try:
        if kind == "binding":
            shop_id = obj.pop("shop_id", None)
            if not isinstance(shop_id, str) or len(shop_id) > 64 or not ID_RE.fullmatch(shop_id):
                raise _LineError("VALIDATION_ERROR", "shop_id: required, an id of 1 to 64 letters, digits or _.:-")
            bind(session, shop_id, BindingIn.model_validate(obj), actor=actor, now=now)
            return
        if kind not in _KINDS:
            raise _LineError("VALIDATION_ERROR", "kind: must be subject, shop, account or binding")
        object_id = obj.pop("id", None)
        if not isinstance(object_id, str) or len(object_id) > 64 or not ID_RE.fullmatch(object_id):
            raise _LineError("VALIDATION_ERROR", "id: required, an id of 1 to 64 letters, digits or _.:-")
        schema, verb = _KINDS[kind]
        verb(session, object_id, schema.model_validate(obj), actor=actor, now=now)
    except ValidationError as exc:
        errs = exc.errors()
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errs)
        raise _LineError(errors.validation_code(errs), detail) from None
