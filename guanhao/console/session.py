"""Who is looking at a console page, in which language, and whether a form may change anything.

Sessions and login limits run on real time, not the sandbox's settable service clock: moving a test
clock a month ahead must not sign everyone out. Sessions are our own, not Starlette's signed cookie: the `gh_session` cookie holds a random token whose
keyed hash names a row in `console_sessions` (guanhao.auth.users), so logging out, disabling a user or
the session's end stops it on the server. The cookie is HttpOnly, SameSite=Lax, and Secure outside
sandbox mode.

CSRF: every form carries a token in the `csrf_token` field (htmx sends it as `X-CSRF-Token`, from the
`hx-headers` on <body>), compared in constant time with the session's token — or, before sign-in (the
login form, the holder's page), with the `gh_csrf` cookie (double submit). An `Origin` (or, without one,
`Referer`) naming another site is refused as well.
"""

import datetime as dt
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from guanhao import clock, errors
from guanhao.auth import users
from guanhao.db import Session, session_scope
from guanhao.i18n import LANGUAGES, _l, language
from guanhao.policy import Policy, get_policy
from guanhao.settings import get_settings

SESSION_COOKIE = "gh_session"
CSRF_COOKIE = "gh_csrf"
LANG_COOKIE = "gh_lang"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# Where each role lands after signing in; the staff console lives under /staff.
HOME = {"merchant": "/shops", "staff": "/staff"}


@dataclass(frozen=True)
class Viewer:
    """A signed-in console user."""

    user_id: str
    username: str
    role: str
    subject_id: str | None
    session_hash: str
    notices_seen_seq: int

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.user_id}"

    @property
    def home(self) -> str:
        return HOME[self.role]


@dataclass
class Visit:
    """One request to a console page: the language, the viewer (if signed in), the CSRF token to put in forms."""

    request: Request
    lang: str
    viewer: Viewer | None
    csrf: str
    policy: Policy
    set_csrf_cookie: bool = False
    has_flash: bool = False

    @contextmanager
    def unit(self) -> Iterator[tuple[Session, dt.datetime]]:
        """One transaction; `now` read once from the service clock."""
        with session_scope() as session:
            yield session, clock.now(session)

    @property
    def is_htmx(self) -> bool:
        return self.request.headers.get("hx-request") == "true"

    def take_flashes(self) -> list[dict]:
        """The messages waiting for this browser, shown once (the page layout calls this)."""
        if self.viewer is None or not self.has_flash:
            return []
        with session_scope() as session:
            return users.pop_flash(session, self.viewer.session_hash)

    def flash(self, kind: str, message) -> None:
        """A message for the next page this browser shows (after the redirect)."""
        if self.viewer is None:
            return
        with session_scope() as session:
            users.push_flash(session, self.viewer.session_hash, kind, message.msgid, dict(message.params))


def request_language(request: Request) -> str:
    """The switch (cookie) first, then Accept-Language; Chinese by default."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return language(request.headers.get("accept-language"))


def visit(request: Request) -> Visit:
    lang = request_language(request)
    policy = get_policy()
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with session_scope() as session:
            found = users.session_for(session, token, now=clock.real_now())
            if found is not None:
                row, user = found
                viewer = Viewer(
                    user_id=user.id,
                    username=user.username,
                    role=user.role,
                    subject_id=user.subject_id,
                    session_hash=row.token_hash,
                    notices_seen_seq=user.notices_seen_seq,
                )
                return Visit(request, lang, viewer, row.csrf_token, policy, has_flash=bool(row.flash))
    anonymous = request.cookies.get(CSRF_COOKIE)
    if anonymous and 20 <= len(anonymous) <= 100:
        return Visit(request, lang, None, anonymous, policy)
    return Visit(request, lang, None, secrets.token_urlsafe(32), policy, set_csrf_cookie=True)


CSRF_REFUSED = _l("This form has expired or did not come from this site; reload the page and try again")


def check_origin(request: Request) -> bool:
    """A request whose Origin (or Referer) names another site did not come from our pages."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source is None
    parts = urlsplit(source)
    own = {f"{request.url.scheme}://{request.url.netloc}", get_settings().public_url}
    return f"{parts.scheme}://{parts.netloc}" in own


async def checked_form(request: Request, current: Annotated[Visit, Depends(visit)]) -> dict:
    """The posted form, once its CSRF token and origin are checked (403 otherwise)."""
    form = await request.form()
    sent = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD) or ""
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), current.csrf.encode()):
        raise errors.Forbidden(CSRF_REFUSED)
    if not check_origin(request):
        raise errors.Forbidden(CSRF_REFUSED)
    values: dict = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            values.setdefault(key, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in values.items()}


def form_list(form: dict, key: str) -> list[str]:
    value = form.get(key, [])
    return value if isinstance(value, list) else [value]


CurrentVisit = Annotated[Visit, Depends(visit)]
Form = Annotated[dict, Depends(checked_form)]


def cookie_options() -> dict:
    return {"httponly": True, "samesite": "lax", "secure": not get_settings().sandbox, "path": "/"}


def safe_next(value: str | None, default: str) -> str:
    """A local path to go back to; anything else (another site, a scheme) is replaced by `default`."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value
