"""The duty table: one row per background duty, its schedule, its last outcome and who holds it now."""

import datetime as dt

from sqlalchemy import CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from guanhao.db import Base, UTCDateTime


class DutyRow(Base):
    """A background duty (guanhao.jobs.DUTIES). An exclusive duty runs in one worker at a time: the worker that
    claims it holds its lease until `lease_until` (real time); a worker killed mid-duty loses it when the lease
    runs out and another takes it. A shared duty runs in every worker (its items have their own locks or
    leases); its row only records the last run."""

    __tablename__ = "worker_duties"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_run_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(120))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_worker: Mapped[str | None] = mapped_column(String(120))
    last_outcome: Mapped[str | None] = mapped_column(String(8))
    last_processed: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    runs: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # in a row, reset by a run that succeeds

    __table_args__ = (CheckConstraint("last_outcome IN ('ok','error')", name="last_outcome"),)
