"""Platform sync: subjects, shops, accounts and the shop → official-account binding."""

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import ValidationError
from sqlalchemy import and_, or_, select

from guanhao import bodies, errors, pii
from guanhao.audit import service as audit
from guanhao.db import Session, refusing
from guanhao.i18n import Message, _l
from guanhao.schemas import ID_RE
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.subjects.schemas import AccountIn, BindingIn, ShopIn, SubjectIn

# Checks other domains register on the platform's changes, run in registration order before the change:
# the upgrades package keeps an upgraded or upgrading shop's binding and subject, and an upgraded
# account's login phone and holder, which are the subject's to manage.
ShopGuard = Callable[[Session, Shop, dt.datetime], None]
AccountGuard = Callable[[Session, Account, AccountIn], None]
SHOP_GUARDS: list[ShopGuard] = []
ACCOUNT_GUARDS: list[AccountGuard] = []


def guard_shop_moves(check: ShopGuard) -> ShopGuard:
    """Registers a check run before a shop moves to another subject or is bound to another account (R-21)."""
    SHOP_GUARDS.append(check)
    return check


def guard_account_sync(check: AccountGuard) -> AccountGuard:
    """Registers a check run before a sync changes an existing account (R-24)."""
    ACCOUNT_GUARDS.append(check)
    return check


def get_subject(session: Session, subject_id: str) -> Subject:
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise errors.NotFound(_l("Subject {subject_id} not found", subject_id=subject_id))
    return subject


def get_shop(session: Session, shop_id: str, *, lock: bool = False) -> Shop:
    shop = session.get(Shop, shop_id, with_for_update=lock or None)
    if shop is None:
        raise errors.NotFound(_l("Shop {shop_id} not found", shop_id=shop_id))
    return shop


def find_shops(session: Session, query: str, *, limit: int) -> list[Shop]:
    """Staff look a shop up across every subject (R-62: staff see all): by the shop's, its subject's or its
    official account's id, or by a part of the shop's or the subject's name; in creation order."""
    query = query.strip()
    if not query:
        return []
    pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    stmt = (
        select(Shop)
        .join(Subject, Subject.id == Shop.subject_id)
        .where(
            or_(
                Shop.id == query,
                Shop.subject_id == query,
                Shop.official_account_id == query,
                Shop.name.like(pattern, escape="\\"),
                Subject.name.like(pattern, escape="\\"),
            )
        )
        .order_by(Shop.created_at, Shop.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def get_account(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise errors.NotFound(_l("Account {account_id} not found", account_id=account_id))
    return account


Listed = TypeVar("Listed", Subject, Shop, Account)


def page_of(
    session: Session, model: type[Listed], *, after: tuple[dt.datetime, str] | None, limit: int
) -> list[Listed]:
    """Synced objects in creation order (time, then id: a total order to page by), after a cursor's (created_at, id)."""
    return list(session.scalars(_creation_order(select(model), model, after=after, limit=limit)))


def shops_of(session: Session, subject_id: str, *, after: tuple[dt.datetime, str] | None, limit: int) -> list[Shop]:
    """A subject's shops in creation order, after a cursor's (created_at, id)."""
    stmt = select(Shop).where(Shop.subject_id == subject_id)
    return list(session.scalars(_creation_order(stmt, Shop, after=after, limit=limit)))


def _creation_order(stmt, model, *, after: tuple[dt.datetime, str] | None, limit: int):
    stmt = stmt.order_by(model.created_at, model.id).limit(limit)
    if after is not None:
        at, object_id = after
        stmt = stmt.where(or_(model.created_at > at, and_(model.created_at == at, model.id > object_id)))
    return stmt


def known_subject(session: Session, subject_id: str) -> Subject:
    """A subject a payload refers to: unknown is the caller's mistake (422, R-63), not a missing resource."""
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise _unknown("subject_id", _l("Subject {subject_id} is not known; sync it first", subject_id=subject_id))
    return subject


def _unknown(field: str, detail: Message) -> errors.DomainError:
    return errors.ValidationFailed(detail, errors=[{"field": field, "type": "unknown_reference", "message": "unknown"}])


def put_subject(
    session: Session, subject_id: str, body: SubjectIn, *, actor: str, now: dt.datetime
) -> tuple[Subject, bool]:
    """The platform's sync of a subject (created or updated), audited (R-60)."""
    subject = session.get(Subject, subject_id, with_for_update=True)
    created = subject is None
    if subject is None:
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
    """The platform's sync of a shop, audited (R-60); a move to another subject passes the registered guards
    first (R-21)."""
    known_subject(session, body.subject_id)
    shop = session.get(Shop, shop_id, with_for_update=True)
    created = shop is None
    if shop is None:
        shop = Shop(id=shop_id, created_at=now)
        session.add(shop)
    elif shop.subject_id != body.subject_id:
        # SPEC R-21: the upgrade keeps the subject behind the account; never move a shop under one.
        _guard_moves(session, shop, now)
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
    """The platform's sync of an account, its holder and login phone sealed (R-50), audited masked (R-60). A sync
    of an existing account passes the registered guards first: an upgraded account's login phone and holder are
    the subject's (R-24)."""
    account = session.get(Account, account_id, with_for_update=True)
    created = account is None
    if account is None:
        account = Account(id=account_id, created_at=now)
        session.add(account)
    else:
        for check in ACCOUNT_GUARDS:
            check(session, account, body)
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
    """The shop's official account. R-05: an account is the official account of at most one shop (a unique
    column holds it under concurrency); a rebinding passes the registered guards first (R-21)."""
    shop = get_shop(session, shop_id, lock=True)
    account = session.get(Account, body.account_id)
    if account is None:
        raise _unknown("account_id", _l("Account {account_id} is not known; sync it first", account_id=body.account_id))
    if shop.official_account_id == body.account_id:
        return shop
    _guard_moves(session, shop, now)
    taken = errors.AccountAlreadyBound(
        _l("Account {account_id} is the official account of another shop", account_id=body.account_id)
    )
    if session.scalar(select(Shop.id).where(Shop.official_account_id == body.account_id)) is not None:
        raise taken
    previous = shop.official_account_id
    # a concurrent binding of the same account loses on the unique column.
    with refusing(session, taken):
        shop.official_account_id = body.account_id
        shop.updated_at = now
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


def _guard_moves(session: Session, shop: Shop, now: dt.datetime) -> None:
    for check in SHOP_GUARDS:
        check(session, shop, now)


@dataclass
class ImportResult:
    accepted: int = 0
    rejected: list[tuple[int, errors.DomainError]] = field(default_factory=list)

    def add(self, other: "ImportResult") -> None:
        self.accepted += other.accepted
        self.rejected.extend(other.rejected)


def import_lines(
    session: Session, lines: Iterable[tuple[int, bytes | None]], *, actor: str, now: dt.datetime
) -> ImportResult:
    """NDJSON bulk sync of (line number, line) pairs — a line is None when it was too long to hold. Each
    line stands alone: a bad line is reported by its number and never stops the others (R-63). The caller commits
    a batch of lines at a time, so a long import lets other writers in between batches."""
    result = ImportResult()
    for number, raw in lines:
        if raw is not None and not raw.strip():
            continue
        try:
            with session.begin_nested():
                _import_one(session, raw, actor=actor, now=now)
            result.accepted += 1
        except errors.DomainError as exc:
            result.rejected.append((number, exc))
    return result


NOT_AN_OBJECT = _l("The line is not a JSON object")


def _import_one(session: Session, raw: bytes | None, *, actor: str, now: dt.datetime) -> None:
    if raw is None:
        raise errors.PayloadTooLarge(_l("The line is longer than a request body may be"))
    try:
        obj = bodies.loads(raw)
    except bodies.Unacceptable as exc:
        raise errors.MalformedBody(exc.reason) from None
    if not isinstance(obj, dict):
        raise errors.MalformedBody(NOT_AN_OBJECT)
    kind = obj.pop("kind", None)
    try:
        match kind:
            case "binding":
                bind(session, _line_id(obj, "shop_id"), BindingIn.model_validate(obj), actor=actor, now=now)
            case "subject":
                put_subject(session, _line_id(obj, "id"), SubjectIn.model_validate(obj), actor=actor, now=now)
            case "shop":
                put_shop(session, _line_id(obj, "id"), ShopIn.model_validate(obj), actor=actor, now=now)
            case "account":
                put_account(session, _line_id(obj, "id"), AccountIn.model_validate(obj), actor=actor, now=now)
            case _:
                raise errors.ValidationFailed(_l("kind: must be subject, shop, account or binding"))
    except ValidationError as exc:
        raise errors.invalid_payload(exc.errors()) from None


def _line_id(obj: dict, field: str) -> str:
    value = obj.pop(field, None)
    if not isinstance(value, str) or len(value) > 64 or not ID_RE.fullmatch(value):
        raise errors.ValidationFailed(_l("{field}: required, an id of 1 to 64 letters, digits or _.:-", field=field))
    return value
