import datetime as dt
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from guanhao.db import Base, UTCDateTime


class Kind(StrEnum):
    OPERATOR = "operator"  # 更换运营人
    LOGIN_PHONE = "login_phone"  # 登录手机号换绑


class ChangeState(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    SUPERSEDED = "superseded"  # a newer code was asked for, or the upgrade it was asked for was cancelled
    FAILED = "failed"  # too many wrong codes
    EXPIRED = "expired"


CHANGE_TRANSITIONS: dict[ChangeState, frozenset[ChangeState]] = {
    ChangeState.PENDING: frozenset(
        {ChangeState.VERIFIED, ChangeState.SUPERSEDED, ChangeState.FAILED, ChangeState.EXPIRED}
    ),
    ChangeState.VERIFIED: frozenset(),
    ChangeState.SUPERSEDED: frozenset(),
    ChangeState.FAILED: frozenset(),
    ChangeState.EXPIRED: frozenset(),
}


class PendingChange(Base):
    """A change to an upgraded account that waits for the SMS code sent to the new phone (SPEC R-24,
    R-42): a new operator (运营人) or a new login phone (登录手机号换绑). The code is stored only as a
    keyed hash; it expires, allows a few tries, and a new request supersedes the old one."""

    __tablename__ = "pending_changes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # Kind
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id"))
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"))
    # The upgrade the change was asked for: a code never carries over to a later upgrade after a cancel.
    application_id: Mapped[str] = mapped_column(ForeignKey("upgrade_applications.id"))
    status: Mapped[str] = mapped_column(String(12))  # ChangeState
    new_name_enc: Mapped[str | None] = mapped_column(Text)
    new_id_number_enc: Mapped[str | None] = mapped_column(Text)
    new_phone_enc: Mapped[str] = mapped_column(Text)
    new_id_hash: Mapped[str | None] = mapped_column(String(64))
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("kind IN ('operator','login_phone')", name="kind"),
        CheckConstraint("status IN ('pending','verified','superseded','failed','expired')", name="status"),
        # At most one pending change of each kind per account.
        Index(
            "uq_pending_changes_one_pending",
            "account_id",
            "kind",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )
