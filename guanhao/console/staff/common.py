"""What every staff page shares: the router under /staff, who may use it, the navigation, the page shell."""

from typing import Any

from fastapi import APIRouter, Response

from guanhao import errors
from guanhao.console import pages
from guanhao.console.session import Viewer, Visit
from guanhao.i18n import _l

router = APIRouter(prefix="/staff", route_class=pages.ConsoleRoute, include_in_schema=False)
STAFF_ONLY = _l("This page is for platform staff")
NAV = [
    ("dashboard", "/staff", _l("Dashboard")),
    ("review", "/staff/review", _l("Review queue")),
    ("waves", "/staff/waves", _l("Auto-upgrade waves")),
    ("audit", "/staff/audit", _l("Audit trail")),
    ("shops", "/staff/shops", _l("Shop lookup")),
    ("policy", "/staff/policy", _l("Policy in force")),
    ("integrations", "/staff/integrations", _l("API keys and webhooks")),
]


def staff(current: Visit) -> Viewer:
    """R-62: staff see every subject; a merchant signed in is refused, as on the API's staff paths (403)."""
    if current.viewer is None:
        raise errors.Unauthenticated(_l("Sign in first"))
    if current.viewer.role != "staff":
        raise errors.Forbidden(STAFF_ONLY)
    return current.viewer


def nav_items(lang: str) -> list[tuple[str, str, str]]:
    return [(key, href, text.render(lang)) for key, href, text in NAV]


def render(current: Visit, template: str, *, nav: str, status: int = 200, **context: Any) -> Response:
    return pages.render(current, template, status=status, nav=nav, nav_items=nav_items(current.lang), **context)
