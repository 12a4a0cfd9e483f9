"""API.md: every list that grows in commit or creation order gives a `next_cursor` on every page — the position
after the last item, or the same cursor when the page is empty — so a poller that has caught up continues from it.
The event feed first; then the audit trail, the review queue, and every list in creation order. Lists that page
backwards (newest first: applications, webhook deliveries) end with null: nothing can come after the oldest item."""

import pytest

from guanhao.http import decode_cursor, decode_key_cursor, feed_cursor, key_feed_cursor

API = "/api/v1"


def _get(api, url: str, cursor: str | None = None, **params) -> dict:
    r = api.client.get(url, params=params | ({"cursor": cursor} if cursor else {}), headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_event_feed_gives_a_cursor_on_every_page_and_a_caught_up_poller_continues_from_it(api):
    # an empty feed: already a cursor, at its start
    empty = _get(api, f"{API}/admin/events")
    assert empty["items"] == [] and empty["next_cursor"]
    subject_id, shop_id, _ = api.ready_shop()
    first = api.submit(shop_id).json()["application_id"]
    page = _get(api, f"{API}/admin/events", empty["next_cursor"])
    assert [e["data"]["application_id"] for e in page["items"]] == [first, first]  # submitted, confirmation asked
    # a partial page still names the position after its last event
    assert decode_cursor(page["next_cursor"]) == page["items"][-1]["seq"]
    # caught up: an empty page and the same cursor
    again = _get(api, f"{API}/admin/events", page["next_cursor"])
    assert again == {"items": [], "next_cursor": page["next_cursor"]}
    # new events come to the poller from where it stopped, none twice
    api.decline(first)
    later = _get(api, f"{API}/admin/events", again["next_cursor"])
    assert [e["type"] for e in later["items"]] == ["upgrade.rejected"]
    assert later["items"][0]["seq"] > page["items"][-1]["seq"]


def test_the_event_feed_pages_by_limit_with_a_cursor_after_each_page(api):
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    everything = _get(api, f"{API}/admin/events")["items"]
    seen, cursor = [], None
    while True:
        page = _get(api, f"{API}/admin/events", cursor, limit=2)
        assert page["next_cursor"]
        if not page["items"]:
            assert page["next_cursor"] == cursor
            break
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
    assert [e["seq"] for e in seen] == [e["seq"] for e in everything]


def test_a_shop_filtered_event_feed_keeps_its_cursor_too(api):
    _, shop_id, _ = api.ready_shop()
    _, other, _ = api.ready_shop()
    api.submit(shop_id)
    api.submit(other)
    page = _get(api, f"{API}/admin/events", shop_id=shop_id)
    assert {e["shop_id"] for e in page["items"]} == {shop_id}
    assert _get(api, f"{API}/admin/events", page["next_cursor"], shop_id=shop_id) == {
        "items": [],
        "next_cursor": page["next_cursor"],
    }


def test_the_audit_trail_is_a_feed_with_a_cursor_on_every_page(api):
    page = _get(api, f"{API}/admin/audit")
    assert page["next_cursor"]
    subject_id = api.subject()
    page = _get(api, f"{API}/admin/audit", page["next_cursor"])
    assert [r["target_id"] for r in page["items"]] == [subject_id]
    assert _get(api, f"{API}/admin/audit", page["next_cursor"]) == {"items": [], "next_cursor": page["next_cursor"]}


# Lists in creation order: (path, how to add an item, the item's id field)
def _add_subject(api):
    return api.subject()


def _add_shop(api):
    return api.shop(api.subject())


def _add_account(api):
    return api.account()


def _add_key(api):
    r = api.client.post(f"{API}/admin/api-keys", json={"role": "admin"}, headers=api.admin)
    return r.json()["key_id"]


def _add_user(api):
    import uuid

    body = {"username": f"u{uuid.uuid4().hex[:8]}", "password": "pass-word-1", "role": "staff"}
    return api.client.post(f"{API}/admin/users", json=body, headers=api.admin).json()["user_id"]


def _add_endpoint(api):
    r = api.client.post(f"{API}/admin/webhook-endpoints", json={"url": "http://127.0.0.1:9/h"}, headers=api.admin)
    return r.json()["endpoint_id"]


CREATION_ORDER = {
    "subjects": (f"{API}/subjects", _add_subject, "subject_id"),
    "shops": (f"{API}/shops", _add_shop, "shop_id"),
    "accounts": (f"{API}/accounts", _add_account, "account_id"),
    "api-keys": (f"{API}/admin/api-keys", _add_key, "key_id"),
    "users": (f"{API}/admin/users", _add_user, "user_id"),
    "webhook-endpoints": (f"{API}/admin/webhook-endpoints", _add_endpoint, "endpoint_id"),
}


@pytest.mark.parametrize("name", sorted(CREATION_ORDER))
def test_lists_in_creation_order_give_a_cursor_on_every_page(api, name):
    url, add, id_field = CREATION_ORDER[name]
    start = _get(api, url)
    assert start["next_cursor"], "even an empty (or complete) first page has a cursor"
    seen = [item[id_field] for item in start["items"]]
    cursor = start["next_cursor"]
    for _ in range(2):
        new = add(api)
        page = _get(api, url, cursor)
        assert new in [item[id_field] for item in page["items"]]
        seen += [item[id_field] for item in page["items"]]
        cursor = page["next_cursor"]
        assert _get(api, url, cursor) == {"items": [], "next_cursor": cursor}
    assert len(seen) == len(set(seen))


def test_the_subjects_shop_list_and_the_review_queue_give_a_cursor_on_every_page(api):
    subject_id = api.subject()
    url = f"{API}/subjects/{subject_id}/shops"
    empty = _get(api, url)
    assert empty["items"] == [] and empty["next_cursor"]
    _, shop_id, _ = api.ready_shop(subject_id)
    page = _get(api, url, empty["next_cursor"])
    assert [s["shop_id"] for s in page["items"]] == [shop_id]
    assert _get(api, url, page["next_cursor"]) == {"items": [], "next_cursor": page["next_cursor"]}

    queue = _get(api, f"{API}/admin/review-queue")
    assert queue["next_cursor"]
    _, big, _ = api.ready_shop(account_fields={"followers": 2_000_000})
    waiting = api.upgrade(big)["application_id"]
    page = _get(api, f"{API}/admin/review-queue", queue["next_cursor"])
    assert [a["application_id"] for a in page["items"]] == [waiting]
    assert page["next_cursor"]


def test_newest_first_lists_end_with_null(api):
    subject_id, shop_id, _ = api.ready_shop()
    api.submit(shop_id)
    for url in (
        f"{API}/shops/{shop_id}/upgrade-applications",
        f"{API}/subjects/{subject_id}/upgrade-applications",
        f"{API}/admin/webhook-deliveries",
    ):
        assert _get(api, url)["next_cursor"] is None, url


def test_cursor_helpers():
    class Row:
        def __init__(self, seq):
            self.seq = seq

    assert decode_cursor(feed_cursor([], seq_of=lambda r: r.seq, after=None)) == 0
    assert decode_cursor(feed_cursor([], seq_of=lambda r: r.seq, after=41)) == 41
    assert decode_cursor(feed_cursor([Row(3), Row(7)], seq_of=lambda r: r.seq, after=1)) == 7
    start = decode_key_cursor(key_feed_cursor([], after=None))
    assert start is not None and start[0].year == 1970
