"""Who sees what (SPEC R-62, API.md Conventions): merchants see only their own subject's objects (404 otherwise),
staff-only paths are 403 for merchants, and no or a bad token is 401 — on every route the app serves."""

import re
import secrets

import pytest
import sqlalchemy as sa
from fastapi import routing

from guanhao import http
from tests.dbdump import changed_tables, snapshot
from tests.factories import person, phone

API = "/api/v1"
PROBLEM_KEYS = {"type", "title", "status", "code", "detail"}

# A valid body for every merchant route that needs one (method, path template). A new merchant route with
# a body fails test_every_merchant_route_is_walked until it is added here.
BODIES = {
    ("POST", f"{API}/shops/{{shop_id}}/upgrade-applications"): {"agree_terms": True},
    ("POST", f"{API}/shops/{{shop_id}}/official-account/operator-changes"): person(),
    ("POST", f"{API}/shops/{{shop_id}}/official-account/operator-changes/{{change_id}}/verify"): {"code": "123456"},
    ("POST", f"{API}/shops/{{shop_id}}/official-account/phone-rebinds"): {"new_phone": phone()},
    ("POST", f"{API}/shops/{{shop_id}}/official-account/phone-rebinds/{{rebind_id}}/verify"): {"code": "123456"},
    ("POST", f"{API}/shops/{{shop_id}}/official-account/cancel-upgrade"): {},
}

# Objects a merchant route may name in its path; each is the victim subject's own.
PATH_PARAMS = {"shop_id", "subject_id", "application_id", "account_id", "change_id", "rebind_id"}

# Admin-only paths outside /admin (API.md: platform sync, its read-back, posting): (method, path template).
PLATFORM_PATHS = {
    ("POST", f"{API}/import"),
    ("GET", f"{API}/subjects"),
    ("GET", f"{API}/subjects/{{subject_id}}"),
    ("GET", f"{API}/shops"),
    ("GET", f"{API}/shops/{{shop_id}}"),
    ("GET", f"{API}/accounts"),
    ("GET", f"{API}/accounts/{{account_id}}"),
    ("GET", f"{API}/accounts/{{account_id}}/posting-quota"),
    ("POST", f"{API}/accounts/{{account_id}}/posts"),
}


def _depends_on(dependant, target) -> bool:
    return any(d.call is target or _depends_on(d, target) for d in dependant.dependencies)


def api_routes(app) -> list[tuple[str, str, object]]:
    """(method, full path template, APIRoute) for every JSON route under /api/v1."""
    out = []
    contexts = routing.iter_route_contexts(app.routes) if hasattr(routing, "iter_route_contexts") else app.routes
    for rc in contexts:
        route = getattr(rc, "original_route", rc)
        if not isinstance(route, routing.APIRoute):
            continue
        path = rc.path
        if not path.startswith(API + "/"):
            continue
        for method in sorted(rc.methods - {"HEAD", "OPTIONS"}):
            out.append((method, path, route))
    assert len(out) > 10, "the route walk found almost nothing: has route enumeration changed?"
    return out


def classify(app):
    admin, merchant, anonymous = [], [], []
    for method, path, route in api_routes(app):
        if _depends_on(route.dependant, http.admin):
            admin.append((method, path, route))
        elif _depends_on(route.dependant, http.authenticated) or _depends_on(route.dependant, http.bearer):
            merchant.append((method, path, route))
        else:
            anonymous.append((method, path, route))
    return admin, merchant, anonymous


def _needs_body(route) -> bool:
    return any(p.field_info.is_required() for p in route.dependant.body_params) or bool(
        ((route.openapi_extra or {}).get("requestBody") or {}).get("required")
    )


def _params(path: str) -> list[str]:
    return re.findall(r"{(\w+)(?::\w+)?}", path)


def _fill(path: str, values: dict) -> str:
    return re.sub(r"{(\w+)(?::\w+)?}", lambda m: values[m.group(1)], path)


def _request(client, method, url, headers, body=None):
    kwargs = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    return client.request(method, url, **kwargs)


def test_routes_are_classified_as_the_api_says(app):
    admin, merchant, anonymous = classify(app)
    for method, path, _ in merchant:
        assert not path.startswith((f"{API}/admin", f"{API}/sandbox")), f"{method} {path} is open to merchants"
        # API.md: platform sync and posting are admin / platform systems only
        assert method != "PUT", f"{method} {path}: sync is admin-only"
        assert path != f"{API}/import"
    anonymous_paths = {p for _, p, _ in anonymous}
    assert all(p.startswith(f"{API}/confirmations/") or p == f"{API}/health" for p in anonymous_paths), anonymous_paths
    for method, path, _ in admin:
        if path.startswith((f"{API}/admin", f"{API}/sandbox")):
            continue
        assert method == "PUT" or (method, path) in PLATFORM_PATHS, (
            f"{method} {path} is admin-only but API.md lists it for merchants"
        )
    merchant_paths = {(m, p) for m, p, _ in merchant}
    # The merchant's own read-back (issue 8): its shops with their upgrade state, its applications.
    assert ("GET", f"{API}/subjects/{{subject_id}}/shops") in merchant_paths
    assert ("GET", f"{API}/subjects/{{subject_id}}/upgrade-applications") in merchant_paths


@pytest.fixture
def victim(api):
    """Another subject's objects: an upgraded shop with its account, a shop with an application in progress,
    and — when the routes exist — a pending operator change and phone rebind."""
    subject_id, shop_id, account_id = api.ready_shop()
    owner = api.merchant(subject_id)
    app = api.upgrade(shop_id)
    assert app["status"] == "succeeded"
    _, open_shop, _ = api.ready_shop(subject_id)
    open_app = api.submit(open_shop, owner).json()["application_id"]
    values = {
        "shop_id": shop_id,
        "subject_id": subject_id,
        "application_id": app["application_id"],
        "account_id": account_id,
        "open_shop_id": open_shop,
        "open_application_id": open_app,
    }
    r = api.client.post(f"{API}/shops/{shop_id}/official-account/operator-changes", json=person(), headers=owner)
    if r.status_code != 404 or r.json().get("detail") != "no such resource":
        assert r.status_code == 201, r.text
        values["change_id"] = r.json()["change_id"]
    r = api.client.post(
        f"{API}/shops/{shop_id}/official-account/phone-rebinds", json={"new_phone": phone()}, headers=owner
    )
    if r.status_code != 404 or r.json().get("detail") != "no such resource":
        assert r.status_code == 201, r.text
        values["rebind_id"] = r.json()["rebind_id"]
    return {"values": values, "owner": owner, "secrets": ["杭州示例科技有限公司", "示例旗舰店", "示例官方号"]}


def test_r62_every_merchant_route_is_walked(app):
    _, merchant, _ = classify(app)
    uncovered = []
    for method, path, route in merchant:
        unknown = set(_params(path)) - PATH_PARAMS
        if unknown:
            uncovered.append(f"{method} {path}: path parameter(s) {unknown} not known to the walk")
        if _needs_body(route) and (method, path) not in BODIES:
            uncovered.append(f"{method} {path}: no body in BODIES")
    assert not uncovered, "new merchant routes the R-62 walk does not cover:\n" + "\n".join(uncovered)


def test_r62_a_merchant_of_another_subject_gets_404_on_every_merchant_route(api, app, victim, engine):
    _, merchant_routes, _ = classify(app)
    stranger = api.merchant(api.ready_shop()[0])
    values = victim["values"]
    before = snapshot(engine)
    walked = 0
    for method, path, _ in merchant_routes:
        if any(p not in values for p in _params(path)):
            pytest.fail(f"{method} {path}: no victim object for {set(_params(path)) - set(values)}")
        for variant in ({}, {"shop_id": values["open_shop_id"], "application_id": values["open_application_id"]}):
            url = _fill(path, values | variant)
            r = _request(api.client, method, url, stranger, BODIES.get((method, path)))
            assert r.status_code == 404, f"{method} {url}: {r.status_code} {r.text}"
            assert r.headers["content-type"].startswith("application/problem+json")
            body = r.json()
            assert body["code"] == "NOT_FOUND"
            assert set(body) <= PROBLEM_KEYS, f"{method} {url} says more than not found: {body}"
            for secret in victim["secrets"]:
                assert secret not in r.text
            walked += 1
    assert walked >= 2 * 7
    assert changed_tables(before, snapshot(engine)) == []


def test_r62_the_owner_reaches_the_same_read_routes(api, app, victim):
    _, merchant_routes, _ = classify(app)
    values = victim["values"]
    for method, path, _ in merchant_routes:
        if method != "GET":
            continue
        r = api.client.get(_fill(path, values), headers=victim["owner"])
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"


def test_r62_no_token_is_401_on_every_authenticated_route(client, app):
    admin, merchant, _ = classify(app)
    for method, path, _ in admin + merchant:
        url = _fill(path, dict.fromkeys(_params(path), "x-1"))
        for headers in (
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer gh_mch_" + secrets.token_urlsafe(32)},
            {"Authorization": "bearer gh_mch_" + secrets.token_urlsafe(32), "Idempotency-Key": "k-401"},
        ):
            r = client.request(method, url, headers=headers)
            assert r.status_code == 401, f"{method} {url} {headers}: {r.status_code} {r.text}"
            assert r.json()["code"] == "UNAUTHENTICATED"
            assert r.headers["content-type"].startswith("application/problem+json")
            # RFC 9110 §11.6.1: a 401 names the scheme that would be accepted.
            assert r.headers.get("www-authenticate") == "Bearer", f"{method} {url} {headers}: {dict(r.headers)}"


def test_r62_a_merchant_key_on_every_staff_path_is_403(api, app):
    admin, _, _ = classify(app)
    subject_id = api.subject()
    merchant = api.merchant(subject_id)
    for method, path, _ in admin:
        url = _fill(path, dict.fromkeys(_params(path), "x-1"))
        r = api.client.request(method, url, headers=merchant)
        assert r.status_code == 403, f"{method} {url}: {r.status_code} {r.text}"
        assert r.json()["code"] == "FORBIDDEN"


def test_r62_a_merchant_cannot_read_another_subjects_confirmation_link(api):
    _, shop_id, _ = api.ready_shop()
    app_id = api.submit(shop_id).json()["application_id"]
    stranger = api.merchant(api.subject())
    r = api.client.get(f"{API}/upgrade-applications/{app_id}", headers=stranger)
    assert r.status_code == 404
    assert "confirmations/" not in r.text
    # the holder's capability is the token; a guessed one finds nothing
    r = api.client.get(f"{API}/confirmations/{secrets.token_urlsafe(32)}")
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND"


def test_api_keys_are_stored_hashed(api, engine):
    subject_id = api.subject()
    r = api.client.post(f"{API}/admin/api-keys", json={"role": "merchant", "subject_id": subject_id}, headers=api.admin)
    assert r.status_code == 201
    token = r.json()["token"]
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM api_keys")).all()
    assert rows
    assert token not in repr(rows)
    assert token[8:24] not in repr(rows)
    from guanhao.auth.service import token_hash

    assert token_hash(token) in repr(rows)


def test_revoked_and_unknown_tokens_are_401(api, engine):
    subject_id = api.subject()
    merchant = api.merchant(subject_id)
    url = f"{API}/subjects/{subject_id}/quotas"
    assert api.client.get(url, headers=merchant).status_code == 200
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE api_keys SET revoked_at = created_at"))
    r = api.client.get(url, headers=merchant)
    assert r.status_code == 401
    assert r.json()["code"] == "UNAUTHENTICATED"
    r = api.client.get(url, headers={"Authorization": merchant["Authorization"] + "x"})
    assert r.status_code == 401


def test_r62_a_merchant_key_is_bound_to_a_known_subject(api):
    r = api.client.post(f"{API}/admin/api-keys", json={"role": "merchant", "subject_id": "nobody"}, headers=api.admin)
    assert r.status_code == 422
    r = api.client.post(f"{API}/admin/api-keys", json={"role": "merchant"}, headers=api.admin)
    assert r.status_code == 422


def test_r62_another_subjects_object_looks_like_a_missing_one(api, victim):
    stranger = api.merchant(api.subject())
    values = victim["values"]
    for template in (
        "/shops/{}/official-account",
        "/shops/{}/eligibility",
        "/upgrade-applications/{}",
        "/subjects/{}/quotas",
    ):
        key = {
            "/shops/{}/official-account": "shop_id",
            "/shops/{}/eligibility": "shop_id",
            "/upgrade-applications/{}": "application_id",
            "/subjects/{}/quotas": "subject_id",
        }[template]
        theirs = api.client.get(API + template.format(values[key]), headers=stranger)
        missing = api.client.get(API + template.format("does-not-exist"), headers=stranger)
        assert theirs.status_code == missing.status_code == 404
        a, b = theirs.json(), missing.json()
        assert (a["type"], a["title"], a["code"]) == (b["type"], b["title"], b["code"])
