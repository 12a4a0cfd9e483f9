"""Platform sync: subjects, shops, accounts and the shop → official-account binding."""

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import and_, or_, select

from guanhao import bodies, errors, pii
from guanhao.audit import service as audit
from guanhao.db import Session, refusing
from guanhao.i18n import Message, _l
from guanhao.schemas import ID_RE, RequestBody
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
    shop = session.get(Shop, shop_id, with_for_update={"key_share": True} if lock else None)
    if shop is None:
        raise shop_not_found(shop_id)
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
        raise unknown_subject(subject_id)
    return subject


def unknown_subject(subject_id: str) -> errors.DomainError:
    return _unknown("subject_id", _l("Subject {subject_id} is not known; sync it first", subject_id=subject_id))


def _unknown(field: str, detail: Message) -> errors.DomainError:
    return errors.ValidationFailed(detail, errors=[{"field": field, "type": "unknown_reference", "message": "unknown"}])


def put_subject(
    session: Session, subject_id: str, body: SubjectIn, *, actor: str, now: dt.datetime
) -> tuple[Subject, bool]:
    """The platform's sync of a subject (created or updated), audited (R-60)."""
    subject = session.get(Subject, subject_id, with_for_update={"key_share": True})
    created = subject is None
    if subject is None:
        subject = Subject(id=subject_id, created_at=now)
        session.add(subject)
    for name, value in subject_values(body, now).items():
        setattr(subject, name, value)
    record_subject(session, subject_id, body, created=created, actor=actor, now=now)
    session.flush()
    return subject, created


def subject_values(body: SubjectIn, now: dt.datetime) -> dict:
    """The columns a sync of a subject sets (the single sync and the batch import)."""
    return {
        "name": body.name,
        "subject_type": body.subject_type,
        "cross_border": body.cross_border,
        "license_valid_until": body.license_valid_until,
        "license_number": body.license_number,
        "updated_at": now,
    }


def record_subject(
    session: Session, subject_id: str, body: SubjectIn, *, created: bool, actor: str, now: dt.datetime
) -> None:
    """R-60: the audit row of a subject's sync."""
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


def put_shop(session: Session, shop_id: str, body: ShopIn, *, actor: str, now: dt.datetime) -> tuple[Shop, bool]:
    """The platform's sync of a shop, audited (R-60); a move to another subject passes the registered guards
    first (R-21)."""
    known_subject(session, body.subject_id)
    shop = session.get(Shop, shop_id, with_for_update={"key_share": True})
    created = shop is None
    if shop is None:
        shop = Shop(id=shop_id, created_at=now)
        session.add(shop)
    elif shop.subject_id != body.subject_id:
        # SPEC R-21: the upgrade keeps the subject behind the account; never move a shop under one.
        guard_moves(session, shop, now)
    for name, value in shop_values(body, now).items():
        setattr(shop, name, value)
    record_shop(session, shop_id, body, created=created, actor=actor, now=now)
    session.flush()
    return shop, created


def shop_values(body: ShopIn, now: dt.datetime) -> dict:
    """The columns a sync of a shop sets (the single sync and the batch import)."""
    return {
        "subject_id": body.subject_id,
        "name": body.name,
        "shop_type": body.shop_type,
        "status": body.status,
        "experience_score": body.experience_score,
        "updated_at": now,
    }


def record_shop(session: Session, shop_id: str, body: ShopIn, *, created: bool, actor: str, now: dt.datetime) -> None:
    """R-60: the audit row of a shop's sync."""
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


def put_account(
    session: Session, account_id: str, body: AccountIn, *, actor: str, now: dt.datetime
) -> tuple[Account, bool]:
    """The platform's sync of an account, its holder and login phone sealed (R-50), audited masked (R-60). A sync
    of an existing account passes the registered guards first: an upgraded account's login phone and holder are
    the subject's (R-24)."""
    account = session.get(Account, account_id, with_for_update={"key_share": True})
    created = account is None
    if account is None:
        account = Account(id=account_id, created_at=now)
        session.add(account)
    else:
        guard_account(session, account, body)
    for name, value in account_values(body, now).items():
        setattr(account, name, value)
    record_account(session, account_id, body, created=created, actor=actor, now=now)
    session.flush()
    return account, created


def guard_account(session: Session, account: Account, body: AccountIn) -> None:
    """R-24: the registered checks on a sync of an existing account."""
    for check in ACCOUNT_GUARDS:
        check(session, account, body)


def account_values(body: AccountIn, now: dt.datetime) -> dict:
    """The columns a sync of an account sets, its holder and login phone sealed with their blind index (R-50)."""
    holder = pii.seal_person(body.holder.person(), context="person")
    return {
        "nickname": body.nickname,
        "followers": body.followers,
        "following": body.following,
        "posts": body.posts,
        "status": body.status,
        "real_name_verified": body.real_name_verified,
        "violations_90d": body.violations_90d,
        "login_phone_enc": pii.vault().encrypt(body.login_phone, context="login_phone"),
        "holder_name_enc": holder["name_enc"],
        "holder_id_number_enc": holder["id_number_enc"],
        "holder_phone_enc": holder["phone_enc"],
        "holder_id_hash": holder["id_hash"],
        "updated_at": now,
    }


def record_account(
    session: Session, account_id: str, body: AccountIn, *, created: bool, actor: str, now: dt.datetime
) -> None:
    """R-60: the audit row of an account's sync, its holder masked (R-50)."""
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


def bind(session: Session, shop_id: str, body: BindingIn, *, actor: str, now: dt.datetime) -> Shop:
    """The shop's official account. R-05: an account is the official account of at most one shop (a unique
    column holds it under concurrency); a rebinding passes the registered guards first (R-21)."""
    shop = get_shop(session, shop_id, lock=True)
    account = session.get(Account, body.account_id)
    if account is None:
        raise unknown_account(body.account_id)
    if shop.official_account_id == body.account_id:
        return shop
    guard_moves(session, shop, now)
    taken = account_taken(body.account_id)
    if session.scalar(select(Shop.id).where(Shop.official_account_id == body.account_id)) is not None:
        raise taken
    previous = shop.official_account_id
    # a concurrent binding of the same account loses on the unique column.
    with refusing(session, taken):
        shop.official_account_id = body.account_id
        shop.updated_at = now
    record_binding(session, shop_id, shop.subject_id, previous, body.account_id, actor=actor, now=now)
    session.flush()
    return shop


def unknown_account(account_id: str) -> errors.DomainError:
    return _unknown("account_id", _l("Account {account_id} is not known; sync it first", account_id=account_id))


def shop_not_found(shop_id: str) -> errors.DomainError:
    return errors.NotFound(_l("Shop {shop_id} not found", shop_id=shop_id))


def account_taken(account_id: str) -> errors.DomainError:
    """R-05: the refusal of a binding to an account that is another shop's official account."""
    return errors.AccountAlreadyBound(
        _l("Account {account_id} is the official account of another shop", account_id=account_id)
    )


def record_binding(
    session: Session,
    shop_id: str,
    subject_id: str,
    previous: str | None,
    account_id: str,
    *,
    actor: str,
    now: dt.datetime,
) -> None:
    """R-60: the audit row of a (re)binding."""
    audit.record(
        session,
        at=now,
        actor=actor,
        action="shop.official_account_bound",
        target_kind="shop",
        target_id=shop_id,
        subject_id=subject_id,
        shop_id=shop_id,
        from_state=previous,
        to_state=account_id,
    )


def guard_moves(session: Session, shop: Shop, now: dt.datetime) -> None:
    """R-21: the registered checks before a shop moves to another subject or is bound to another account."""
    for check in SHOP_GUARDS:
        check(session, shop, now)


_SCHEMAS: dict[str, type[RequestBody]] = {
    "subject": SubjectIn,
    "shop": ShopIn,
    "account": AccountIn,
    "binding": BindingIn,
}
_VERBS: dict[str, Callable[..., Any]] = {"subject": put_subject, "shop": put_shop, "account": put_account}


@dataclass
class ImportResult:
    accepted: int = 0
    rejected: list[tuple[int, errors.DomainError]] = field(default_factory=list)
    # Accepted lines per kind (subject, account, shop, binding).
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, other: "ImportResult") -> None:
        self.accepted += other.accepted
        self.rejected.extend(other.rejected)
        for kind, count in other.by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + count

    def took(self, kind: str) -> None:
        self.accepted += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


@dataclass(frozen=True)
class Line:
    """One parsed and validated import line: its kind, the id it names (a binding's is its shop's), its body."""

    number: int
    kind: str
    object_id: str
    body: Any


def import_lines(
    session: Session, lines: Iterable[tuple[int, bytes | None]], *, actor: str, now: dt.datetime
) -> ImportResult:
    """NDJSON bulk sync of (line number, line) pairs — a line is None when it was too long to hold — one line at
    a time. Each line stands alone: a bad line is reported by its number and never stops the others (R-63). The
    import itself is set-based (guanhao.subjects.bulk); this is its reference and its fallback."""
    result = ImportResult()
    parsed: list[Line] = []
    for number, raw in lines:
        if raw is not None and not raw.strip():
            continue
        try:
            parsed.append(parse_line(number, raw))
        except errors.DomainError as exc:
            result.rejected.append((number, exc))
    result.add(apply_lines(session, parsed, actor=actor, now=now))
    result.rejected.sort(key=lambda pair: pair[0])
    return result


def apply_lines(session: Session, lines: Iterable[Line], *, actor: str, now: dt.datetime) -> ImportResult:
    """Parsed lines applied one at a time, each in a savepoint of its own: a refused line changes nothing (R-63)."""
    result = ImportResult()
    for line in lines:
        try:
            with session.begin_nested():
                apply_line(session, line, actor=actor, now=now)
            result.took(line.kind)
        except errors.DomainError as exc:
            result.rejected.append((line.number, exc))
    return result


NOT_AN_OBJECT = _l("The line is not a JSON object")


def parse_line(number: int, raw: bytes | None) -> Line:
    """R-63: a line's JSON (the service's strict parser) and its body (the same schema as the single sync), or the
    error that rejects it."""
    if raw is None:
        raise errors.PayloadTooLarge(_l("The line is longer than a request body may be"))
    try:
        obj = bodies.loads(raw)
    except bodies.Unacceptable as exc:
        raise errors.MalformedBody(exc.reason) from None
    if not isinstance(obj, dict):
        raise errors.MalformedBody(NOT_AN_OBJECT)
    kind = obj.pop("kind", None)
    if kind not in _SCHEMAS:
        raise errors.ValidationFailed(_l("kind: must be subject, shop, account or binding"))
    object_id = _line_id(obj, "shop_id" if kind == "binding" else "id")
    try:
        return Line(number, kind, object_id, _SCHEMAS[kind].model_validate(obj))
    except ValidationError as exc:
        raise errors.invalid_payload([dict(e) for e in exc.errors()]) from None


def apply_line(session: Session, line: Line, *, actor: str, now: dt.datetime) -> None:
    if line.kind == "binding":
        bind(session, line.object_id, line.body, actor=actor, now=now)
    else:
        _VERBS[line.kind](session, line.object_id, line.body, actor=actor, now=now)


def _line_id(obj: dict, field: str) -> str:
    value = obj.pop(field, None)
    if not isinstance(value, str) or len(value) > 64 or not ID_RE.fullmatch(value):
        raise errors.ValidationFailed(_l("{field}: required, an id of 1 to 64 letters, digits or _.:-", field=field))
    return value
