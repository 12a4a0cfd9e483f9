"""The merchant's most read page, in one statement: `GET /shops/{id}/official-account`.

Authentication (the key, not revoked), the sandbox clock (when sandbox mode is on), the shop, its bound
account, its official-account record and its application in progress are one SQL statement, run off the
thread pool (guanhao.reader). The rows become the same transient objects the service reads, and the same
`official_view` rules and `official_account_out` shape answer: only the loading differs, not the rules.

A revoked key is 401 from the revoke's commit on, in every process: the key's state is read by the same
statement, nothing is cached.
"""

import datetime as dt
from collections.abc import Mapping
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, cast

import orjson
from sqlalchemy import Select, String, and_, bindparam, exists, func, literal, literal_column, not_, or_, select

from guanhao import clock, db, errors
from guanhao.auth.models import ApiKey
from guanhao.auth.service import UNKNOWN_TOKEN, Principal, token_hash
from guanhao.db import UTCDateTime
from guanhao.i18n import _l
from guanhao.policy import Policy
from guanhao.posting import service as posting
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.upgrades import facts, rules, visibility
from guanhao.upgrades.models import IN_PROGRESS, AccountType, Application, OfficialAccount, Pool, Slot
from guanhao.upgrades.quotas import operator_pool, quota_pool
from guanhao.upgrades.schemas import (
    ApplicationOut,
    EligibilityOut,
    QuotasOut,
    application_out,
    check_out,
    official_account_out,
)
from guanhao.upgrades.service import OfficialView, can_cancel, can_sell_as_official

_SHOP = ("id", "subject_id", "official_account_id")
_ACCOUNT = ("id", "nickname", "followers", "login_phone_enc")
_RECORD = (
    "account_id",
    "account_type",
    "origin",
    "upgraded_at",
    "cancel_deadline",
    "operator_name_enc",
    "operator_id_number_enc",
    "operator_phone_enc",
)


def _now(sandbox: bool) -> Any:
    """The request's `now`: the real time bound, or the frozen sandbox clock when sandbox mode is on (R-15)."""
    now = bindparam("now", type_=UTCDateTime())
    frozen = clock.SandboxClock
    return func.coalesce(select(frozen.now).where(frozen.id == 1).scalar_subquery(), now) if sandbox else now


def _in_progress_here(at: Any) -> tuple:
    """R-10, R-15: an application of the statement's shop in progress at `at` (a lapsed one is not)."""
    return (
        Application.shop_id == Shop.id,
        or_(*(Application.status == state.value for state in IN_PROGRESS)),  # no IN (…): asyncpg binds each value
        not_(facts.lapsed(at)),
    )


def _authenticated(columns: list, *, by_key: bool) -> Select:
    """One row anchored on nothing, with the caller's stored key (by its hash, not revoked) joined when `by_key`."""
    if by_key:
        columns = [
            *columns,
            ApiKey.id.label("key_id"),
            ApiKey.role.label("key_role"),
            ApiKey.subject_id.label("key_subject"),
        ]
    anchor = select(literal_column("1").label("one")).subquery("anchor")
    stmt = select(*columns).select_from(anchor)
    if by_key:
        stmt = stmt.outerjoin(ApiKey, and_(ApiKey.token_hash == bindparam("token_hash"), ApiKey.revoked_at.is_(None)))
    return stmt


@lru_cache
def statement(*, by_key: bool, sandbox: bool) -> Select:
    """The one statement. `by_key`: the caller is a stored API key (looked up by its hash, not revoked);
    `sandbox`: the service clock may be frozen in the database (R-15's `now` is then the frozen one)."""
    now = bindparam("now", type_=UTCDateTime())
    at = _now(sandbox)

    def active(column: Any) -> Any:
        return select(column).where(*_in_progress_here(at)).limit(1).scalar_subquery()

    columns = [
        *(getattr(Shop, c).label(f"shop_{c}") for c in _SHOP),
        *(getattr(Account, c).label(f"account_{c}") for c in _ACCOUNT),
        *(getattr(OfficialAccount, c).label(f"record_{c}") for c in _RECORD),
        active(Application.id).label("active_id"),
        active(Application.subject_id).label("active_subject_id"),
        at.label("now") if sandbox else now.label("now"),
    ]
    return (
        _authenticated(columns, by_key=by_key)
        .outerjoin(Shop, Shop.id == bindparam("shop_id"))
        .outerjoin(Account, Account.id == Shop.official_account_id)
        .outerjoin(OfficialAccount, OfficialAccount.shop_id == Shop.id)
    )


def principal_of(row: Mapping[str, Any], admin: Principal | None) -> Principal:
    """R-62: the admin token, or the stored key the statement found (none: 401, like `authenticate`)."""
    if admin is not None:
        return admin
    if row.get("key_id") is None:
        raise errors.Unauthenticated(UNKNOWN_TOKEN)
    return Principal(role=row["key_role"], subject_id=row["key_subject"], key_id=row["key_id"])


def view_of(row: Mapping[str, Any], policy: Policy, principal: Principal, shop_id: str) -> OfficialView:
    """R-62 (another subject's shop is 404, worded as a missing one), then `official_view`'s answer for the
    rows read: R-12 can_cancel, R-14 can_sell_as_official, R-23 daily_post_limit, R-50 masking."""
    if row["shop_id"] is None or not principal.can_see_subject(row["shop_subject_id"]):
        raise errors.NotFound(_l("Shop {shop_id} not found", shop_id=shop_id))
    now: dt.datetime = row["now"]
    # Plain carriers of the columns read, not ORM instances: the rules and the shape read only these attributes.
    shop = cast(Shop, SimpleNamespace(**{c: row[f"shop_{c}"] for c in _SHOP}))
    account = None
    if row["account_id"] is not None:
        account = cast(Account, SimpleNamespace(**{c: row[f"account_{c}"] for c in _ACCOUNT}))
    record = None
    if row["record_account_id"] is not None:
        record = cast(OfficialAccount, SimpleNamespace(**{c: row[f"record_{c}"] for c in _RECORD}))
    upgraded = record is not None
    active = None
    if not upgraded and row["active_id"] is not None:
        active = cast(Application, SimpleNamespace(id=row["active_id"], subject_id=row["active_subject_id"]))
        # the shop's application in progress only if the caller's subject submitted it (staff: any).
        if not visibility.readable(
            active, visibility.scope_of(is_staff=principal.is_admin, subject_id=principal.subject_id)
        ):
            active = None
    return OfficialView(
        shop=shop,
        account=account,
        record=record,
        active=active,
        in_progress=not upgraded and row["active_id"] is not None,  # shown as in progress even when hidden
        can_cancel=can_cancel(record, policy, now=now),
        daily_post_limit=posting.daily_limit(policy, upgraded=upgraded),
        can_sell_as_official=can_sell_as_official(policy, bound=account is not None, upgraded=upgraded, now=now),
        upgrade_deadline=policy.upgrade_deadline,
    )


def params(*, token: str, admin: Principal | None, now: dt.datetime, **ids: str) -> dict:
    """The statement's values: the ids it reads (`shop_id=`, `application_id=`), `now`, the key's hash."""
    out: dict = {**ids, "now": now}
    if admin is None:
        out["token_hash"] = _token_hash(token)
    return out


@lru_cache(maxsize=4096)
def _token_hash(token: str) -> str:
    """The keyed hash the key is looked up by; a pure function of the token, so remembered (the key's state
    is not: it is read by the statement each time)."""
    return token_hash(token)


db.on_reset.append(_token_hash.cache_clear)


def render(view: OfficialView) -> bytes:
    """The JSON the response model would write (field order, `Z` for UTC, no spaces, UTF-8 as is)."""
    return orjson.dumps(official_account_out(view), option=orjson.OPT_UTC_Z)


# ---------------------------------------------------------------- GET /upgrade-applications/{id}

_APPLICATION = (
    "id",
    "shop_id",
    "account_id",
    "subject_id",
    "origin",
    "status",
    "account_type",
    "attempt",
    "reasons",
    "operator_name_enc",
    "operator_id_number_enc",
    "operator_phone_enc",
    "confirmation_expires_at",
    "staff_review",
    "created_at",
    "updated_at",
    "confirmed_at",
    "reviewed_at",
    "finished_at",
)


class _ApplicationRow(SimpleNamespace):
    """The columns `application_out` reads, and the one property it asks of an Application."""

    @property
    def awaiting_staff(self) -> bool:
        return self.staff_review == "waiting"


@lru_cache
def application_statement(*, by_key: bool, sandbox: bool) -> Select:
    """The key, the clock and the application by id, in one statement (see `statement`)."""
    columns = [*(getattr(Application, c).label(f"app_{c}") for c in _APPLICATION), _now(sandbox).label("now")]
    return _authenticated(columns, by_key=by_key).outerjoin(Application, Application.id == bindparam("application_id"))


def application_of(row: Mapping[str, Any], principal: Principal, application_id: str) -> Application:
    """R-62: the application if the caller's subject submitted it (staff: any); else the same 404 as a missing one."""
    if row["app_id"] is not None:
        values = {c: row[f"app_{c}"] for c in _APPLICATION}
        if isinstance(values["reasons"], str | bytes):  # asyncpg hands JSON columns over as text
            values["reasons"] = orjson.loads(values["reasons"])
        app = cast(Application, _ApplicationRow(**values))
        if visibility.readable(app, visibility.scope_of(is_staff=principal.is_admin, subject_id=principal.subject_id)):
            return app
    raise errors.NotFound(_l("Application {application_id} not found", application_id=application_id))


def render_application(app: Application, lang: str, *, now: dt.datetime) -> bytes:
    """`application_out` through the route's response model, as FastAPI writes it."""
    model = ApplicationOut.model_validate(application_out(app, lang, now=now))
    return ApplicationOut.__pydantic_serializer__.to_json(model)


# ---------------------------------------------------------------- GET /subjects/{id}/quotas

_TYPES = tuple(t.value for t in AccountType)


def _bound_followers() -> Any:
    """R-30: the followers of every account bound to the subject's shops (the statement's `subjects` row)."""
    return (
        select(func.coalesce(func.sum(Account.followers), 0))
        .select_from(Shop)
        .join(Account, Shop.official_account_id == Account.id)
        .where(Shop.subject_id == Subject.id)
        .scalar_subquery()
    )


def _pool_key(pool_of: Any, key: Any) -> Any:
    """SQL for `pool_of(key)` (quotas.quota_pool, quotas.operator_pool) with `key` a column: the function's own
    text around it, so the statement names exactly the pools the service names."""
    prefix, suffix = pool_of("\x00").split("\x00")
    return literal(prefix) + key + literal(suffix)


def _held_now(pool: Any, at: Any) -> Any:
    """R-15, R-33, R-41: the places `pool` holds (reservations included) less those of lapsed applications."""
    held = select(Pool.held).where(Pool.key == pool).scalar_subquery()
    stale = (
        select(func.count())
        .select_from(Slot)
        .join(Application, Application.id == Slot.application_id)
        .where(Slot.pool == pool, facts.lapsed(at))
        .scalar_subquery()
    )
    return func.coalesce(held, 0) - stale


@lru_cache
def quotas_statement(*, by_key: bool, sandbox: bool) -> Select:
    """The key, the clock, the subject, its bound accounts' followers (R-30) and, per account type, the places
    its pool holds less those still held by lapsed applications (R-15, R-33): one statement (see `statement`)."""
    at = _now(sandbox)
    followers = _bound_followers()
    columns = [Subject.id.label("subject_id"), Subject.subject_type, Subject.cross_border, followers.label("followers")]
    for t in _TYPES:
        columns.append(_held_now(bindparam(f"pool_{t}", type_=String()), at).label(f"used_{t}"))
    columns.append(at.label("now"))
    return _authenticated(columns, by_key=by_key).outerjoin(Subject, Subject.id == bindparam("subject_id"))


def quota_params(subject_id: str) -> dict[str, str]:
    """The pools the statement reads: the subject's one per account type (R-30)."""
    return {f"pool_{t}": quota_pool(subject_id, t) for t in _TYPES}


def quotas_of(row: Mapping[str, Any], policy: Policy, principal: Principal, subject_id: str) -> dict:
    """R-62 (another subject is 404, worded as a missing one), then R-30, R-31, R-33 as `subject_quotas` answers:
    each type's total and the slots held now, reservations included, lapsed applications' not."""
    if not principal.can_see_subject(subject_id) or row["subject_id"] is None:
        raise errors.NotFound(_l("Subject {subject_id} not found", subject_id=subject_id))
    totals = rules.quota_totals(
        policy,
        subject_type=row["subject_type"],
        cross_border=row["cross_border"],
        bound_followers=int(row["followers"] or 0),
    )
    used = {t: int(row[f"used_{t}"]) for t in _TYPES}
    return {t: {"total": totals[t], "used": used[t]} for t in totals}


def render_quotas(quotas: dict) -> bytes:
    """The quotas through the route's response model, as FastAPI writes them."""
    return QuotasOut.__pydantic_serializer__.to_json(QuotasOut.model_validate(quotas))


# ---------------------------------------------------------------- GET /shops/{id}/eligibility


@lru_cache
def eligibility_statement(*, by_key: bool, sandbox: bool) -> Select:
    """The key, the clock, and every fact R-03's checks read about a shop (`facts.gather`): the shop, its subject,
    its bound account, the subject's followers (R-30), each quota pool and the holder's operator pool as held now
    (R-33, R-41), another application in progress (R-10), an official account already (R-02): one statement."""
    at = _now(sandbox)
    followers = _bound_followers()
    in_progress = exists().where(*_in_progress_here(at))
    columns: list = [
        Shop.id.label("shop_id"),
        Shop.subject_id.label("shop_subject_id"),
        Shop.shop_type,
        Shop.status.label("shop_status"),
        Subject.subject_type,
        Subject.cross_border,
        Subject.license_valid_until,
        Account.id.label("account_id"),
        Account.real_name_verified,
        Account.status.label("account_status"),
        Account.violations_90d,
        Account.followers,
        Account.holder_id_hash,
        followers.label("bound_followers"),
        in_progress.label("other_in_progress"),
        exists().where(OfficialAccount.account_id == Account.id).label("already_upgraded"),
        _held_now(_pool_key(operator_pool, Account.holder_id_hash), at).label("operator_used"),
    ]
    for t in _TYPES:
        columns.append(
            _held_now(_pool_key(lambda key, t=t: quota_pool(key, t), Shop.subject_id), at).label(f"used_{t}")
        )
    columns.append(at.label("now"))
    return (
        _authenticated(columns, by_key=by_key)
        .outerjoin(Shop, Shop.id == bindparam("shop_id"))
        .outerjoin(Subject, Subject.id == Shop.subject_id)
        .outerjoin(Account, Account.id == Shop.official_account_id)
    )


def eligibility_of(
    row: Mapping[str, Any], policy: Policy, principal: Principal, shop_id: str, *, account_type: str | None
) -> tuple[list[rules.Check], str | None]:
    """R-62 (another subject's shop is 404, worded as a missing one), then R-04: every check and the type an
    application would get, from the same `rules.facts` and `rules.evaluate` as `service.eligibility`."""
    if row["shop_id"] is None or not principal.can_see_subject(row["shop_subject_id"]):
        raise errors.NotFound(_l("Shop {shop_id} not found", shop_id=shop_id))
    bound = row["account_id"] is not None
    account = None
    if bound:
        account = SimpleNamespace(
            real_name_verified=row["real_name_verified"],
            status=row["account_status"],
            violations_90d=row["violations_90d"],
            followers=row["followers"],
        )
    operator = rules.operator_id_hash(named=None, holder=row["holder_id_hash"] if bound else None)
    shop_facts = rules.facts(
        policy,
        shop_type=row["shop_type"],
        shop_status=row["shop_status"],
        subject=SimpleNamespace(
            subject_type=row["subject_type"],
            cross_border=row["cross_border"],
            license_valid_until=row["license_valid_until"],
        ),
        account=account,
        bound_followers=int(row["bound_followers"] or 0),
        quota_used={t: int(row[f"used_{t}"]) for t in _TYPES},
        operator_used=None if operator is None else int(row["operator_used"]),
        other_in_progress=bool(row["other_in_progress"]),
        already_upgraded=bool(row["already_upgraded"]),
        explicit_type=account_type,
        today=clock.china_date(row["now"]),
    )
    return rules.evaluate(policy, shop_facts)


def render_eligibility(checks: list[rules.Check], resolved: str | None, lang: str) -> bytes:
    """The eligibility through the route's response model, as FastAPI writes it."""
    eligible = all(c.passed for c in checks)
    out = EligibilityOut.model_validate(
        {
            "eligible": eligible,
            "resolved_account_type": resolved if eligible else None,
            "checks": [check_out(c, lang) for c in checks],
        }
    )
    return EligibilityOut.__pydantic_serializer__.to_json(out)
