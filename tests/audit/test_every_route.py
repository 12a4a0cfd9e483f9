"""R-60: every change is in the trail. The mutating routes are read from the application itself (every POST, PUT,
PATCH and DELETE under /api/v1, and the consoles' form posts): each one is called with valid input and must add
at least one audit row. A new route that is neither driven here nor exempted (with its reason) fails the first
test, so it cannot slip in without its audit row."""

import datetime as dt
import re

import pytest
import sqlalchemy as sa
from fastapi import routing

from tests import make
from tests.factories import person

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}

# Routes that change nothing the trail records, each with its reason. Keep this list short.
EXEMPT = {
    # Signing in or out changes only the caller's console session (a random token), never data the trail covers;
    # failed attempts are counted by the login throttle.
    ("POST", "/login"): "console session only",
    ("POST", "/logout"): "console session only",
    # The wizard's last step only renders the confirmation page of the form posted so far; the submit that follows
    # it is audited (POST /shops/{shop_id}/upgrade).
    ("POST", "/shops/{shop_id}/upgrade/confirm"): "renders a page, changes nothing",
    # A post counted against the daily quota is metered usage kept in its own counter, not a change of any
    # object's state; up to 100 a day per account would swamp the subject's chain.
    ("POST", "/api/v1/accounts/{account_id}/posts"): "usage counter (R-23)",
}


def mutating_routes(app) -> set[tuple[str, str]]:
    """(method, full path template) of every route of the app that may change something: the JSON API's and the
    consoles' (FastAPI keeps included routers as such; `iter_route_contexts` flattens them)."""
    found = set()
    contexts = routing.iter_route_contexts(app.routes) if hasattr(routing, "iter_route_contexts") else app.routes
    for rc in contexts:
        if not isinstance(getattr(rc, "original_route", rc), routing.APIRoute):
            continue
        for method in (rc.methods or set()) & MUTATING:
            found.add((method, rc.path))
    assert len(found) > 20, "the route walk found almost nothing: has route enumeration changed?"
    return found


# ---------------------------------------------------------------- the world each call runs in


class World:
    def __init__(self, api):
        self.api = api
        self.client = api.client
        self.admin = api.admin
        self.subject_id, self.shop_id, self.account_id = api.ready_shop()
        self.merchant = api.merchant(self.subject_id)

    def upgraded_shop(self) -> tuple[str, str]:
        subject_id, shop_id, account_id = self.api.ready_shop(self.subject_id)
        assert self.api.upgrade(shop_id)["status"] == "succeeded"
        return shop_id, account_id

    def submitted(self) -> str:
        r = self.api.submit(self.shop_id, self.merchant)
        assert r.status_code == 201, r.text
        return r.json()["application_id"]

    def sms_code(self, phone: str) -> str:
        r = self.client.get("/api/v1/sandbox/sms", params={"phone": phone}, headers=self.admin)
        return r.json()["items"][0]["code"]

    # -- the consoles
    def console_merchant(self) -> dict:
        """Signs a merchant user of the subject in; returns the headers of a form post (CSRF token)."""
        r = self.client.post(
            "/api/v1/admin/users",
            json={
                "username": "merchant.one",
                "password": "s3cret-pass",
                "role": "merchant",
                "subject_id": self.subject_id,
            },
            headers=self.admin,
        )
        assert r.status_code == 201, r.text
        self.client.get("/")
        csrf = self.client.cookies.get("gh_csrf")
        r = self.client.post(
            "/login", data={"username": "merchant.one", "password": "s3cret-pass", "csrf_token": csrf},
            follow_redirects=False,
        )  # fmt: skip
        assert r.status_code == 303, r.text
        page = self.client.get("/shops").text
        return {"X-CSRF-Token": re.search(r"X-CSRF-Token&#34;: &#34;([^&]+)&#34;", page).group(1)}

    def form(self, path: str, data: dict | None = None):
        return self.client.post(path, data=data or {}, headers=self.console_merchant(), follow_redirects=False)

    def console_staff(self) -> dict:
        """Signs a staff user in; returns the headers of a form post (CSRF token)."""
        r = self.client.post(
            "/api/v1/admin/users",
            json={"username": "staff.console", "password": "s3cret-pass", "role": "staff"},
            headers=self.admin,
        )
        assert r.status_code == 201, r.text
        self.client.get("/")
        csrf = self.client.cookies.get("gh_csrf")
        r = self.client.post(
            "/login",
            data={"username": "staff.console", "password": "s3cret-pass", "csrf_token": csrf},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        page = self.client.get("/staff").text
        return {"X-CSRF-Token": re.search(r"X-CSRF-Token&#34;: &#34;([^&]+)&#34;", page).group(1)}

    def staff_form(self, path: str, data: dict | None = None):
        return self.client.post(path, data=data or {}, headers=self.console_staff(), follow_redirects=False)


def _ok(r, *statuses):
    assert r.status_code in (statuses or (200, 201, 202, 204, 303)), (r.status_code, r.text)
    return r


def _webhook(w: World) -> str:
    r = w.client.post("/api/v1/admin/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=w.admin)
    return _ok(r).json()["endpoint_id"]


def _dead_delivery(w: World) -> int:
    from guanhao.db import session_scope
    from guanhao.webhooks import service as webhooks
    from guanhao.webhooks.models import WebhookDelivery

    _webhook(w)
    w.submitted()  # events for the endpoint
    with session_scope() as session:
        webhooks.fan_out(session, now=dt.datetime.now(dt.UTC))
        delivery = session.scalars(sa.select(WebhookDelivery)).first()
        delivery.status = "dead"
        return delivery.seq


def _operator_change(w: World, shop_id: str) -> tuple[str, str]:
    new = person()
    r = w.client.post(f"/api/v1/shops/{shop_id}/official-account/operator-changes", json=new, headers=w.merchant)
    return _ok(r).json()["change_id"], new["phone"]


def _phone_rebind(w: World, shop_id: str) -> tuple[str, str]:
    phone = "13700137000"
    r = w.client.post(
        f"/api/v1/shops/{shop_id}/official-account/phone-rebinds", json={"new_phone": phone}, headers=w.merchant
    )
    return _ok(r).json()["rebind_id"], phone


def _auto_upgraded(w: World) -> str:
    from guanhao.db import session_scope

    _, shop_id, _ = w.api.ready_shop(w.subject_id)
    with session_scope() as session:
        now = make.clock.now(session)
    make.auto_upgraded([w.shop_id, shop_id], now=now)
    return shop_id


def _reviewing(w: World) -> str:
    _, shop_id, _ = w.api.ready_shop(w.subject_id, account_fields={"followers": 2_000_000})
    app = w.api.upgrade(shop_id)
    assert app["status"] == "reviewing"
    return app["application_id"]


def _token(w: World) -> str:
    return w.api.token(w.submitted())


API = "/api/v1"
ADMIN = f"{API}/admin"
OFFICIAL = f"{API}/shops/{{shop_id}}/official-account"

CALLS = {
    ("PUT", f"{API}/subjects/{{subject_id}}"): lambda w: w.client.put(
        f"{API}/subjects/{w.subject_id}",
        json={"name": "新名", "subject_type": "enterprise", "cross_border": False, "license_valid_until": None},
        headers=w.admin,
    ),
    ("PUT", f"{API}/shops/{{shop_id}}"): lambda w: w.client.put(
        f"{API}/shops/{w.shop_id}",
        json={
            "subject_id": w.subject_id,
            "name": "新店名",
            "shop_type": "flagship",
            "status": "active",
            "experience_score": 4.9,
        },
        headers=w.admin,
    ),
    ("PUT", f"{API}/accounts/{{account_id}}"): lambda w: w.client.put(
        f"{API}/accounts/{w.account_id}",
        json={
            "nickname": "新昵称",
            "followers": 13000,
            "status": "normal",
            "real_name_verified": True,
            "violations_90d": 0,
            "login_phone": "13900000001",
            "holder": person(),
        },
        headers=w.admin,
    ),
    ("PUT", OFFICIAL): lambda w: w.client.put(
        f"{API}/shops/{w.api.shop(w.subject_id)}/official-account",
        json={"account_id": w.api.account()},
        headers=w.admin,
    ),
    ("POST", f"{API}/import"): lambda w: w.client.post(
        f"{API}/import",
        content=b'{"kind": "subject", "id": "subj-imported", "name": "\xe5\x90\x8d", "subject_type": '
        b'"enterprise", "cross_border": false, "license_valid_until": null}\n',
        headers=w.admin | {"Content-Type": "application/x-ndjson"},
    ),
    ("POST", f"{API}/shops/{{shop_id}}/upgrade-applications"): lambda w: w.api.submit(w.shop_id, w.merchant),
    ("POST", f"{API}/upgrade-applications/{{application_id}}/withdraw"): lambda w: w.client.post(
        f"{API}/upgrade-applications/{w.submitted()}/withdraw", headers=w.merchant
    ),
    ("POST", f"{API}/confirmations/{{token}}/accept"): lambda w: w.client.post(
        f"{API}/confirmations/{_token(w)}/accept"
    ),
    ("POST", f"{API}/confirmations/{{token}}/decline"): lambda w: w.client.post(
        f"{API}/confirmations/{_token(w)}/decline"
    ),
    ("POST", f"{ADMIN}/upgrade-applications/{{application_id}}/approve"): lambda w: w.client.post(
        f"{ADMIN}/upgrade-applications/{_reviewing(w)}/approve", headers=w.admin
    ),
    ("POST", f"{ADMIN}/upgrade-applications/{{application_id}}/reject"): lambda w: w.client.post(
        f"{ADMIN}/upgrade-applications/{_reviewing(w)}/reject", json={"reason": "资料不符"}, headers=w.admin
    ),
    ("POST", f"{OFFICIAL}/cancel-upgrade"): lambda w: w.client.post(
        f"{API}/shops/{_auto_upgraded(w)}/official-account/cancel-upgrade", headers=w.merchant
    ),
    ("POST", f"{OFFICIAL}/operator-changes"): lambda w: w.client.post(
        f"{API}/shops/{w.upgraded_shop()[0]}/official-account/operator-changes", json=person(), headers=w.merchant
    ),
    ("POST", f"{OFFICIAL}/operator-changes/{{change_id}}/verify"): lambda w: _verify(w, "operator-changes"),
    ("POST", f"{OFFICIAL}/phone-rebinds"): lambda w: w.client.post(
        f"{API}/shops/{w.upgraded_shop()[0]}/official-account/phone-rebinds",
        json={"new_phone": "13700137000"},
        headers=w.merchant,
    ),
    ("POST", f"{OFFICIAL}/phone-rebinds/{{rebind_id}}/verify"): lambda w: _verify(w, "phone-rebinds"),
    ("POST", f"{ADMIN}/auto-upgrade-waves"): lambda w: _wave(w),
    ("POST", f"{ADMIN}/auto-upgrade-waves/{{wave_id}}/cancel"): lambda w: w.client.post(
        f"{ADMIN}/auto-upgrade-waves/{_failed_wave(w)}/cancel", headers=w.admin
    ),
    ("POST", f"{ADMIN}/jobs/{{job}}/run"): lambda w: w.client.post(
        f"{ADMIN}/jobs/expire-confirmations/run", headers=w.admin
    ),
    ("POST", f"{ADMIN}/api-keys"): lambda w: w.client.post(
        f"{ADMIN}/api-keys", json={"role": "admin", "label": "ops"}, headers=w.admin
    ),
    ("POST", f"{ADMIN}/api-keys/{{key_id}}/revoke"): lambda w: w.client.post(
        f"{ADMIN}/api-keys/{_key(w)}/revoke", headers=w.admin
    ),
    ("POST", f"{ADMIN}/users"): lambda w: w.client.post(
        f"{ADMIN}/users", json={"username": "staff.one", "password": "s3cret-pass", "role": "staff"}, headers=w.admin
    ),
    ("POST", f"{ADMIN}/users/{{user_id}}/disable"): lambda w: w.client.post(
        f"{ADMIN}/users/{_user(w)}/disable", headers=w.admin
    ),
    ("POST", f"{ADMIN}/webhook-endpoints"): lambda w: w.client.post(
        f"{ADMIN}/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=w.admin
    ),
    ("DELETE", f"{ADMIN}/webhook-endpoints/{{endpoint_id}}"): lambda w: w.client.delete(
        f"{ADMIN}/webhook-endpoints/{_webhook(w)}", headers=w.admin
    ),
    ("POST", f"{ADMIN}/webhook-deliveries/{{delivery_id}}/redeliver"): lambda w: w.client.post(
        f"{ADMIN}/webhook-deliveries/{_dead_delivery(w)}/redeliver", headers=w.admin
    ),
    ("POST", f"{API}/sandbox/clock"): lambda w: w.client.post(
        f"{API}/sandbox/clock", json={"now": "2026-03-10T10:00:00+08:00"}, headers=w.admin
    ),
    ("DELETE", f"{API}/sandbox/clock"): lambda w: _unfreeze(w),
    # -- the merchant console's forms
    ("POST", "/shops/batch-upgrade"): lambda w: w.form(
        "/shops/batch-upgrade", {"shop_id": w.shop_id, "agree_terms": "1"}
    ),
    ("POST", "/shops/{shop_id}/upgrade"): lambda w: w.form(f"/shops/{w.shop_id}/upgrade", {"agree_terms": "1"}),
    ("POST", "/shops/{shop_id}/applications/{application_id}/withdraw"): lambda w: w.form(
        f"/shops/{w.shop_id}/applications/{w.submitted()}/withdraw"
    ),
    ("POST", "/shops/{shop_id}/cancel"): lambda w: w.form(f"/shops/{_auto_upgraded(w)}/cancel"),
    ("POST", "/shops/{shop_id}/operator/code"): lambda w: w.form(
        f"/shops/{w.upgraded_shop()[0]}/operator/code", person()
    ),
    ("POST", "/shops/{shop_id}/operator/verify"): lambda w: _console_verify(w, "operator"),
    ("POST", "/shops/{shop_id}/phone/code"): lambda w: w.form(
        f"/shops/{w.upgraded_shop()[0]}/phone/code", {"new_phone": "13700137000"}
    ),
    ("POST", "/shops/{shop_id}/phone/verify"): lambda w: _console_verify(w, "phone"),
    # -- the staff console's forms
    ("POST", "/staff/api-keys"): lambda w: w.staff_form("/staff/api-keys", {"role": "admin", "label": "ops"}),
    ("POST", "/staff/api-keys/{key_id}/revoke"): lambda w: w.staff_form(f"/staff/api-keys/{_key(w)}/revoke"),
    ("POST", "/staff/review/{application_id}/approve"): lambda w: w.staff_form(
        f"/staff/review/{_reviewing(w)}/approve"
    ),
    ("POST", "/staff/review/{application_id}/reject"): lambda w: w.staff_form(
        f"/staff/review/{_reviewing(w)}/reject", {"reason": "资料不符"}
    ),
    ("POST", "/staff/waves"): lambda w: _staff_wave(w),
    ("POST", "/staff/waves/{wave_id}/cancel"): lambda w: _staff_wave_cancel(w),
    # -- the holder's page
    ("POST", "/confirm/{token}/accept"): lambda w: _holder(w, "accept", {"agree": "1"}),
    ("POST", "/confirm/{token}/decline"): lambda w: _holder(w, "decline", {}),
}


def _verify(w: World, kind: str):
    shop_id, _ = w.upgraded_shop()
    change_id, phone = (_operator_change if kind == "operator-changes" else _phone_rebind)(w, shop_id)
    return w.client.post(
        f"{API}/shops/{shop_id}/official-account/{kind}/{change_id}/verify",
        json={"code": w.sms_code(phone)},
        headers=w.merchant,
    )


def _console_verify(w: World, kind: str):
    shop_id, _ = w.upgraded_shop()
    change_id, phone = (_operator_change if kind == "operator" else _phone_rebind)(w, shop_id)
    return w.form(f"/shops/{shop_id}/{kind}/verify", {"change_id": change_id, "code": w.sms_code(phone)})


def _holder(w: World, verb: str, data: dict):
    token = _token(w)
    w.client.get(f"/confirm/{token}")
    csrf = w.client.cookies.get("gh_csrf")
    return w.client.post(f"/confirm/{token}/{verb}", data=data | {"csrf_token": csrf}, follow_redirects=False)


def _wave(w: World):
    r = w.client.post(f"{ADMIN}/auto-upgrade-waves", json={"limit": 1}, headers=w.admin)
    if r.status_code == 202:  # let it finish before the test's database goes
        _wait_wave(w, r.json()["wave_id"])
    return r


def _wait_wave(w: World, wave_id: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while w.client.get(f"{ADMIN}/auto-upgrade-waves/{wave_id}", headers=w.admin).json()["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _staff_wave(w: World):
    r = w.staff_form("/staff/waves", {"limit": "1"})
    for wave_id in _wave_ids(w):
        _wait_wave(w, wave_id)
    return r


def _wave_ids(w: World) -> list[str]:
    from guanhao.db import session_scope
    from guanhao.upgrades.models import Wave

    with session_scope() as session:
        return list(session.scalars(sa.select(Wave.id)))


def _failed_wave(w: World) -> str:
    """A wave that failed (committed failed at once, so no worker picks it up): staff may still cancel it."""
    from guanhao.db import session_scope
    from guanhao.upgrades import waves

    with session_scope() as session:
        now = make.clock.now(session)
        wave = waves.start(session, limit=1, min_score=None, policy=make.get_policy(), actor="admin:test", now=now)
        waves.fail(session, wave.id, "Test", now=now)
        return wave.id


def _staff_wave_cancel(w: World):
    return w.staff_form(f"/staff/waves/{_failed_wave(w)}/cancel")


def _key(w: World) -> str:
    r = w.client.post(f"{ADMIN}/api-keys", json={"role": "merchant", "subject_id": w.subject_id}, headers=w.admin)
    return r.json()["key_id"]


def _user(w: World) -> str:
    r = w.client.post(
        f"{ADMIN}/users", json={"username": "staff.two", "password": "s3cret-pass", "role": "staff"}, headers=w.admin
    )
    return r.json()["user_id"]


def _unfreeze(w: World):
    w.api.set_clock("2026-03-10T10:00:00+08:00")
    return w.client.delete(f"{API}/sandbox/clock", headers=w.admin)


def _rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one()


def test_r60_every_mutating_route_is_driven_here_or_exempted_with_its_reason(app):
    routes = mutating_routes(app)
    assert ("DELETE", f"{API}/sandbox/clock") in routes  # the sandbox paths are in (GUANHAO_SANDBOX=1)
    missing = sorted(routes - CALLS.keys() - EXEMPT.keys())
    assert not missing, f"mutating routes with no audit test (add them to CALLS, or to EXEMPT with a reason): {missing}"
    gone = sorted((CALLS.keys() | EXEMPT.keys()) - routes)
    assert not gone, f"routes listed here that the app no longer has: {gone}"


@pytest.mark.parametrize("route", sorted(CALLS), ids=lambda r: f"{r[0]} {r[1]}")
def test_r60_each_mutating_route_adds_an_audit_row(route, api, engine):
    """Calls the route last, after its setup, and counts the trail's rows around that one call."""
    world = World(api)
    call = CALLS[route]
    before = _rows(engine)
    marker: list[int] = []
    # The setup of a call (its own submits, syncs…) writes rows too: count from just before the route's request.
    original = world.client.request
    path_re = re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(route[1])) + r"(\?.*)?$")

    def request(method, url, *args, **kwargs):
        path = str(url).removeprefix("http://testserver")
        if method.upper() == route[0] and path_re.match(path):
            marker.append(_rows(engine))
        return original(method, url, *args, **kwargs)

    world.client.request = request
    try:
        response = call(world)
    finally:
        world.client.request = original
    _ok(response)
    assert marker, f"the call never reached {route}"
    assert _rows(engine) > marker[-1] >= before, f"{route} added no audit row"
