"""Webhook endpoints and deliveries are lists like every other (issue 8 item 12): paged with cursors."""

from tests.subjects.test_readback import _all

API = "/api/v1"


def test_endpoints_page_in_creation_order(api):
    made = []
    for n in range(53):
        r = api.client.post(
            f"{API}/admin/webhook-endpoints", json={"url": f"http://127.0.0.1:9/hook-{n}"}, headers=api.admin
        )
        assert r.status_code == 201, r.text
        made.append(r.json()["endpoint_id"])
    items, pages = _all(api.client, f"{API}/admin/webhook-endpoints", api.admin)
    assert pages == 2
    assert [e["endpoint_id"] for e in items] == made


def test_deliveries_page_newest_first(api):
    from guanhao import clock
    from guanhao.db import session_scope
    from guanhao.webhooks import service

    api.client.post(f"{API}/admin/webhook-endpoints", json={"url": "http://127.0.0.1:9/in"}, headers=api.admin)
    for _ in range(2):
        _, shop_id, _ = api.ready_shop()
        api.upgrade(shop_id)
    with session_scope() as session:
        queued = service.fan_out(session, now=clock.real_now())
    assert queued >= 5
    items, pages = _all(api.client, f"{API}/admin/webhook-deliveries", api.admin, limit=2)
    assert pages >= 3
    seqs = [d["delivery_id"] for d in items]
    assert seqs == sorted(seqs, reverse=True)
    assert len(seqs) == len(set(seqs)) == queued
