"""JSON logs: one line per event, in every process. structlog's events and the standard library's
records (uvicorn's own loggers included) go through one formatter; a traceback is a field of its
event's line, never lines of its own.

Personal data never reaches a log: values are masked before they are logged, request logs name the
route template (never the raw path, which may hold a capability token) and never the query string,
statement parameters stay out of database errors (guanhao.db), and a client's X-Request-ID is used
only when it looks like an opaque id.
"""

import datetime as dt
import json
import logging
import os
import re
import sys
import time
from typing import TextIO

import structlog
from fastapi.routing import iter_route_contexts
from structlog.tracebacks import ExceptionDictTransformer

REQUEST_ID_HEADER = "X-Request-ID"
# An opaque id: letters, digits and a little punctuation, 8–128 characters, holding nothing shaped like
# a mainland mobile or ID card number (such a value sent as a request id must not reach the logs).
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")
_PERSONAL_SHAPE = re.compile(r"(?<!\d)(1[3-9]\d{9}|\d{17}[\dXx])(?!\d)")
# uvicorn's access log writes the raw path and query: our own access log replaces it.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")


_handler: logging.StreamHandler | None = None  # the handler `configure` installed, for the access lines
_info_enabled = False


def _add_pid(_logger, _name, event: dict) -> dict:
    event.setdefault("pid", os.getpid())
    return event


class _Stderr:
    """The current sys.stderr at each write (test runners replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Sets up logging for this process; safe to call again (each uvicorn worker process does, from
    the app factory)."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    shared: list = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_pid,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Frames without their local variables: those may hold personal data.
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )
    handler = logging.StreamHandler(stream or _Stderr())
    handler.setFormatter(formatter)
    handler._guanhao = True  # type: ignore[attr-defined]
    global _handler, _info_enabled
    _handler, _info_enabled = handler, numeric <= logging.INFO
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_guanhao", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
        server_logger.setLevel(numeric)
    # httpx logs every URL it fetches at INFO (webhook deliveries): the delivery worker logs outcomes itself.
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.disabled = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )


def route_template(scope) -> str:
    """The full path template of the route that served the request ("/api/v1/shops/{shop_id}"), never
    the raw path; "(unmatched)" when no route did."""
    route = scope.get("route")
    if route is None:
        return "(unmatched)"
    app = scope.get("app")
    state = getattr(app, "state", None)
    templates = getattr(state, "route_templates", None) if state is not None else None
    if templates is None:
        templates = {id(rc.original_route): rc.path_format or rc.path for rc in iter_route_contexts(app.routes)}
        if state is not None:
            state.route_templates = templates
    return str(templates.get(id(route)) or getattr(route, "path", "(unmatched)"))


def request_id(incoming: str | None) -> str:
    """The client's X-Request-ID when it is a sane opaque id, else a new one."""
    if incoming and _SANE_REQUEST_ID.fullmatch(incoming) and not _PERSONAL_SHAPE.search(incoming):
        return incoming
    return os.urandom(16).hex()  # 128 random bits as 32 hex digits, like uuid4().hex at a third of the cost


class AccessLogMiddleware:
    """Gives every request an id — on every log line written while it runs, and in the response's
    X-Request-ID header — and writes one access line per request."""

    def __init__(self, app):
        self.app = app
        self.log = structlog.get_logger("guanhao.http")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        rid = request_id(incoming)
        tokens = structlog.contextvars.bind_contextvars(request_id=rid)

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [
                    *(h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"),
                    (b"x-request-id", rid.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            fields = {
                "method": scope["method"],
                "route": route_template(scope),
                "status": status["code"],
                "ms": round((time.perf_counter() - started) * 1000, 1),
            }
            if not _write_access_line(fields, rid):
                self.log.info("request", **fields)
            structlog.contextvars.reset_contextvars(**tokens)


# json.dumps(event, ensure_ascii=False), its encoder made once rather than per line.
_ACCESS_JSON = json.JSONEncoder(ensure_ascii=False)


def _write_access_line(fields: dict, rid: str) -> bool:
    """The access line, as structlog would render it (same fields, same order, same JSON), written straight to
    our handler's stream under its lock: the per-request line without structlog's processor chain and the
    logging module's records, which cost more than the fastest route itself. False when it cannot (another
    handler set-up, INFO filtered out, other context bound): the caller logs it the ordinary way."""
    handler = _handler
    if handler is None or not _info_enabled or structlog.contextvars.get_contextvars().keys() != {"request_id"}:
        return False
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    event = {
        **fields,
        "event": "request",
        "request_id": rid,
        "level": "info",
        "logger": "guanhao.http",
        "timestamp": now,
        "pid": os.getpid(),
    }
    line = _ACCESS_JSON.encode(event) + "\n"
    handler.acquire()
    try:
        handler.stream.write(line)
        handler.flush()
    finally:
        handler.release()
    return True
