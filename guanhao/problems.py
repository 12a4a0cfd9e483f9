"""Errors as RFC 9457 problem+json (SPEC R-63): one renderer for every DomainError, in the reader's language."""

import json

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.routing import compile_path

from guanhao import db, errors
from guanhao.i18n import _l, language, render
from guanhao.logs import route_template
from guanhao.settings import get_settings

log = structlog.get_logger("guanhao.app")


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def body(exc: errors.DomainError, lang: str) -> dict:
    out = {
        "type": f"urn:guanhao:problem:{exc.code.lower().replace('_', '-')}",
        "title": exc.title.render(lang),
        "status": exc.status,
        "code": exc.code,
        "detail": exc.detail.render(lang),
    }
    if exc.reasons:
        out["reasons"] = [
            {"code": r.code, "message": render(r.message, lang), "fix": render(r.fix, lang)} for r in exc.reasons
        ]
    if exc.retry_after is not None:
        out["retry_after"] = exc.retry_after
    out.update({k: v for k, v in exc.extra.items() if v is not None})
    return out


def response(exc: errors.DomainError, lang: str) -> ProblemResponse:
    return ProblemResponse(body(exc, lang), status_code=exc.status, headers=exc.headers())


def lang_of(conn: HTTPConnection) -> str:
    return language(conn.headers.get("accept-language"))


async def render_raw(scope, receive, send, exc: errors.DomainError) -> None:
    """For middleware that refuses before routing."""
    await response(exc, lang_of(HTTPConnection(scope)))(scope, receive, send)


async def _domain_error(request: Request, exc: Exception):
    assert isinstance(exc, errors.DomainError)
    return response(exc, lang_of(request))


MALFORMED = _l("The request body must be a JSON object")


async def _validation_error(request: Request, exc: Exception):
    assert isinstance(exc, RequestValidationError)
    errs = list(exc.errors())
    if any(e.get("type") in ("json_invalid", "json_type") for e in errs) or _body_not_object(errs):
        return response(errors.MalformedBody(MALFORMED), lang_of(request))
    return response(errors.invalid_payload(errs), lang_of(request))


def _body_not_object(errs: list[dict]) -> bool:
    # A JSON value that is not an object where an object is expected ("[]", "3"), or no body at all where
    # one is required: malformed, not a field error.
    return any(
        e.get("type") in ("model_attributes_type", "missing") and tuple(e.get("loc", ())) == ("body",) for e in errs
    )


async def _http_error(request: Request, exc: Exception):
    assert isinstance(exc, StarletteHTTPException)
    lang = lang_of(request)
    if exc.status_code == 405:
        refused = response(errors.MethodNotAllowed(_l("This method is not allowed on this path")), lang)
        # RFC 9110: a 405 lists every method the path allows (Starlette names only the first route's).
        refused.headers["Allow"] = ", ".join(sorted(allowed_methods(request.app, request.url.path)))
        return refused
    if exc.status_code == 404:
        return response(errors.NotFound(_l("No such resource")), lang)
    if exc.status_code == 400:  # Starlette could not parse the body
        return response(errors.MalformedBody(MALFORMED), lang)
    cls = next((c for c in errors.BY_CODE.values() if c.status == exc.status_code), errors.DomainError)
    return response(cls(), lang)


async def _unexpected(request: Request, exc: Exception):
    return response(refusal(request.scope, exc), lang_of(request))


def refusal(scope, exc: BaseException) -> errors.DomainError:
    """The answer to an exception no route turned into a DomainError: 503 with Retry-After when the
    database is busy or unreachable (wherever the unit of work ran: route, dependency, middleware),
    else 500, logged once with its traceback."""
    if isinstance(exc, errors.DomainError):
        return exc
    route = route_template(scope)
    if db.unavailable(exc):
        sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
        log.warning("database.unavailable", error_type=type(exc).__name__, sqlstate=sqlstate, route=route)
        return errors.ServiceUnavailable(
            _l("The database is busy or cannot be reached; try again shortly"),
            retry_after=get_settings().retry_after,
        )
    log.error("unhandled", error_type=type(exc).__name__, route=route, exc_info=exc)
    return errors.DomainError(_l("Internal error; the change was rolled back"))


class LastResort:
    """Renders what escapes the middleware inside it (the Idempotency-Key claim runs a unit of work
    before any route) as problem+json, so that no request ends in a bare 500 or a dropped connection."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_wrapper(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if started:
                raise
            await render_raw(scope, receive, send, refusal(scope, exc))


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Database errors are answered here, like any refusal (503 when busy or unreachable), rather than by
    # the server-error fallback, which re-raises them after answering.
    app.add_exception_handler(DBAPIError, _unexpected)
    app.add_exception_handler(PoolTimeout, _unexpected)
    app.add_exception_handler(Exception, _unexpected)


def allowed_methods(app, path: str) -> set[str]:
    """Every method some route serves on this path (the `Allow` of a 405)."""
    table = getattr(app.state, "route_methods", None)
    if table is None:
        table = [
            (compile_path(rc.path)[0], frozenset(rc.methods))
            for rc in iter_route_contexts(app.routes)
            if rc.path and rc.methods
        ]
        app.state.route_methods = table
    return {m for regex, methods in table if regex.match(path) for m in methods}
