"""The ASGI application: routers, problem+json errors, idempotency, logs and metrics."""

from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from guanhao import __version__, console, docs, health_api, jobs_api, logs, metrics_api, problems, reader
from guanhao.audit import api as audit_api
from guanhao.auth import api as auth_api
from guanhao.bodies import BodyMiddleware
from guanhao.events import api as events_api
from guanhao.idempotency import IdempotencyMiddleware
from guanhao.logs import AccessLogMiddleware
from guanhao.operators import api as operators_api
from guanhao.posting import api as posting_api
from guanhao.process import settle
from guanhao.sandbox import api as sandbox_api
from guanhao.settings import get_settings
from guanhao.subjects import api as subjects_api
from guanhao.upgrades import api as upgrades_api
from guanhao.upgrades import waves_api
from guanhao.webhooks import api as webhooks_api
from guanhao.worker.runner import Worker

API = "/api/v1"
# The one route whose body is read as a stream (NDJSON), with its own size limit.
IMPORT_PATH = f"{API}/import"
log = structlog.get_logger("guanhao.app")


@asynccontextmanager
async def _lifespan(app: FastAPI):
    await reader.open_pool()
    # A worker inside the app (GUANHAO_WORKER=1, or the older GUANHAO_DELIVER_WEBHOOKS=1): for an app served by
    # something other than `guanhao serve`, which runs its own embedded worker process beside the server.
    worker = None
    settings = get_settings()
    if settings.worker or settings.deliver_webhooks:
        duties = [d for d in settings.worker_duties.split(",") if d] or None
        worker = Worker(duties=duties).start()
    settle()
    try:
        yield
    finally:
        await reader.close_pool()
        if worker is not None:
            worker.stop(timeout=15)


class _App(FastAPI):
    def openapi(self) -> dict:
        return _openapi(self)


def create_app() -> FastAPI:
    settings = get_settings()
    # Here, not only in the CLI: each `serve --workers N` process is spawned afresh and builds its own app.
    logs.configure(settings.log_level)
    app = _App(
        lifespan=_lifespan,
        title="guanhao — shop official account upgrade (店铺官方账号升级)",
        version=__version__,
        openapi_url=f"{API}/openapi.json",
        docs_url=None,
        redoc_url=None,
        # No OpenTelemetry here (metrics are Prometheus, logs structlog): FastAPI's native bridge would ask
        # for its providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    problems.install(app)
    docs.install(app, docs_url=f"{API}/docs", openapi_url=f"{API}/openapi.json")

    for router in (
        subjects_api.router,
        upgrades_api.router,
        upgrades_api.holder_router,
        upgrades_api.staff_router,
        audit_api.router,
        events_api.router,
        auth_api.router,
        jobs_api.router,
        operators_api.router,
        posting_api.router,
        waves_api.router,
        webhooks_api.router,
    ):
        app.include_router(router, prefix=API)
    if settings.sandbox:
        app.include_router(sandbox_api.router, prefix=API)

    console.install(app, api_prefix=API)
    app.include_router(health_api.router)
    app.include_router(metrics_api.router)
    # Outermost last: access log → metrics → the official-account read's lane (a GET without body) → last resort
    # → body limits and strict JSON → Idempotency-Key → the
    # app (authentication is in the routes, so a body is sized and parsed before any token is looked at).
    streamed = {IMPORT_PATH: settings.max_import_bytes}
    app.add_middleware(IdempotencyMiddleware, render_error=problems.render_raw, streamed=frozenset(streamed))
    app.add_middleware(
        BodyMiddleware,
        limit=settings.max_body_bytes,
        streamed=streamed,
        json_prefix=f"{API}/",
        render_error=problems.render_raw,
    )
    app.add_middleware(problems.LastResort)
    app.add_middleware(upgrades_api.ReadLane)
    app.add_middleware(metrics_api.RequestMetrics)
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
                    if status in ("429", "503"):
                        resp["headers"] = {"Retry-After": _RETRY_AFTER}
            if method in ("post", "put", "patch", "delete"):
                # Every body is sized (and JSON parsed) before anything else, authentication included.
                responses.setdefault(
                    "400",
                    {
                        "description": "Malformed body (MALFORMED_BODY)",
                        "content": {"application/problem+json": {"schema": problem_ref}},
                    },
                )
                responses.setdefault(
                    "413",
                    {
                        "description": "Body past the size limit (PAYLOAD_TOO_LARGE)",
                        "content": {"application/problem+json": {"schema": problem_ref}},
                    },
                )
                op.setdefault("parameters", []).append(
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        "description": "same key + same request replays the first response",
                    }
                )
            # Any request needs the database (API.md): busy past its budget or unreachable → 503.
            unavailable = responses.setdefault(
                "503", {"description": "Database busy or unreachable (SERVICE_UNAVAILABLE)"}
            )
            unavailable["content"] = {"application/problem+json": {"schema": problem_ref}}
            unavailable["headers"] = {"Retry-After": _RETRY_AFTER}
            if not path.startswith(f"{API}/confirmations") and path != f"{API}/health":
                op["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema


_RETRY_AFTER = {"description": "seconds to wait before trying again", "required": True, "schema": {"type": "integer"}}

_DESCRIPTION = """Shop official account upgrade (店铺官方账号升级): eligibility, consent, review, account-type quotas,
operators, audit and events. Errors are RFC 9457 problem+json with a stable `code`.
Mutating requests accept `Idempotency-Key`."""
