"""Page layout: one Jinja environment per language (the message catalog through `jinja2.ext.i18n`), the
filters every page uses (times in Asia/Shanghai, catalog messages), full pages or the `<main>` partial
for htmx, post/redirect/get, and console errors as pages instead of problem+json."""

import datetime as dt
import json
import math
from collections.abc import Callable, Coroutine
from functools import cache
from pathlib import Path
from typing import Any

import structlog
from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from guanhao import clock, errors
from guanhao.console import labels
from guanhao.console.session import (
    CSRF_COOKIE,
    CSRF_FIELD,
    LANG_COOKIE,
    SESSION_COOKIE,
    Visit,
    cookie_options,
    request_language,
    visit,
)
from guanhao.i18n import Message, _l, translations
from guanhao.settings import get_settings

TEMPLATES = Path(__file__).with_name("templates")
log = structlog.get_logger("guanhao.console")
STATIC_PREFIX = "/static"
ASSETS = {
    "semi_css": "semi-2.90.1.min.css",
    "htmx_js": "htmx-2.0.11.min.js",
    "console_css": "console.css",
    "console_js": "console.js",
}


def china_time(value: dt.datetime | None) -> str:
    """`YYYY-MM-DD HH:mm:ss` in Asia/Shanghai, as Chinese consoles show times."""
    if value is None:
        return "—"
    return value.astimezone(clock.CHINA).strftime("%Y-%m-%d %H:%M:%S")


def china_date(value: dt.datetime | None) -> str:
    return "—" if value is None else value.astimezone(clock.CHINA).strftime("%Y-%m-%d")


def days_until(deadline: dt.datetime | None, now: dt.datetime) -> int:
    """Whole days left, counted up (「剩余 27 天」): Babel would round 27 days to a month."""
    if deadline is None:
        return 0
    return max(0, math.ceil((deadline - now).total_seconds() / 86400))


@cache
def environment(lang: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.filters["time"] = china_time
    env.filters["date"] = china_date
    env.filters["isotime"] = lambda value: china_time(dt.datetime.fromisoformat(value)) if value else "—"
    env.filters["t"] = lambda message: message.render(lang) if isinstance(message, Message) else message
    env.globals.update(
        lang=lang,
        html_lang="zh-CN" if lang == "zh-CN" else "en",
        labels=labels,
        label=lambda kind, value: labels.text(kind, value, lang),
        days_until=days_until,
        static=lambda name: f"{STATIC_PREFIX}/{ASSETS.get(name, name)}",
        csrf_field=CSRF_FIELD,
        tojson=lambda value: json.dumps(value, ensure_ascii=True),
    )
    return env


def render(current: Visit, name: str, *, status: int = 200, headers: dict | None = None, **context: Any) -> Response:
    """A page in the visitor's language. On an htmx request (boosted link, form) only `<main>` is sent,
    with the toasts and the navigation swapped out of band."""
    partial = current.is_htmx and not context.pop("full_page", False)
    template = environment(current.lang).get_template(name)
    html = template.render(
        visit=current,
        viewer=current.viewer,
        csrf=current.csrf,
        partial=partial,
        path=current.request.url.path,
        full_path=_full_path(current.request),
        sandbox=get_settings().sandbox,
        flashes=[_flash_text(f, current.lang) for f in current.take_flashes()],
        **context,
    )
    response = HTMLResponse(html, status_code=status, headers=headers)
    return finish(current, response)


def fragment(current: Visit, name: str, **context: Any) -> Response:
    """A piece of a page (polling): no layout, no toasts."""
    html = (
        environment(current.lang)
        .get_template(name)
        .render(visit=current, viewer=current.viewer, csrf=current.csrf, sandbox=get_settings().sandbox, **context)
    )
    return finish(current, HTMLResponse(html))


def finish(current: Visit, response: Response) -> Response:
    response.headers["Vary"] = "HX-Request, Cookie, Accept-Language"
    response.headers["Cache-Control"] = "no-store"
    if current.set_csrf_cookie:
        response.set_cookie(CSRF_COOKIE, current.csrf, **cookie_options())
    return response


def _full_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _flash_text(flash: dict, lang: str) -> dict:
    return {"kind": flash["kind"], "text": Message(flash["msgid"], tuple(flash["params"].items())).render(lang)}


def redirect(current: Visit, url: str) -> Response:
    """After a change (post/redirect/get): 303 to the page to show, or for htmx `HX-Redirect`."""
    if current.is_htmx:
        return finish(current, Response(status_code=200, headers={"HX-Redirect": url}))
    return finish(current, RedirectResponse(url, status_code=303))


def error_page(request: Request, exc: errors.DomainError) -> Response:
    """A refusal outside a form (not found, not allowed, too many tries) as a page in the visitor's language."""
    try:
        current = visit(request)
    except errors.DomainError:  # the database is unreachable: no viewer, still a page
        raise exc from None
    if isinstance(exc, errors.Unauthenticated) and current.viewer is None:
        return redirect(current, "/?next=" + _full_path(request))
    return render(
        current,
        "errors/error.html",
        status=exc.status,
        headers=exc.headers(),
        title=exc.title,
        detail=exc.detail,
        code=exc.code,
    )


class ConsoleRoute(APIRoute):
    """Routes of the consoles answer errors with pages (the JSON API keeps problem+json)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except errors.DomainError as exc:
                return error_page(request, exc)
            except Exception as exc:  # the page says so in the visitor's language; the log has the type
                log.error("console.unhandled", error_type=type(exc).__name__, path=self.path)
                return error_page(request, errors.DomainError(_l("Internal error; the change was rolled back")))

        return handle


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, **{k: v for k, v in cookie_options().items() if k != "httponly"})


def set_language_cookie(response: Response, lang: str) -> None:
    response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, **cookie_options())


__all__ = ["ConsoleRoute", "fragment", "redirect", "render", "request_language"]
