"""The metrics' web side: `GET /metrics` (text format, behind the metrics token when one is set) and the
middleware that counts and times every HTTP request. The figures themselves live in `guanhao.metrics`."""

import hmac
import time

from fastapi import APIRouter, Request, Response

from guanhao import errors
from guanhao.i18n import _l
from guanhao.logs import route_template
from guanhao.metrics import LATENCY, REQUESTS, exposition
from guanhao.settings import get_settings

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# Each label set's counter and histogram, looked up once (`labels()` checks and joins its values on every call).
# Bounded: methods × route templates × statuses.
_children: dict[tuple[str, str, int], tuple] = {}


class RequestMetrics:
    """Counts and times every HTTP request by the route template that served it (never the raw path,
    which may hold ids or a capability token)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            labels = (method, route_template(scope), status["code"])
            children = _children.get(labels)
            if children is None:
                named = (method, labels[1], str(status["code"]))
                children = _children[labels] = (REQUESTS.labels(*named), LATENCY.labels(*named))
            children[0].inc()
            children[1].observe(time.perf_counter() - started)


router = APIRouter()


def _check_token(request: Request) -> None:
    expected = get_settings().metrics_token
    if not expected:
        return
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise errors.Unauthenticated(_l("The metrics need Authorization: Bearer <metrics token>"))


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    _check_token(request)
    body, content_type = exposition(request.headers.get("accept", ""))
    return Response(body, media_type=content_type)
