"""The staff console (平台运营后台) lives under /staff; its pages come with the next issue. Until then a signed-in
staff member lands on this page, which says so."""

from fastapi import APIRouter

from guanhao import errors
from guanhao.console import pages
from guanhao.console.session import CurrentVisit
from guanhao.i18n import _l

router = APIRouter(prefix="/staff", route_class=pages.ConsoleRoute, include_in_schema=False)
STAFF_ONLY = _l("This page is for platform staff")
NAV = [("staff-home", "/staff", _l("Staff console"))]


def require_staff(current) -> None:
    if current.viewer is None:
        raise errors.Unauthenticated(_l("Sign in first"))
    if current.viewer.role != "staff":
        raise errors.NotFound(STAFF_ONLY)


@router.get("")
def staff_home(current: CurrentVisit):
    require_staff(current)
    return pages.render(
        current, "staff/home.html", nav="staff-home", nav_items=[(k, h, t.render(current.lang)) for k, h, t in NAV]
    )
