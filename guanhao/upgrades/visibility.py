"""Who sees an application (SPEC R-62), decided here and nowhere else.

An application belongs to the subject that submitted it, whatever later happens to the shop: when a shop
moves from subject A to subject B, A still reads its old applications (by id and in its lists) and B never
sees them — not by id, not in the shop's list, not as the shop's application in progress — while B's own new
applications are B's. Staff see every application. The API and the merchant console both ask this module.
"""

from typing import Any

from guanhao.upgrades.models import Application

STAFF = None  # the scope of platform staff: every subject


def scope_of(*, is_staff: bool, subject_id: str | None) -> str | None:
    """R-62: the subject whose applications a caller sees; None for staff (all). A merchant bound to no subject
    sees none (the empty id matches no application)."""
    return STAFF if is_staff else (subject_id or "")


def readable(app: Application, scope: str | None) -> bool:
    """R-62: the caller of `scope` may read this application (by id, in a list, as a shop's application)."""
    return scope is STAFF or app.subject_id == scope


def only_visible(stmt: Any, scope: str | None) -> Any:
    """R-62: a select of applications narrowed to those the caller of `scope` may read."""
    return stmt if scope is STAFF else stmt.where(Application.subject_id == scope)
