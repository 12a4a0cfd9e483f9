"""Upgrade applications (升级申请), the staff review step, auto-upgrade waves — each with its state machine
as data — the quota pools, and the official-account records."""

import datetime as dt
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from guanhao.db import Base, UTCDateTime


class State(StrEnum):
    SUBMITTED = "submitted"
    REVIEWING = "reviewing"
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    CANCELLED = "cancelled"


# SPEC §3 flow diagram; any other transition is INVALID_TRANSITION.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.SUBMITTED: frozenset({State.REVIEWING, State.REJECTED, State.EXPIRED, State.WITHDRAWN}),
    State.REVIEWING: frozenset({State.SUCCEEDED, State.REJECTED}),
    State.SUCCEEDED: frozenset({State.CANCELLED}),
    State.REJECTED: frozenset(),
    State.EXPIRED: frozenset(),
    State.WITHDRAWN: frozenset(),
    State.CANCELLED: frozenset(),
}

IN_PROGRESS = (State.SUBMITTED, State.REVIEWING)
_IN_PROGRESS_SQL = "status IN ('submitted', 'reviewing')"


class Review(StrEnum):
    """The staff review step of an application in `reviewing` (R-16): big accounts wait for staff."""

    WAITING = "waiting"
    APPROVED = "approved"
    REJECTED = "rejected"


REVIEW_TRANSITIONS: dict[Review | None, frozenset[Review]] = {
    None: frozenset({Review.WAITING}),
    Review.WAITING: frozenset({Review.APPROVED, Review.REJECTED}),
    Review.APPROVED: frozenset(),
    Review.REJECTED: frozenset(),
}


class WaveState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A failed wave, or one marked done by a worker that lost a race to its last chunk, can be resumed;
# a cancelled one stays cancelled.
WAVE_TRANSITIONS: dict[WaveState, frozenset[WaveState]] = {
    WaveState.RUNNING: frozenset({WaveState.DONE, WaveState.FAILED, WaveState.CANCELLED}),
    WaveState.DONE: frozenset({WaveState.RUNNING}),
    WaveState.FAILED: frozenset({WaveState.RUNNING, WaveState.CANCELLED}),
    WaveState.CANCELLED: frozenset(),
}


class AccountType(StrEnum):
    """R-30: main 主账号, vertical 垂直号, dedicated 专用号 — alike in selling, different in quota."""

    MAIN = "main"
    VERTICAL = "vertical"
    DEDICATED = "dedicated"


# with no type chosen, main, then vertical, then dedicated (按序后补).
FALLBACK_ORDER = (AccountType.MAIN, AccountType.VERTICAL, AccountType.DEDICATED)


class Origin(StrEnum):
    MANUAL = "manual"
    AUTO = "auto"


class Application(Base):
    __tablename__ = "upgrade_applications"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), index=True)
    origin: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    account_type: Mapped[str] = mapped_column(String(16))
    type_chosen: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[list] = mapped_column(JSON, default=list)
    # The operator named for the account once upgraded (the holder unless the merchant named another).
    operator_is_holder: Mapped[bool] = mapped_column(Boolean, default=True)
    operator_name_enc: Mapped[str] = mapped_column(Text)
    operator_id_number_enc: Mapped[str] = mapped_column(Text)
    operator_phone_enc: Mapped[str] = mapped_column(Text)
    operator_id_hash: Mapped[str] = mapped_column(String(64))
    # The holder's capability: a hash to find it, the token sealed so staff can read the link.
    confirmation_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    confirmation_token_enc: Mapped[str | None] = mapped_column(Text)
    confirmation_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    staff_review: Mapped[str | None] = mapped_column(String(12))
    wave_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("shop_id", "attempt"),
        # SPEC R-19: at most one application per shop in progress — held by the database.
        Index(
            "uq_upgrade_applications_one_in_progress",
            "shop_id",
            unique=True,
            sqlite_where=text(_IN_PROGRESS_SQL),
            postgresql_where=text(_IN_PROGRESS_SQL),
        ),
        Index(
            "ix_upgrade_applications_expiry",
            "confirmation_expires_at",
            sqlite_where=text("status = 'submitted'"),
            postgresql_where=text("status = 'submitted'"),
        ),
        CheckConstraint(
            "status IN ('submitted','reviewing','succeeded','rejected','expired','withdrawn','cancelled')",
            name="status",
        ),
        CheckConstraint("account_type IN ('main','vertical','dedicated')", name="account_type"),
        CheckConstraint("origin IN ('manual','auto')", name="origin"),
        CheckConstraint("attempt >= 1", name="attempt"),
        CheckConstraint("staff_review IN ('waiting','approved','rejected')", name="staff_review"),
    )

    @property
    def awaiting_staff(self) -> bool:
        return self.staff_review == Review.WAITING


class Pool(Base):
    """A bounded pool: a subject's account-type quota (R-30) or one person's operator places (R-41).

    `held` counts the places held now. It moves only by one atomic statement that refuses to pass the
    capacity of the moment (`held < capacity`), so no concurrency, and no capacity lowered by a later
    sync, can overbook it (R-33); `slots` say who holds each place.
    """

    __tablename__ = "pools"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    held: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (CheckConstraint("held >= 0", name="held"),)


class Slot(Base):
    """A place held in a pool by an application (its account-type slot, R-33; its operator's place, R-41)."""

    __tablename__ = "slots"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool: Mapped[str] = mapped_column(ForeignKey("pools.key"), index=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("upgrade_applications.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class OfficialAccount(Base):
    """An upgraded account (店铺官方账号, enterprise-owned). One row per account (SPEC R-05, R-18). Its usage right
    belongs to the subject (R-22); its type is written once, at the upgrade, and no verb changes it (R-34)."""

    __tablename__ = "official_accounts"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id"), unique=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), index=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("upgrade_applications.id"), unique=True)
    account_type: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(8))
    upgraded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    cancel_deadline: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    operator_name_enc: Mapped[str] = mapped_column(Text)
    operator_id_number_enc: Mapped[str] = mapped_column(Text)
    operator_phone_enc: Mapped[str] = mapped_column(Text)
    operator_id_hash: Mapped[str] = mapped_column(String(64), index=True)
    operator_since: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # What a cancel restores (SPEC R-13).
    login_phone_before_enc: Mapped[str] = mapped_column(Text)


class Consent(Base):
    """Who agreed to what, when, and the version of the agreement text they saw (SPEC R-15)."""

    __tablename__ = "consents"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("upgrade_applications.id"), index=True)
    party: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(120))
    agreement_version: Mapped[str] = mapped_column(String(40))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("party IN ('merchant','holder')", name="party"),
        CheckConstraint("decision IN ('agreed','accepted','declined')", name="decision"),
    )


class Wave(Base):
    """An auto-upgrade wave (系统自动升级, SPEC R-11). Its counters change in the same transaction as
    the chunk of shops they count, so a killed wave resumes with exact figures."""

    __tablename__ = "auto_upgrade_waves"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(12))  # WaveState
    limit: Mapped[int] = mapped_column(Integer)
    min_experience_score: Mapped[float] = mapped_column(Float)
    scanned: Mapped[int] = mapped_column(Integer, default=0)
    upgraded: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    skip_reasons: Mapped[dict] = mapped_column(JSON, default=dict)
    started_by: Mapped[str] = mapped_column(String(120))
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("status IN ('running','done','failed','cancelled')", name="status"),
        CheckConstraint('"limit" >= 0 AND upgraded <= "limit"', name="limit"),
    )


class WaveWorker(Base):
    """One worker's share of a wave (R-11): the chunks it committed and the shops they counted, written in each
    chunk's own transaction, and when it last committed one (real time)."""

    __tablename__ = "auto_upgrade_wave_workers"

    wave_id: Mapped[str] = mapped_column(ForeignKey("auto_upgrade_waves.id"), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    scanned: Mapped[int] = mapped_column(Integer, default=0)
    upgraded: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class WaveSkip(Base):
    """A shop a wave looked at and left, with why (a counted reason, R-11); a resumed wave does not look at it
    again."""

    __tablename__ = "auto_upgrade_wave_skips"

    wave_id: Mapped[str] = mapped_column(ForeignKey("auto_upgrade_waves.id"), primary_key=True)
    shop_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(40))
