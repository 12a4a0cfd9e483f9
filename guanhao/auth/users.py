"""Console users (商家后台 / 平台运营后台): accounts with an argon2 password, logins rate-limited in the
database, and server-side sessions behind a random cookie token."""

import datetime as dt
import math
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Table, bindparam, case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from guanhao import errors
from guanhao.audit import service as audit
from guanhao.auth.models import ConsoleSession, LoginThrottle, User
from guanhao.db import Session, UTCDateTime, is_postgres, refusing
from guanhao.i18n import _l
from guanhao.pii import vault
from guanhao.policy import Policy
from guanhao.subjects import service as subjects

ROLES = ("merchant", "staff")
USERNAME_RE = re.compile(r"\A[a-z0-9][a-z0-9_.@-]{2,63}\Z")
PASSWORD_MIN, PASSWORD_MAX = 8, 256
WRONG_LOGIN = _l("Wrong username or password")

_hasher = PasswordHasher()
# Verified against when the username is unknown, so that an unknown name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def normalize_username(value: str) -> str:
    return value.strip().lower()


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    role: str,
    subject_id: str | None,
    actor: str,
    now: dt.datetime,
) -> User:
    """A merchant user belongs to one known subject; a staff user to none."""
    name = normalize_username(username)
    if not USERNAME_RE.fullmatch(name):
        raise _invalid(
            "username", _l("A username has 3 to 64 letters, digits or _ . @ -, starting with a letter or digit")
        )
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise _invalid(
            "password", _l("A password has {least} to {most} characters", least=PASSWORD_MIN, most=PASSWORD_MAX)
        )
    if role not in ROLES:
        raise _invalid("role", _l("The role must be merchant or staff"))
    if role == "merchant":
        if not subject_id:
            raise _invalid("subject_id", _l("A merchant user needs a subject_id"))
        subjects.known_subject(session, subject_id)
    elif subject_id is not None:
        raise _invalid("subject_id", _l("A staff user belongs to no subject"))
    user = User(
        id="usr_" + uuid.uuid4().hex[:16],
        username=name,
        password_hash=_hasher.hash(password),
        role=role,
        subject_id=subject_id,
        notices_seen_seq=0,
        created_at=now,
    )
    with refusing(session, errors.UsernameTaken(_l("The username {username} is taken", username=name))):
        session.add(user)
    audit.record(
        session,
        at=now,
        actor=actor,
        action="user.created",
        target_kind="user",
        target_id=user.id,
        subject_id=subject_id,
        detail={"username": name, "role": role},
    )
    return user


def _invalid(field: str, detail) -> errors.DomainError:
    return errors.ValidationFailed(detail, errors=[{"field": field, "type": "invalid", "message": "invalid"}])


def get_user(session: Session, user_id: str, *, lock: bool = False) -> User:
    stmt = select(User).where(User.id == user_id)
    user = session.scalar(stmt.with_for_update() if lock else stmt)
    if user is None:
        raise errors.NotFound(_l("User {user_id} not found", user_id=user_id))
    return user


def list_users(session: Session, *, after_seq: int | None, limit: int) -> list[User]:
    stmt = select(User).order_by(User.seq).limit(limit)
    if after_seq is not None:
        stmt = stmt.where(User.seq > after_seq)
    return list(session.scalars(stmt))


def disable_user(session: Session, user_id: str, *, actor: str, now: dt.datetime) -> User:
    """The user can no longer sign in; their open sessions end at once. Disabling twice changes nothing."""
    user = get_user(session, user_id, lock=True)
    if user.disabled_at is not None:
        return user
    user.disabled_at = now
    session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
    audit.record(
        session,
        at=now,
        actor=actor,
        action="user.disabled",
        target_kind="user",
        target_id=user.id,
        subject_id=user.subject_id,
        detail={"username": user.username, "role": user.role},
    )
    session.flush()
    return user


# ---------------------------------------------------------------- logging in


@dataclass(frozen=True)
class Login:
    """The outcome of a login. The attempt is counted even when it fails, so the caller commits, then
    raises `error`."""

    user: User | None
    error: errors.DomainError | None = None


def login(session: Session, *, username: str, password: str, client: str, policy: Policy, now: dt.datetime) -> Login:
    """Counts the attempt against the username and the client address first (one atomic upsert each), then
    checks the password: no number of concurrent tries gets more guesses than the limit."""
    name = normalize_username(username)
    cfg = policy.login
    window = dt.timedelta(minutes=cfg.window_minutes)
    by_user = _count_attempt(session, "user:" + name, now=now, window=window)
    by_client = _count_attempt(session, "client:" + client, now=now, window=window)
    over = [
        started
        for (count, started), most in ((by_user, cfg.max_attempts_per_user), (by_client, cfg.max_attempts_per_client))
        if count > most
    ]
    if over:
        wait = max(started + window - now for started in over)
        seconds = max(1, math.ceil(wait.total_seconds()))
        minutes = (seconds + 59) // 60
        return Login(
            None,
            errors.TooManyAttempts(
                _l("Too many sign-in attempts; try again in {minutes} min", minutes=minutes), retry_after=seconds
            ),
        )
    user = session.scalar(select(User).where(User.username == name))
    try:
        _hasher.verify(user.password_hash if user is not None else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return Login(None, errors.Unauthenticated(WRONG_LOGIN))
    if user is None or user.disabled_at is not None:
        return Login(None, errors.Unauthenticated(WRONG_LOGIN))
    # A good password clears the name's count and takes back this attempt from the client's.
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == _throttle_key("user:" + name)))
    session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == _throttle_key("client:" + client), LoginThrottle.attempts > 0)
        .values(attempts=LoginThrottle.attempts - 1)
    )
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return Login(user)


def _throttle_key(value: str) -> str:
    # Keyed hash: neither usernames nor client addresses are kept in clear.
    return vault().blind_index(value, kind="login_throttle")


def _count_attempt(session: Session, key: str, *, now: dt.datetime, window: dt.timedelta) -> tuple[int, dt.datetime]:
    """(attempts in the current window including this one, when the window started)."""
    table = cast(Table, LoginThrottle.__table__)
    insert = (postgresql.insert if is_postgres(session) else sqlite.insert)(table)
    now_param = bindparam("now", now, type_=UTCDateTime())
    expired = table.c.window_started_at <= bindparam("cutoff", now - window, type_=UTCDateTime())
    stmt = (
        insert.values(key=_throttle_key(key), attempts=1, window_started_at=now)
        .on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "attempts": case((expired, 1), else_=table.c.attempts + 1),
                "window_started_at": case((expired, now_param), else_=table.c.window_started_at),
            },
        )
        .returning(table.c.attempts, table.c.window_started_at)
    )
    count, started = session.execute(stmt).one()
    return count, started


# ---------------------------------------------------------------- sessions


def _session_hash(token: str) -> str:
    return vault().blind_index(token, kind="console_session")


def start_session(session: Session, user: User, *, policy: Policy, now: dt.datetime) -> tuple[ConsoleSession, str]:
    """A new session for a signed-in user; the token goes in the cookie and only its keyed hash is stored."""
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        token_hash=_session_hash(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        flash=[],
        created_at=now,
        expires_at=now + dt.timedelta(hours=policy.login.session_hours),
    )
    session.add(row)
    session.flush()
    return row, token


def session_for(session: Session, token: str, *, now: dt.datetime) -> tuple[ConsoleSession, User] | None:
    """The live session behind a cookie token, with its user; None when unknown, expired or the user is disabled."""
    found = session.execute(
        select(ConsoleSession, User)
        .join(User, User.id == ConsoleSession.user_id)
        .where(ConsoleSession.token_hash == _session_hash(token))
    ).first()
    if found is None:
        return None
    row, user = found
    if now >= row.expires_at or user.disabled_at is not None:
        return None
    return row, user


def end_session(session: Session, token: str) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == _session_hash(token)))


def push_flash(session: Session, token_hash: str, kind: str, msgid: str, params: dict) -> None:
    """A message shown once on the next page (post/redirect/get)."""
    row = session.get(ConsoleSession, token_hash, with_for_update=True)
    if row is not None:
        row.flash = [*row.flash, {"kind": kind, "msgid": msgid, "params": params}]


def pop_flash(session: Session, token_hash: str) -> list[dict]:
    row = session.get(ConsoleSession, token_hash, with_for_update=True)
    if row is None or not row.flash:
        return []
    shown, row.flash = row.flash, []
    return shown


def mark_notices_seen(session: Session, user_id: str, seq: int) -> None:
    session.execute(update(User).where(User.id == user_id, User.notices_seen_seq < seq).values(notices_seen_seq=seq))
