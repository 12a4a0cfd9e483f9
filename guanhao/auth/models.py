import datetime as dt

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from guanhao.db import Base, UTCDateTime


class ApiKey(Base):
    """A bearer token, stored only as a keyed hash; a merchant key is bound to one subject."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str | None] = mapped_column(String(64), index=True)
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("role IN ('admin','merchant')", name="role"),
        CheckConstraint("role = 'admin' OR subject_id IS NOT NULL", name="merchant_subject"),
    )


class User(Base):
    """A console user (商家后台 / 平台运营后台): a merchant of one subject, or platform staff (no subject).
    Only the argon2 hash of the password is stored."""

    __tablename__ = "users"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str | None] = mapped_column(ForeignKey("subjects.id"), index=True)
    # The last outbox event the user has seen in 站内信 (the unread count starts after it).
    notices_seen_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("role IN ('merchant','staff')", name="role"),
        # A merchant belongs to one subject; staff to none.
        CheckConstraint(
            "(role = 'merchant' AND subject_id IS NOT NULL) OR (role = 'staff' AND subject_id IS NULL)",
            name="subject",
        ),
    )


class ConsoleSession(Base):
    """A signed-in browser. The cookie holds a random token; only its keyed hash is stored, so a
    logout, a disabled user or an expiry ends the session on the server, whatever the cookie says."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    # Messages shown once after a redirect (post/redirect/get): [{"kind", "msgid", "params"}].
    flash: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class LoginThrottle(Base):
    """Login attempts counted per key (a username, or a client address) in a fixed window. The count is
    raised by one atomic upsert before the password is checked, so processes and threads racing on the
    same key can never try more passwords than the limit between them."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)
    window_started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
