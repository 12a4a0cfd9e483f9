"""Set reads for the merchant's list pages. Reads only: every rule stays in upgrades.service."""

from sqlalchemy import select

from guanhao.db import Session
from guanhao.upgrades.models import Application


def applications_for_subject(
    session: Session, subject_id: str, *, before_seq: int | None, limit: int
) -> list[Application]:
    """A subject's applications, newest first. R-62: an application belongs to the subject that submitted
    it, whatever later happens to the shop — so this lists by the application's subject, not the shop's."""
    stmt = select(Application).where(Application.subject_id == subject_id).order_by(Application.seq.desc()).limit(limit)
    if before_seq is not None:
        stmt = stmt.where(Application.seq < before_seq)
    return list(session.scalars(stmt))
