"""What every JSON route shares: who is calling, in which language, and one unit of work."""

import base64
import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request

from guanhao import clock, db, errors
from guanhao.auth.service import Principal, admin_principal, authenticate, bearer_token, still_valid
from guanhao.db import Session, session_scope
from guanhao.i18n import Message, _l, language
from guanhao.policy import Policy, get_policy
from guanhao.schemas import ID_RE
from guanhao.settings import get_settings

READS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Call:
    principal: Principal | None
    lang: str
    policy: Policy
    # Whether the request may write (by its method): a GET's unit never takes SQLite's write lock.
    writes: bool = True

    @property
    def actor(self) -> str:
        return self.principal.actor if self.principal else "holder"

    @contextmanager
    def unit(self) -> Iterator[tuple[Session, dt.datetime]]:
        """One transaction for the request; `now` read once from the service clock. A write waits for
        locks at most the request's budget (then 503, see db.unavailable). The caller's key is checked
        again inside it: a key revoked after the request authenticated does nothing more."""
        budget = get_settings().db_busy_timeout if self.writes else None
        with session_scope(write=self.writes, lock_timeout=budget) as session:
            if self.principal is not None:
                try:
                    still_valid(session, self.principal)
                except errors.Unauthenticated:
                    _forget_key(self.principal.key_id)
                    raise
            yield session, clock.now(session)

    def require_admin(self) -> None:
        """R-62: platform staff only (403 for a merchant's key)."""
        if self.principal is None or not self.principal.is_admin:
            raise errors.Forbidden(_l("Platform staff only"))

    def require_subject(self, subject_id: str, *, not_found: Message) -> None:
        """R-62: another subject's object is indistinguishable from a missing one — same code, same words."""
        if self.principal is None or not self.principal.can_see_subject(subject_id):
            raise errors.NotFound(not_found)


def _writes(request: Request) -> bool:
    return request.method not in READS


def _lang(request: Request) -> str:
    return language(request.headers.get("accept-language"))


# Stored keys already seen by this process: token → (monotonic expiry, principal). A key's role and subject never
# change, and whether it is revoked is not taken from here: every unit of work checks it again in its own
# transaction (`still_valid`), so a revoked key is 401 from the revoke on, in every process, cached or not.
# What the cache saves is the second session that only looked the key up.
KEY_TTL = 60.0
KEY_CACHE_SIZE = 10_000
_keys: dict[str, tuple[float, Principal]] = {}
db.on_reset.append(_keys.clear)


def _known_key(token: str) -> Principal | None:
    hit = _keys.get(token)
    if hit is None or hit[0] < time.monotonic():
        return None
    return hit[1]


def _remember_key(token: str, principal: Principal) -> None:
    if len(_keys) >= KEY_CACHE_SIZE:
        _keys.clear()
    _keys[token] = (time.monotonic() + KEY_TTL, principal)


def _forget_key(key_id: str) -> None:
    for token in [t for t, (_, p) in list(_keys.items()) if p.key_id == key_id]:
        _keys.pop(token, None)


def authenticated(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer token")] = None,
) -> Call:
    """R-62: the admin token, or a stored key (looked up once a minute at most per process; its revocation is
    checked by every unit of work, see `Call.unit`)."""
    token = bearer_token(authorization)
    settings = get_settings()
    principal = admin_principal(token, admin_token=settings.admin_token) or _known_key(token)
    if principal is None:
        with session_scope(write=False) as session:
            principal = authenticate(session, authorization, admin_token=settings.admin_token)
        _remember_key(token, principal)
    return Call(principal=principal, lang=_lang(request), policy=get_policy(), writes=_writes(request))


@dataclass(frozen=True)
class Bearer:
    """The caller of a one-statement read (guanhao.reader): its token, and the staff principal when it is the
    admin token. A stored key is looked up by the read's own statement, which also refuses a revoked one."""

    token: str
    admin: Principal | None


async def bearer(authorization: Annotated[str | None, Header(description="Bearer token")] = None) -> Bearer:
    """R-62: a token is required (401 without one), as for `authenticated`; async, so no thread hop."""
    token = bearer_token(authorization)
    return Bearer(token=token, admin=admin_principal(token, admin_token=get_settings().admin_token))


def admin(call: Annotated[Call, Depends(authenticated)]) -> Call:
    call.require_admin()
    return call


def anonymous(request: Request) -> Call:
    return Call(principal=None, lang=_lang(request), policy=get_policy(), writes=_writes(request))


Authenticated = Annotated[Call, Depends(authenticated)]
BearerToken = Annotated[Bearer, Depends(bearer)]
Admin = Annotated[Call, Depends(admin)]
Anonymous = Annotated[Call, Depends(anonymous)]
CursorParam = Annotated[str | None, Query(description="opaque cursor from next_cursor", max_length=160)]
LimitParam = Annotated[int, Query(ge=1, le=200)]


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind != "s":
            raise ValueError
        seq = int(value)
        if seq < 0 or seq > 2**62:
            raise ValueError
        return seq
    except (ValueError, UnicodeDecodeError):
        raise _bad_cursor() from None


def _bad_cursor() -> errors.DomainError:
    return errors.ValidationFailed(
        _l("The cursor is not one this service gave out"),
        errors=[{"field": "cursor", "type": "invalid_cursor", "message": "bad cursor"}],
    )


def page(items: list, *, limit: int, seq_of) -> str | None:
    return encode_cursor(seq_of(items[-1])) if len(items) == limit else None


# Lists of objects with ids chosen outside (subjects, shops, accounts, API keys) page in creation order:
# by creation time, then id — a total order, so no object is skipped or shown twice between pages.


def encode_key_cursor(at: dt.datetime, object_id: str) -> str:
    raw = f"k:{at.astimezone(dt.UTC).isoformat()}|{object_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_key_cursor(cursor: str | None) -> tuple[dt.datetime, str] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        at, sep, object_id = value.partition("|")
        if kind != "k" or not sep or not ID_RE.fullmatch(object_id):
            raise ValueError
        when = dt.datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError
        return when, object_id
    except (ValueError, UnicodeDecodeError):
        raise _bad_cursor() from None


def key_page(items: list, *, limit: int) -> str | None:
    """The cursor after a full page of objects with `created_at` and `id`."""
    return encode_key_cursor(items[-1].created_at, items[-1].id) if len(items) == limit else None
