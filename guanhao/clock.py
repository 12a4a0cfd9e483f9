"""The service clock. Only the edges (routes, CLI, jobs) read it; services take `now`.

In sandbox mode the clock can be set (API.md, like a billing test clock): once set it stands
still until set again, or until it is unfrozen (real time again). It lives in the database so every worker process reads the same time.
"""

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from guanhao.db import Base, Session, UTCDateTime
from guanhao.settings import get_settings


class SandboxClock(Base):
    __tablename__ = "sandbox_clock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    now: Mapped[dt.datetime] = mapped_column(UTCDateTime)


def real_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def now(session: Session) -> dt.datetime:
    if get_settings().sandbox:
        frozen = session.scalar(select(SandboxClock.now).where(SandboxClock.id == 1))
        if frozen is not None:
            return frozen
    return real_now()


def set_sandbox_now(session: Session, when: dt.datetime) -> dt.datetime:
    row = session.get(SandboxClock, 1)
    if row is None:
        session.add(SandboxClock(id=1, now=when))
    else:
        row.now = when
    session.flush()
    return when


def clear_sandbox_now(session: Session) -> None:
    """Real time again: the set clock is removed."""
    session.execute(delete(SandboxClock).where(SandboxClock.id == 1))


def sandbox_now(session: Session) -> dt.datetime | None:
    return session.scalar(select(SandboxClock.now).where(SandboxClock.id == 1))


CHINA = ZoneInfo("Asia/Shanghai")


def china_date(when: dt.datetime) -> dt.date:
    """The calendar day in mainland China, where licences expire (R-03) and posting days turn over."""
    return when.astimezone(CHINA).date()
