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
from sqlalchemy import Select, and_, bindparam, func, literal_column, not_, or_, select

from guanhao import clock, db, errors
from guanhao.auth.models import ApiKey
from guanhao.auth.service import UNKNOWN_TOKEN, Principal, token_hash
from guanhao.db import UTCDateTime
from guanhao.i18n import _l
from guanhao.policy import Policy
from guanhao.posting import service as posting
from guanhao.subjects.models import Account, Shop
from guanhao.upgrades import facts
from guanhao.upgrades.models import Application, OfficialAccount, State
from guanhao.upgrades.schemas import official_account_out
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


@lru_cache
def statement(*, by_key: bool, sandbox: bool) -> Select:
    """The one statement. `by_key`: the caller is a stored API key (looked up by its hash, not revoked);
    `sandbox`: the service clock may be frozen in the database (R-15's `now` is then the frozen one)."""
    now = bindparam("now", type_=UTCDateTime())
    frozen = clock.SandboxClock
    at = func.coalesce(select(frozen.now).where(frozen.id == 1).scalar_subquery(), now) if sandbox else now
    active = (
        select(Application.id)
        .where(
            Application.shop_id == Shop.id,
            or_(Application.status == State.SUBMITTED.value, Application.status == State.REVIEWING.value),
            not_(facts.lapsed(at)),
        )
        .limit(1)
        .scalar_subquery()
    )
    anchor = select(literal_column("1").label("one")).subquery("anchor")
    columns = [
        *(getattr(Shop, c).label(f"shop_{c}") for c in _SHOP),
        *(getattr(Account, c).label(f"account_{c}") for c in _ACCOUNT),
        *(getattr(OfficialAccount, c).label(f"record_{c}") for c in _RECORD),
        active.label("active_id"),
        at.label("now") if sandbox else now.label("now"),
    ]
    if by_key:
        columns += [ApiKey.id.label("key_id"), ApiKey.role.label("key_role"), ApiKey.subject_id.label("key_subject")]
    stmt = select(*columns).select_from(anchor)
    if by_key:
        stmt = stmt.outerjoin(ApiKey, and_(ApiKey.token_hash == bindparam("token_hash"), ApiKey.revoked_at.is_(None)))
    return (
        stmt.outerjoin(Shop, Shop.id == bindparam("shop_id"))
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
    active = None if upgraded or row["active_id"] is None else cast(Application, SimpleNamespace(id=row["active_id"]))
    return OfficialView(
        shop=shop,
        account=account,
        record=record,
        active=active,
        can_cancel=can_cancel(record, policy, now=now),
        daily_post_limit=posting.daily_limit(policy, upgraded=upgraded),
        can_sell_as_official=can_sell_as_official(policy, bound=account is not None, upgraded=upgraded, now=now),
        upgrade_deadline=policy.upgrade_deadline,
    )


def params(*, shop_id: str, token: str, admin: Principal | None, now: dt.datetime) -> dict:
    out: dict = {"shop_id": shop_id, "now": now}
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
