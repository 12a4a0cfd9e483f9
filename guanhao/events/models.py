import datetime as dt

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from guanhao.db import Base, UTCDateTime


class OutboxEvent(Base):
    """Transactional outbox (SPEC R-61): written in the same transaction as the change it reports.

    `seq` is assigned in commit order (see events.service), so a reader paging by seq never
    skips an event that commits late.
    """

    __tablename__ = "outbox_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(60))
    shop_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # 站内信 reads a subject's events, newest first.
    subject_id: Mapped[str | None] = mapped_column(String(64), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict] = mapped_column(JSON)
