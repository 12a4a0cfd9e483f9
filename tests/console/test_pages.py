"""The consoles' HTTP behaviour under the browser journeys: htmx gets `<main>` only (with `Vary: HX-Request`),
a change answers with post/redirect/get (303, or HX-Redirect for htmx), errors are pages in the visitor's
language, and the JSON API keeps problem+json."""

import re

import pytest
from fastapi.testclient import TestClient

from tests.console.conftest import PASSWORD

HTMX = {"HX-Request": "true"}


@pytest.fixture
def browser_client(app):
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as c:
        yield c


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _login(api, client, subject_id: str) -> str:
    r = api.client.post(
        "/api/v1/admin/users",
        json={"username": "pages.user", "password": PASSWORD, "role": "merchant", "subject_id": subject_id},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/login", data={"csrf_token": _csrf(client.get("/").text), "username": "pages.user", "password": PASSWORD}
    )
    assert r.status_code == 303 and r.headers["location"] == "/shops", r.text
    return _csrf(client.get("/shops").text)


def test_htmx_gets_main_only_and_caches_know_it(api, browser_client):
    subject_id, shop_id, _ = api.ready_shop()
    _login(api, browser_client, subject_id)
    full = browser_client.get(f"/shops/{shop_id}")
    partial = browser_client.get(f"/shops/{shop_id}", headers=HTMX)
    assert full.status_code == partial.status_code == 200
    assert full.text.startswith("<!doctype html>")
    assert "<html" not in partial.text and '<main id="main"' in partial.text and "<title>" in partial.text
    assert 'id="side-nav"' in partial.text and 'hx-swap-oob="true"' in partial.text
    for r in (full, partial):
        assert "HX-Request" in r.headers["vary"]
        assert r.headers["cache-control"] == "no-store"


def test_a_change_redirects_and_htmx_is_told_where_to(api, browser_client):
    subject_id, shop_id, _ = api.ready_shop()
    _, other_shop, _ = api.ready_shop(subject_id)
    csrf = _login(api, browser_client, subject_id)
    merchant = api.merchant(subject_id)
    first = api.submit(shop_id, merchant).json()["application_id"]
    second = api.submit(other_shop, merchant).json()["application_id"]
    r = browser_client.post(f"/shops/{shop_id}/applications/{first}/withdraw", data={"csrf_token": csrf})
    assert (r.status_code, r.headers["location"]) == (303, f"/shops/{shop_id}")
    r = browser_client.post(
        f"/shops/{other_shop}/applications/{second}/withdraw", data={"csrf_token": csrf}, headers=HTMX
    )
    assert (r.status_code, r.headers["hx-redirect"]) == (200, f"/shops/{other_shop}")
    assert api.application(first)["status"] == api.application(second)["status"] == "withdrawn"
    # the flash is shown once, on the next page
    toast = re.compile(r'class="semi-toast semi-toast-success toast".*?申请已撤回', re.S)
    assert toast.search(browser_client.get(f"/shops/{other_shop}").text)
    assert not toast.search(browser_client.get(f"/shops/{other_shop}").text)


def test_errors_are_pages_for_the_consoles_and_problems_for_the_api(api, browser_client):
    r = browser_client.get("/no-such-page", headers={"Accept-Language": "en"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "There is no such page" in r.text
    r = browser_client.get("/api/v1/no-such-resource")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = browser_client.get("/shops")
    assert (r.status_code, r.headers["location"]) == (303, "/?next=/shops")


def test_the_holder_link_is_the_html_page_and_the_json_stays(api, browser_client):
    _, shop_id, _ = api.ready_shop()
    application_id = api.submit(shop_id).json()["application_id"]
    r = api.client.get(f"/api/v1/admin/upgrade-applications/{application_id}", headers=api.admin)
    url = r.json()["confirmation_url"]
    token = url.rsplit("/", 1)[1]
    assert url == f"http://testserver/confirm/{token}"
    page = browser_client.get(f"/confirm/{token}")
    assert page.status_code == 200 and "官方账号升级确认" in page.text
    assert browser_client.get(f"/api/v1/confirmations/{token}").json()["status"] == "submitted"
    # the page's answer is the service's: declining there shows in the JSON
    r = browser_client.post(f"/confirm/{token}/decline", data={"csrf_token": _csrf(page.text)})
    assert (r.status_code, r.headers["location"]) == (303, f"/confirm/{token}")
    assert browser_client.get(f"/api/v1/confirmations/{token}").json()["status"] == "rejected"
    # and without the form's token nothing is answered
    _, shop_id, _ = api.ready_shop()
    other = api.token(api.submit(shop_id).json()["application_id"])
    assert browser_client.post(f"/confirm/{other}/accept", data={"agree": "1"}).status_code == 403
    assert browser_client.get(f"/api/v1/confirmations/{other}").json()["status"] == "submitted"
