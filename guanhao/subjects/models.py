"""Subjects (资质主体), shops (店铺) and Douyin accounts (抖音账号) as the platform syncs them in."""

import datetime as dt

from sqlalchemy import JSON, Boolean, CheckConstraint, Date, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from guanhao.db import Base, UTCDateTime

SUBJECT_TYPES = ("enterprise", "individual_business", "personal")
SHOP_TYPES = ("official_flagship", "flagship", "specialty", "franchise", "enterprise", "individual", "personal")
SHOP_STATUSES = ("active", "suspended", "closed")
ACCOUNT_STATUSES = ("normal", "restricted", "banned")


class Subject(Base):
    __tablename__ = "subjects"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    subject_type: Mapped[str] = mapped_column(String(32))
    cross_border: Mapped[bool] = mapped_column(Boolean, default=False)
    license_number: Mapped[str | None] = mapped_column(String(64))
    license_valid_until: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(f"subject_type IN {SUBJECT_TYPES}", name="subject_type"),
        # Lists page in creation order: time, then id.
        Index("ix_subjects_creation_order", "created_at", "id"),
    )


class Shop(Base):
    __tablename__ = "shops"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    shop_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    experience_score: Mapped[float] = mapped_column(Float)
    # SPEC R-05: an account is the official account of at most one shop — held by this unique column.
    official_account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(f"shop_type IN {SHOP_TYPES}", name="shop_type"),
        CheckConstraint(f"status IN {SHOP_STATUSES}", name="status"),
        CheckConstraint("experience_score >= 0 AND experience_score <= 5", name="experience_score"),
        Index("ix_shops_creation_order", "created_at", "id"),
    )


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nickname: Mapped[str] = mapped_column(String(200))
    followers: Mapped[int] = mapped_column(Integer)
    following: Mapped[int] = mapped_column(Integer, default=0)
    posts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    real_name_verified: Mapped[bool] = mapped_column(Boolean)
    violations_90d: Mapped[int] = mapped_column(Integer)
    # Personal data: AES-GCM ciphertext only (guanhao.pii, R-50); id_hash is the keyed blind index.
    login_phone_enc: Mapped[str] = mapped_column(Text)
    holder_name_enc: Mapped[str] = mapped_column(Text)
    holder_id_number_enc: Mapped[str] = mapped_column(Text)
    holder_phone_enc: Mapped[str] = mapped_column(Text)
    holder_id_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(f"status IN {ACCOUNT_STATUSES}", name="status"),
        CheckConstraint("followers >= 0 AND following >= 0 AND posts >= 0 AND violations_90d >= 0", name="counts"),
        Index("ix_accounts_creation_order", "created_at", "id"),
    )


class ImportFile(Base):
    """An NDJSON file imported from the command line (`guanhao import FILE`), keyed by its content's SHA-256: the
    last line committed moves in the same transaction as each batch, so an import that stopped resumes after it,
    and each line lands exactly once."""

    __tablename__ = "import_files"

    file_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    lines_done: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    # Accepted lines per kind: {"subject": n, "account": n, "shop": n, "binding": n}.
    by_kind: Mapped[dict] = mapped_column(JSON, default=dict)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ImportRejection(Base):
    """A line of a command-line import that was refused: its number, its error code and detail (R-63)."""

    __tablename__ = "import_rejections"

    file_hash: Mapped[str] = mapped_column(ForeignKey("import_files.file_hash", ondelete="CASCADE"), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
