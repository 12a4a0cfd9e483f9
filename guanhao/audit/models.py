import datetime as dt

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from guanhao.db import Base, UTCDateTime


class AuditEntry(Base):
    """Append-only, tamper-evident trail (SPEC R-20, R-60). A trigger refuses UPDATE and DELETE, and
    each row carries a hash chained to the previous row of the same subject (`chain`), so an edit
    made behind the trigger's back is found by `guanhao audit verify`."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(60))
    target_kind: Mapped[str] = mapped_column(String(30))
    target_id: Mapped[str] = mapped_column(String(64), index=True)
    subject_id: Mapped[str | None] = mapped_column(String(64), index=True)
    shop_id: Mapped[str | None] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(30))
    to_state: Mapped[str | None] = mapped_column(String(30))
    # Never personal data in clear: callers pass masked values only.
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    # The subject's chain ("-" for rows of no subject), the previous row's hash in it, and this row's.
    chain: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_log_chain_seq", "chain", "seq"),)
