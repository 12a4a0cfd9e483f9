"""The docs page works offline (issue 8 item 13): /api/v1/docs loads its scripts, styles and icon from files the
project ships (swagger-ui-dist, version in the file name, its licence beside), never from a CDN."""

import re

from guanhao import docs


def test_the_docs_page_loads_only_files_the_service_serves(client):
    r = client.get("/api/v1/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "cdn." not in page
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(refs) == 3, refs
    kinds = {}
    for ref in refs:
        assert ref.startswith("/api/v1/docs/assets/"), ref
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        kind = asset.headers["content-type"].split(";")[0].replace("application/javascript", "text/javascript")
        kinds[kind] = asset.content
        assert asset.content == (docs.ASSETS / ref.rsplit("/", 1)[1]).read_bytes()
    assert set(kinds) == {"text/javascript", "text/css", "image/png"}
    assert b"SwaggerUIBundle" in kinds["text/javascript"]
    # The page asks the document it documents, and no validator badge from the internet.
    assert "url: '/api/v1/openapi.json'" in page
    assert '"validatorUrl": null' in page
    assert not re.search(r"https?://", page)


def test_the_shipped_files_carry_their_version_and_licence():
    names = {p.name for p in docs.ASSETS.iterdir()}
    v = docs.SWAGGER_UI_VERSION
    assert {f"swagger-ui-bundle-{v}.js", f"swagger-ui-{v}.css", f"favicon-32x32-{v}.png", "LICENSE", "NOTICE"} <= names
    assert "Apache License" in (docs.ASSETS / "LICENSE").read_text()


def test_the_docs_page_is_not_in_the_api_document(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert not any(p.startswith("/api/v1/docs") for p in paths)
