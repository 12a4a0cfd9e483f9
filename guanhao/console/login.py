"""Signing in and out of the consoles (both roles), and the language switch. A visitor who is not signed in
lands on the login page at `/`; a merchant lands on the merchant console, staff on the staff console."""

from fastapi import APIRouter, Query
from fastapi.responses import RedirectResponse

from guanhao import clock, errors
from guanhao.auth import users
from guanhao.console import pages
from guanhao.console.session import (
    HOME,
    SESSION_COOKIE,
    CurrentVisit,
    Form,
    cookie_options,
    safe_next,
)
from guanhao.i18n import LANGUAGES, _l

router = APIRouter(route_class=pages.ConsoleRoute, include_in_schema=False)
STAFF_SIGN_IN_ONLY = _l("This sign-in is for platform staff; merchants sign in to the merchant console")


def for_staff_console(path: str) -> bool:
    return path == "/staff" or path.startswith(("/staff/", "/staff?"))


@router.get("/")
def home(current: CurrentVisit, next: str | None = Query(default=None, max_length=500)):
    if current.viewer is not None:
        return pages.redirect(current, safe_next(next, current.viewer.home))
    return pages.render(current, "auth/login.html", next=safe_next(next, ""), username="", error=None, full_page=True)


@router.post("/login")
def login(current: CurrentVisit, form: Form):
    username = str(form.get("username", ""))[:64]
    password = str(form.get("password", ""))[:256]
    client = current.request.client.host if current.request.client else "unknown"
    now = clock.real_now()
    with current.unit() as (session, _service_now):
        result = users.login(
            session, username=username, password=password, client=client, policy=current.policy, now=now
        )
        token = None
        wanted = safe_next(str(form.get("next", "")), "")
        if result.user is not None and result.user.role != "staff" and for_staff_console(wanted):
            # The staff console signs in staff only: a merchant's right password starts no session there.
            result = users.Login(user=None, error=errors.Forbidden(STAFF_SIGN_IN_ONLY))
        if result.user is not None:
            home_path = HOME[result.user.role]
            _, token = users.start_session(session, result.user, policy=current.policy, now=now)
    if result.error is not None or token is None:
        error = result.error or errors.Unauthenticated(users.WRONG_LOGIN)
        return pages.render(
            current,
            "auth/login.html",
            status=error.status,
            headers={k: v for k, v in error.headers().items() if k == "Retry-After"},
            next=safe_next(str(form.get("next", "")), ""),
            username=username,
            error=error.detail,
            full_page=True,
        )
    response = RedirectResponse(safe_next(str(form.get("next", "")), home_path), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=current.policy.login.session_hours * 3600, **cookie_options())
    return pages.finish(current, response)


@router.post("/logout")
def logout(current: CurrentVisit, form: Form):
    token = current.request.cookies.get(SESSION_COOKIE)
    if token:
        with current.unit() as (session, _now):
            users.end_session(session, token)
    response = RedirectResponse("/", status_code=303)
    pages.clear_session_cookie(response)
    return pages.finish(current, response)


@router.get("/lang/{lang}")
def switch_language(lang: str, current: CurrentVisit, next: str | None = Query(default=None, max_length=500)):
    response = RedirectResponse(safe_next(next, "/"), status_code=303)
    if lang in LANGUAGES:
        pages.set_language_cookie(response, lang)
    return response
