"""The ASGI application: routers, problem+json errors, idempotency, logs and metrics."""

import json
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import make_asgi_app
from starlette.exceptions import HTTPException as StarletteHTTPException

from guanhao import __version__, errors
from guanhao.http import allowed_methods, language
from guanhao.idempotency import IdempotencyMiddleware
from guanhao.logs import AccessLogMiddleware
from guanhao.settings import get_settings

API = "/api/v1"
log = structlog.get_logger("guanhao.app")


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def _problem_for(exc: errors.DomainError, lang: str) -> ProblemResponse:
    from guanhao.upgrades.schemas import render_reasons

    reasons = render_reasons(exc.reasons, lang) if exc.reasons else None
    body = errors.problem(exc.code, exc.status, lang, exc.detail, reasons=reasons, **exc.extra)
    return ProblemResponse(body, status_code=exc.status)


def _lang(request: Request) -> str:
    return language(request.headers.get("accept-language"))


async def _domain_error(request: Request, exc: errors.DomainError):
    return _problem_for(exc, _lang(request))


async def _validation_error(request: Request, exc: RequestValidationError):
    errs = list(exc.errors())
    lang = _lang(request)
    if any(e.get("type") in ("json_invalid", "json_type") for e in errs) or _body_not_object(errs):
        return _problem_for(_malformed(), lang)
    code = errors.validation_code(errs)
    fields = errors.field_errors(errs)
    detail = "; ".join(f"{f['field'] or '(body)'}: {f['message']}" for f in fields)
    return _problem_for(errors.BY_CODE[code](detail, errors=fields), lang)


def _malformed() -> errors.DomainError:
    return errors.MalformedBody("the request body must be a JSON object")


def _body_not_object(errs: list[dict]) -> bool:
    # A JSON value that is not an object where an object is expected ("[]", "3"), or no body at all where
    # one is required: malformed, not a field error.
    return any(
        e.get("type") in ("model_attributes_type", "missing") and tuple(e.get("loc", ())) == ("body",) for e in errs
    )


async def _http_error(request: Request, exc: StarletteHTTPException):
    lang = _lang(request)
    if exc.status_code == 404:
        return _problem_for(errors.NotFound("no such resource"), lang)
    if exc.status_code == 405:
        body = errors.problem("METHOD_NOT_ALLOWED", 405, lang, "method not allowed on this path")
        # RFC 9110: a 405 lists every method the path allows (Starlette names only the first route's).
        return ProblemResponse(
            body, status_code=405, headers={"Allow": ", ".join(sorted(allowed_methods(request.app, request.url.path)))}
        )
    body = errors.problem("HTTP_ERROR", exc.status_code, lang, str(exc.detail))
    return ProblemResponse(body, status_code=exc.status_code)


async def _unexpected(request: Request, exc: Exception):
    log.error("unhandled", error_type=type(exc).__name__, route=getattr(request.scope.get("route"), "path", None))
    return _problem_for(errors.DomainError("internal error; the change was rolled back"), _lang(request))


async def _render_raw(scope, receive, send, exc: errors.DomainError):
    """For middleware that refuses before routing."""
    from starlette.requests import Request as StarletteRequest

    response = _problem_for(exc, _lang(StarletteRequest(scope)))
    await response(scope, receive, send)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    worker = None
    if get_settings().deliver_webhooks:
        from guanhao.policy import get_policy
        from guanhao.webhooks import worker as webhooks

        worker = webhooks.start_thread(get_policy())
        log.info("webhooks.worker_started")
    yield
    if worker is not None:
        thread, stop = worker
        stop.set()
        thread.join(timeout=15)


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        lifespan=_lifespan,
        title="guanhao — shop official account upgrade (店铺官方账号升级)",
        version=__version__,
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
    )
    app.add_exception_handler(errors.DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

    from guanhao import jobs
    from guanhao.audit import api as audit_api
    from guanhao.auth import api as auth_api
    from guanhao.events import api as events_api
    from guanhao.operators import api as operators_api
    from guanhao.posting import api as posting_api
    from guanhao.subjects import api as subjects_api
    from guanhao.upgrades import api as upgrades_api
    from guanhao.upgrades import waves_api
    from guanhao.webhooks import api as webhooks_api

    for router in (
        subjects_api.router,
        upgrades_api.router,
        upgrades_api.holder_router,
        upgrades_api.staff_router,
        audit_api.router,
        events_api.router,
        auth_api.router,
        jobs.router,
        operators_api.router,
        posting_api.router,
        waves_api.router,
        webhooks_api.router,
    ):
        app.include_router(router, prefix=API)
    if settings.sandbox:
        from guanhao.sandbox import api as sandbox_api

        app.include_router(sandbox_api.router, prefix=API)

    @app.get(f"{API}/health", tags=["ops"])
    def health() -> dict:
        return {"status": "ok", "version": __version__, "sandbox": settings.sandbox}

    app.mount("/metrics", make_asgi_app())
    app.openapi = lambda: _openapi(app)
    app.add_middleware(IdempotencyMiddleware, render_error=_render_raw)
    app.add_middleware(AccessLogMiddleware)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, made honest about errors: every 4xx is problem+json with the Problem schema."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=_DESCRIPTION)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            # The bearer security scheme describes Authorization; a second, optional header parameter would not.
            params = [
                p
                for p in op.get("parameters", [])
                if not (p["in"] == "header" and p["name"].lower() == "authorization")
            ]
            if params:
                op["parameters"] = params
            else:
                op.pop("parameters", None)
            responses = op.setdefault("responses", {})
            for status, resp in list(responses.items()):
                if status.startswith(("4", "5")):
                    resp["content"] = {"application/problem+json": {"schema": problem_ref}}
                    if status == "422":
                        resp["description"] = "Invalid input (VALIDATION_ERROR, INVALID_ID_NUMBER, INVALID_PHONE, …)"
            if method in ("post", "put", "patch", "delete"):
                op.setdefault("parameters", []).append(
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        "description": "same key + same request replays the first response",
                    }
                )
                if op.get("requestBody"):
                    responses.setdefault(
                        "400",
                        {
                            "description": "Malformed body (MALFORMED_BODY)",
                            "content": {"application/problem+json": {"schema": problem_ref}},
                        },
                    )
            if not path.startswith(f"{API}/confirmations") and path != f"{API}/health":
                op["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema


_DESCRIPTION = """Shop official account upgrade (店铺官方账号升级): eligibility, consent, review, account-type quotas,
operators, audit and events. Errors are RFC 9457 problem+json with a stable `code`.
Mutating requests accept `Idempotency-Key`."""
