"""Reading back what was synced, and a merchant's own lists (issue 8 item 12, API.md Conventions): subjects,
shops and accounts by id and in pages (admin; personal data masked, SPEC R-50); a merchant's shops with their
upgrade state and its applications (SPEC R-62: its own subject only, 404 otherwise); every list paged with
cursors in a total order."""

import datetime as dt
import re

from tests.factories import person

API = "/api/v1"
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def _all(client, url: str, headers: dict, **params) -> tuple[list[dict], int]:
    items, cursor, pages = [], None, 0
    while True:
        r = client.get(url, params=params | ({"cursor": cursor} if cursor else {}), headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "next_cursor"}
        if not body["items"]:  # a feed, caught up: the cursor stays where it was (API.md)
            assert body["next_cursor"] in (cursor, None)
            return items, pages
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:  # a newest-first list, at its oldest item
            return items, pages


def test_synced_objects_read_back_by_id(api):
    holder = person(name="王小明")
    subject_id, shop_id, account_id = api.ready_shop(holder=holder)
    r = api.client.get(f"{API}/subjects/{subject_id}", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["subject_id"] == subject_id
    assert r.json()["subject_type"] == "enterprise"
    r = api.client.get(f"{API}/shops/{shop_id}", headers=api.admin)
    assert r.status_code == 200
    assert (r.json()["subject_id"], r.json()["official_account_id"]) == (subject_id, account_id)
    r = api.client.get(f"{API}/accounts/{account_id}", headers=api.admin)
    assert r.status_code == 200
    out = r.json()
    assert out["holder"]["name"] == "王**"
    assert re.fullmatch(r"\d{3}\*{11}[\dX]{4}", out["holder"]["id_number"])
    assert re.fullmatch(r"1\d{2}\*{4}\d{4}", out["login_phone"])
    for clear in (holder["id_number"], holder["phone"], holder["name"]):
        assert clear not in r.text
    for path in ("subjects", "shops", "accounts"):
        r = api.client.get(f"{API}/{path}/nope-1", headers=api.admin)
        assert r.status_code == 404
        assert r.json()["code"] == "NOT_FOUND"


def test_synced_objects_list_in_pages_without_gaps_or_repeats(api):
    api.set_clock(T0)  # one creation time for all: the id decides, and paging still neither skips nor repeats
    subject_ids = [api.subject(f"s-{n:03d}") for n in range(57)]
    items, pages = _all(api.client, f"{API}/subjects", api.admin)
    assert pages == 2
    assert [s["subject_id"] for s in items] == subject_ids
    api.set_clock(T0 + dt.timedelta(hours=1))
    later = api.subject("a-later")  # created later: listed after, whatever its id
    items, _ = _all(api.client, f"{API}/subjects", api.admin)
    assert items[-1]["subject_id"] == later
    holders = [person() for _ in range(3)]
    for h in holders:
        api.account(holder=h)
    accounts, _ = _all(api.client, f"{API}/accounts", api.admin)
    assert len(accounts) == 3
    text = repr(accounts)
    assert not any(h["id_number"] in text or h["phone"] in text for h in holders)
    _, shop_id, _ = api.ready_shop(subject_ids[0])
    shops, _ = _all(api.client, f"{API}/shops", api.admin)
    assert [s["shop_id"] for s in shops] == [shop_id]


def test_r62_a_merchant_lists_its_shops_with_their_upgrade_state(api):
    subject_id, upgraded, _ = api.ready_shop()
    _, in_progress, _ = api.ready_shop(subject_id)
    _, untouched, _ = api.ready_shop(subject_id)
    api.shop(subject_id, shop_id="shop-unbound")
    assert api.upgrade(upgraded)["status"] == "succeeded"
    assert api.submit(in_progress).status_code == 201
    merchant = api.merchant(subject_id)
    api.ready_shop()  # another subject's shop: never listed
    items, _ = _all(api.client, f"{API}/subjects/{subject_id}/shops", merchant)
    assert [i["shop_id"] for i in items] == [upgraded, in_progress, untouched, "shop-unbound"]
    states = {i["shop_id"]: i["official_account"]["upgrade_status"] for i in items}
    assert states == {
        upgraded: "upgraded",
        in_progress: "in_progress",
        untouched: "not_upgraded",
        "shop-unbound": "not_upgraded",
    }
    for item in items:
        # The very view of GET /shops/{id}/official-account: one rule, read the same way.
        assert item["official_account"] == api.official_account(item["shop_id"], merchant)
    assert items[0]["official_account"]["operator"]["name"].endswith("*")


def test_r62_a_merchant_lists_its_subjects_applications_newest_first(api):
    subject_id, shop_a, _ = api.ready_shop()
    _, shop_b, _ = api.ready_shop(subject_id)
    merchant = api.merchant(subject_id)
    first = api.submit(shop_a, merchant).json()["application_id"]
    assert api.client.post(f"{API}/upgrade-applications/{first}/withdraw", headers=merchant).status_code == 200
    second = api.submit(shop_b, merchant).json()["application_id"]
    third = api.submit(shop_a, merchant).json()["application_id"]
    items, _ = _all(api.client, f"{API}/subjects/{subject_id}/upgrade-applications", merchant)
    assert [a["application_id"] for a in items] == [third, second, first]
    assert [a["status"] for a in items] == ["submitted", "submitted", "withdrawn"]


def test_r62_an_application_stays_with_the_subject_that_submitted_it(api):
    subject_id, shop_id, _ = api.ready_shop()
    app_id = api.submit(shop_id).json()["application_id"]
    assert api.client.post(f"{API}/upgrade-applications/{app_id}/withdraw", headers=api.admin).status_code == 200
    new_owner = api.subject()
    api.shop(new_owner, shop_id=shop_id)  # the shop moves to another subject
    old, _ = _all(api.client, f"{API}/subjects/{subject_id}/upgrade-applications", api.merchant(subject_id))
    new, _ = _all(api.client, f"{API}/subjects/{new_owner}/upgrade-applications", api.merchant(new_owner))
    assert [a["application_id"] for a in old] == [app_id]
    assert new == []


def test_r62_another_subjects_lists_are_not_found(api):
    subject_id, _, _ = api.ready_shop()
    stranger = api.merchant(api.subject())
    for path in ("shops", "upgrade-applications"):
        theirs = api.client.get(f"{API}/subjects/{subject_id}/{path}", headers=stranger)
        missing = api.client.get(f"{API}/subjects/nobody/{path}", headers=stranger)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["code"] == "NOT_FOUND"
        assert api.client.get(f"{API}/subjects/nobody/{path}", headers=api.admin).status_code == 404


def test_a_cursor_that_was_not_given_out_is_refused(api):
    for url in (f"{API}/subjects", f"{API}/shops", f"{API}/accounts"):
        r = api.client.get(url, params={"cursor": "czo1"}, headers=api.admin)
        assert r.status_code == 422, (url, r.text)
        assert r.json()["errors"][0]["field"] == "cursor"
