"""The sandbox clock as staff set it (API.md): every change is audited (R-60) and stays within 2000–2100."""

import datetime as dt

from guanhao import clock, errors
from guanhao.audit import service as audit
from guanhao.db import Session
from guanhao.i18n import _l

EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2101, 1, 1, tzinfo=dt.UTC)  # exclusive: any time in the year 2100 is accepted


def in_range(when: dt.datetime) -> bool:
    """A sandbox time is between 2000 and 2100 (UTC), both years included."""
    return EARLIEST <= when < LATEST


def set_clock(session: Session, when: dt.datetime, *, actor: str) -> dt.datetime:
    """R-60: freezes the service clock at `when` (forwards or backwards), audited with the times before and after.
    The row's time is the real one: the trail says when staff moved the clock, not where it was moved to."""
    if when.tzinfo is None or not in_range(when):
        raise errors.ValidationFailed(
            _l("The sandbox clock takes a time between the years 2000 and 2100, with an offset"),
            errors=[{"field": "now", "type": "out_of_range", "message": "between 2000 and 2100"}],
        )
    before = clock.sandbox_now(session)
    clock.set_sandbox_now(session, when)
    _record(session, actor=actor, action="sandbox_clock.set", before=before, after=when)
    return when


def unfreeze(session: Session, *, actor: str) -> dt.datetime:
    """R-60: back to real time (audited when the clock was set; unfreezing a running clock changes nothing)."""
    before = clock.sandbox_now(session)
    if before is not None:
        clock.clear_sandbox_now(session)
        _record(session, actor=actor, action="sandbox_clock.unfrozen", before=before, after=None)
    return clock.real_now()


def _record(
    session: Session, *, actor: str, action: str, before: dt.datetime | None, after: dt.datetime | None
) -> None:
    audit.record(
        session,
        at=clock.real_now(),
        actor=actor,
        action=action,
        target_kind="sandbox_clock",
        target_id="sandbox_clock",
        from_state="real" if before is None else "frozen",
        to_state="real" if after is None else "frozen",
        detail={
            "from": None if before is None else before.astimezone(dt.UTC).isoformat(),
            "to": None if after is None else after.astimezone(dt.UTC).isoformat(),
        },
    )
