"""The API's docs page (Swagger UI) from files the project ships: it loads nothing from the internet."""

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request

SWAGGER_UI_VERSION = "5.35.0"
ASSETS = Path(__file__).with_name("static") / "swagger-ui"


def install(app: FastAPI, *, docs_url: str, openapi_url: str) -> None:
    assets = f"{docs_url}/assets"
    app.mount(assets, StaticFiles(directory=ASSETS), name="docs-assets")

    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            swagger_js_url=f"{assets}/swagger-ui-bundle-{SWAGGER_UI_VERSION}.js",
            swagger_css_url=f"{assets}/swagger-ui-{SWAGGER_UI_VERSION}.css",
            swagger_favicon_url=f"{assets}/favicon-32x32-{SWAGGER_UI_VERSION}.png",
            # No badge fetched from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    # A plain route, as FastAPI's own docs route is: a page, not an operation of the API.
    app.add_route(docs_url, docs, include_in_schema=False)
