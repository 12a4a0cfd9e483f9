"""R-62: one rule for who sees an application after a shop changes subject. An application belongs to the
subject that submitted it: the earlier subject still reads its own (by id, in its subject list), the new subject
never sees it (by id, in the shop's list, in its subject list, as the shop's application), and the new subject's
own applications are its own. Staff see all. The merchant console follows the same rule."""

import re

from guanhao.upgrades import service as upgrades
from guanhao.upgrades import visibility
from tests import make
from tests.factories import Api

API = "/api/v1"


def _moved(api: Api):
    """Subject A submits for its shop (declined by the holder), then the platform moves the shop to subject B."""
    a, shop_id, _ = api.ready_shop()
    b = api.subject()
    a_key, b_key = api.merchant(a), api.merchant(b)
    r = api.submit(shop_id, a_key)
    assert r.status_code == 201, r.text
    old = r.json()["application_id"]
    assert api.decline(old).status_code == 200
    api.shop(b, shop_id)  # the sync moves the shop
    return a, b, shop_id, old, a_key, b_key


def _ids(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [item["application_id"] for item in r.json()["items"]]


def test_r62_after_a_move_the_earlier_subject_still_reads_its_application_and_the_new_one_does_not(api):
    a, b, shop_id, old, a_key, b_key = _moved(api)
    get = api.client.get
    # A: its own application, by id and in its subject's list; the shop is no longer A's
    assert get(f"{API}/upgrade-applications/{old}", headers=a_key).json()["application_id"] == old
    assert _ids(get(f"{API}/subjects/{a}/upgrade-applications", headers=a_key)) == [old]
    assert get(f"{API}/shops/{shop_id}/upgrade-applications", headers=a_key).status_code == 404
    # B: the shop is B's, A's application is not — not by id, not in the shop's list, not in B's list
    missing = get(f"{API}/upgrade-applications/{old}", headers=b_key)
    assert missing.status_code == 404
    assert missing.json() == get(f"{API}/upgrade-applications/app_no_such_one", headers=b_key).json() | {
        "detail": missing.json()["detail"]
    }
    assert _ids(get(f"{API}/shops/{shop_id}/upgrade-applications", headers=b_key)) == []
    assert _ids(get(f"{API}/subjects/{b}/upgrade-applications", headers=b_key)) == []
    assert old not in get(f"{API}/shops/{shop_id}/official-account", headers=b_key).text
    # staff see it
    assert _ids(get(f"{API}/shops/{shop_id}/upgrade-applications", headers=api.admin)) == [old]


def test_r62_the_new_subjects_own_application_is_its_own(api):
    a, b, shop_id, old, a_key, b_key = _moved(api)
    get = api.client.get
    r = api.submit(shop_id, b_key)
    assert r.status_code == 201, r.text
    new = r.json()["application_id"]
    assert r.json()["subject_id"] == b
    assert get(f"{API}/upgrade-applications/{new}", headers=b_key).status_code == 200
    assert _ids(get(f"{API}/shops/{shop_id}/upgrade-applications", headers=b_key)) == [new]
    assert _ids(get(f"{API}/subjects/{b}/upgrade-applications", headers=b_key)) == [new]
    official = get(f"{API}/shops/{shop_id}/official-account", headers=b_key).json()
    assert (official["upgrade_status"], official["active_application_id"]) == ("in_progress", new)
    # … and A sees nothing of it
    assert get(f"{API}/upgrade-applications/{new}", headers=a_key).status_code == 404
    assert _ids(get(f"{API}/subjects/{a}/upgrade-applications", headers=a_key)) == [old]
    # staff see both, newest first
    assert _ids(get(f"{API}/shops/{shop_id}/upgrade-applications", headers=api.admin)) == [new, old]


def test_r62_a_withdraw_by_the_new_subject_of_the_earlier_subjects_application_is_404(api):
    a, b, shop_id, old, a_key, b_key = _moved(api)
    r = api.client.post(f"{API}/upgrade-applications/{old}/withdraw", headers=b_key)
    assert r.status_code == 404


def test_r62_service_scopes_the_shops_list_by_the_one_rule(session, now):
    a = make.subject(session, now=now)
    b = make.subject(session, now=now)
    shop = make.ready_shop(session, now=now, subject_id=a.id)
    app = make.submit(session, shop, now=now)
    upgrades.withdraw(session, app.id, actor=make.MERCHANT, now=now)
    make.shop(session, b.id, now=now, shop_id=shop.id)
    mine = upgrades.applications_for_shop(session, shop.id, scope=a.id, before_seq=None, limit=10)
    theirs = upgrades.applications_for_shop(session, shop.id, scope=b.id, before_seq=None, limit=10)
    staff = upgrades.applications_for_shop(session, shop.id, scope=visibility.STAFF, before_seq=None, limit=10)
    assert ([x.id for x in mine], theirs, [x.id for x in staff]) == ([app.id], [], [app.id])
    assert visibility.readable(app, a.id) and not visibility.readable(app, b.id)
    assert visibility.readable(app, visibility.STAFF)
    assert visibility.scope_of(is_staff=False, subject_id=None) == ""  # a merchant of no subject sees nothing
    assert not visibility.readable(app, visibility.scope_of(is_staff=False, subject_id=None))


# ---------------------------------------------------------------- the merchant console, the same rule


def _console_login(api: Api, subject_id: str, username: str) -> None:
    r = api.client.post(
        f"{API}/admin/users",
        json={"username": username, "password": "s3cret-pass", "role": "merchant", "subject_id": subject_id},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    api.client.cookies.clear()
    api.client.get("/")
    csrf = api.client.cookies.get("gh_csrf")
    r = api.client.post(
        "/login", data={"username": username, "password": "s3cret-pass", "csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303, r.text


def test_r62_console_pages_follow_the_same_rule(api):
    a, b, shop_id, old, a_key, b_key = _moved(api)
    new = api.submit(shop_id, b_key).json()["application_id"]

    _console_login(api, b, "merchant.b")
    page = api.client.get(f"/shops/{shop_id}")
    assert page.status_code == 200
    assert new in page.text and old not in page.text
    assert api.client.get(f"/shops/{shop_id}/applications/{old}").status_code == 404
    assert api.client.get(f"/shops/{shop_id}/applications/{new}").status_code == 200
    csrf = re.search(r"X-CSRF-Token&#34;: &#34;([^&]+)&#34;", page.text).group(1)
    r = api.client.post(f"/shops/{shop_id}/applications/{old}/withdraw", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 404

    _console_login(api, a, "merchant.a")
    assert api.client.get(f"/shops/{shop_id}").status_code == 404  # the shop is no longer A's
    assert api.client.get(f"/shops/{shop_id}/applications/{old}").status_code == 404
