import datetime as dt

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from guanhao.db import Base, UTCDateTime


class SmsMessage(Base):
    """What the sandbox SMS sender 'sent'. The phone is sealed like any personal data."""

    __tablename__ = "sandbox_sms"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    phone_enc: Mapped[str] = mapped_column(Text)
    phone_hash: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    code: Mapped[str | None] = mapped_column(String(12))
    purpose: Mapped[str] = mapped_column(String(40))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
