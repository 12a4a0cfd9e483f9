"""The consoles: a second front end beside the JSON API, on the same service functions.

`merchant` (商家后台: 店铺官方账号), `holder` (the account holder's confirmation page), `staff` (平台运营后台),
and what they share: `session` (sign-in, CSRF, language), `pages` (layout, rendering, errors as pages),
`labels` (words for stored values), `login` (sign in and out). Templates per audience with one `macros/`
folder of Semi Design components; `static/` holds the vendored Semi CSS and htmx.
"""

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from guanhao import errors
from guanhao.console import holder, login, merchant, pages, staff
from guanhao.i18n import _l

STATIC = Path(__file__).with_name("static")


def install(app: FastAPI, *, api_prefix: str) -> None:
    app.mount(pages.STATIC_PREFIX, StaticFiles(directory=STATIC), name="static")
    for router in (login.router, merchant.router, holder.router, staff.router):
        app.include_router(router)

    api_handler = cast(
        Callable[[Request, Exception], Awaitable[Response]], app.exception_handlers[StarletteHTTPException]
    )

    async def not_found(request: Request, exc: Exception):
        """Paths outside the API that no page serves get a page, not problem+json."""
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path.startswith(api_prefix) or exc.status_code != 404:
            return await api_handler(request, exc)
        return pages.error_page(request, errors.NotFound(_l("There is no such page")))

    app.add_exception_handler(StarletteHTTPException, not_found)
