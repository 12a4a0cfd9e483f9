"""Who is calling: the admin token from the environment, or a stored API key."""

import datetime as dt
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, text

from guanhao import errors
from guanhao.audit import service as audit
from guanhao.auth.models import ApiKey
from guanhao.db import Session, is_postgres
from guanhao.i18n import _l
from guanhao.pii import vault

ENV_KEY = "env"  # the key id of the admin token given in GUANHAO_ADMIN_TOKEN


@dataclass(frozen=True)
class Principal:
    role: str  # "admin" | "merchant"
    subject_id: str | None
    key_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.key_id}"

    def can_see_subject(self, subject_id: str) -> bool:
        """R-62: staff see every subject; a merchant only its own."""
        return self.is_admin or self.subject_id == subject_id


def token_hash(token: str) -> str:
    return vault().blind_index(token, kind="api_key")


def create_key(
    session: Session, *, role: str, subject_id: str | None, label: str | None, actor: str, now: dt.datetime
) -> tuple[ApiKey, str]:
    """A key for staff, or for one subject's merchant (R-62); the token is shown once and stored only as a
    keyed hash. A bad role, or a merchant key without a subject, is refused (R-63)."""
    if role not in ("admin", "merchant"):
        raise errors.ValidationFailed(_l("The role must be admin or merchant"))
    if role == "merchant" and not subject_id:
        raise errors.ValidationFailed(
            _l("A merchant key needs a subject_id"),
            errors=[{"field": "subject_id", "type": "missing", "message": "required"}],
        )
    if role == "admin" and subject_id:
        raise errors.ValidationFailed(
            _l("An admin key is bound to no subject: leave subject_id out"),
            errors=[{"field": "subject_id", "type": "extra_forbidden", "message": "not allowed for an admin key"}],
        )
    prefix = "gh_adm_" if role == "admin" else "gh_mch_"
    token = prefix + secrets.token_urlsafe(32)
    key = ApiKey(
        id="key_" + uuid.uuid4().hex[:16],
        token_hash=token_hash(token),
        role=role,
        subject_id=subject_id if role == "merchant" else None,
        label=label,
        created_at=now,
    )
    session.add(key)
    session.flush()
    audit.record(
        session,
        at=now,
        actor=actor,
        action="api_key.created",
        target_kind="api_key",
        target_id=key.id,
        subject_id=key.subject_id,
        detail={"role": role, "label": label},
    )
    return key, token


UNKNOWN_TOKEN = _l("Unknown or revoked token")


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header. The scheme is case-insensitive and may be
    followed by more than one space (RFC 9110 §11.4, §11.6.2)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        raise errors.Unauthenticated(_l("Send Authorization: Bearer <token>"))
    token = token.strip()
    if not token:
        raise errors.Unauthenticated(_l("The bearer token is empty"))
    return token


ADMIN = Principal(role="admin", subject_id=None, key_id=ENV_KEY)


def admin_principal(token: str, *, admin_token: str) -> Principal | None:
    """R-62: the staff principal when `token` is the admin token given at start (compared in constant time)."""
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return ADMIN
    return None


def authenticate(session: Session, authorization: str | None, *, admin_token: str) -> Principal:
    """R-62: the admin token given at start, or a stored key that is not revoked; anything else is 401."""
    token = bearer_token(authorization)
    admin = admin_principal(token, admin_token=admin_token)
    if admin is not None:
        return admin
    key = session.scalar(select(ApiKey).where(ApiKey.token_hash == token_hash(token), ApiKey.revoked_at.is_(None)))
    if key is None:
        raise errors.Unauthenticated(UNKNOWN_TOKEN)
    return Principal(role=key.role, subject_id=key.subject_id, key_id=key.id)


# The advisory-lock namespace of API keys (PostgreSQL): a request holds its key's lock shared, a revoke exclusive.
_KEY_LOCKS = 0x6B6579  # "key"


def _lock_key(session: Session, key_id: str, *, exclusive: bool) -> None:
    if is_postgres(session):
        how = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        session.execute(text(f"SELECT {how}(:ns, hashtext(:key_id))"), {"ns": _KEY_LOCKS, "key_id": key_id})


def still_valid(session: Session, principal: Principal) -> None:
    """Refuses, inside the unit of work that acts for `principal`, a key revoked since it authenticated. On
    PostgreSQL the transaction holds the key's lock shared until it ends, and `revoke` takes it exclusively:
    a revoke waits for the requests its key is running, and every later one finds the key revoked. Once a
    revoke has returned, nothing more is done with that key. (An advisory lock: no row is written.)"""
    if principal.key_id == ENV_KEY:
        return
    _lock_key(session, principal.key_id, exclusive=False)
    live = session.scalar(select(ApiKey.id).where(ApiKey.id == principal.key_id, ApiKey.revoked_at.is_(None)))
    if live is None:
        raise errors.Unauthenticated(UNKNOWN_TOKEN)


def revoke(session: Session, key_id: str, *, actor: str, now: dt.datetime) -> ApiKey:
    """Revokes a stored key: from now on it is 401 (an already revoked key stays as it was)."""
    _lock_key(session, key_id, exclusive=True)
    key = session.get(ApiKey, key_id, with_for_update=True)
    if key is None:
        raise errors.NotFound(_l("API key {key_id} not found", key_id=key_id))
    if key.revoked_at is None:
        key.revoked_at = now
        audit.record(
            session,
            at=now,
            actor=actor,
            action="api_key.revoked",
            target_kind="api_key",
            target_id=key.id,
            subject_id=key.subject_id,
            detail={"role": key.role},
        )
        session.flush()
    return key


def keys_page(session: Session, *, after: tuple[dt.datetime, str] | None, limit: int) -> list[ApiKey]:
    """Stored keys in creation order (time, then id), revoked ones included."""
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id).limit(limit)
    if after is not None:
        at, key_id = after
        stmt = stmt.where(or_(ApiKey.created_at > at, and_(ApiKey.created_at == at, ApiKey.id > key_id)))
    return list(session.scalars(stmt))


def caller_scope(principal: Principal | None, path: str) -> str:
    """A stable, non-reversible scope for Idempotency-Key records: the principal, however its header was
    spelled. Callers without a token (account holders) are told apart by the capability in the path.
    Keyed, like the API key hashes."""
    return vault().blind_index(principal.actor if principal else f"anonymous:{path}", kind="idempotency_caller")
