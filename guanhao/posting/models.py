import datetime as dt

from sqlalchemy import CheckConstraint, Date, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from guanhao.db import Base


class PostingCounter(Base):
    """Posts an account made on one Asia/Shanghai calendar day (SPEC R-23). Incremented only by
    an atomic upsert that refuses to pass the limit, so concurrency cannot overshoot it."""

    __tablename__ = "posting_counters"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(Integer)

    __table_args__ = (CheckConstraint("used >= 0", name="used"),)
