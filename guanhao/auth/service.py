"""Who is calling: the admin token from the environment, or a stored API key."""

import datetime as dt
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from guanhao import errors
from guanhao.auth.models import ApiKey
from guanhao.db import Session
from guanhao.i18n import _l
from guanhao.pii import vault


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
    session: Session, *, role: str, subject_id: str | None, label: str | None, now: dt.datetime
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
    return key, token


def authenticate(session: Session, authorization: str | None, *, admin_token: str) -> Principal:
    """R-62: the admin token given at start, or a stored key that is not revoked; anything else is 401."""
    if not authorization or not authorization.startswith("Bearer "):
        raise errors.Unauthenticated(_l("Send Authorization: Bearer <token>"))
    token = authorization[len("Bearer ") :].strip()
    if not token:
        raise errors.Unauthenticated(_l("The bearer token is empty"))
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(role="admin", subject_id=None, key_id="env")
    key = session.scalar(select(ApiKey).where(ApiKey.token_hash == token_hash(token), ApiKey.revoked_at.is_(None)))
    if key is None:
        raise errors.Unauthenticated(_l("Unknown or revoked token"))
    return Principal(role=key.role, subject_id=key.subject_id, key_id=key.id)


def caller_scope(authorization: str | None, path: str) -> str:
    """A stable, non-reversible scope for Idempotency-Key records. Callers without a token
    (account holders) are told apart by the capability in the path. Keyed, like the API key hashes:
    a plain digest of a guessable admin token would give the token away."""
    return vault().blind_index(authorization or f"anonymous:{path}", kind="idempotency_caller")
