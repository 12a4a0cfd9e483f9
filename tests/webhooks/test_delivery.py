"""Signed webhooks (SPEC R-61): every outbox event reaches each registered endpoint at least once, signed as the
Standard Webhooks spec says, retried with backoff, dead-lettered after the policy's max_attempts."""

import base64
import hashlib
import hmac
import time

from guanhao.webhooks import service
from tests.webhooks.helpers import (
    API,
    after_fan_out,
    body_of,
    deliveries,
    nothing_pending,
    register,
    rounds,
    several_upgrades,
)

# ---------------------------------------------------------------- the test


def test_r61_receiver_down_then_up_loses_nothing_and_every_signature_verifies(hooks, receiver):
    api, policy = hooks(max_attempts=50)
    _, secret = register(api, receiver.url("/hooks"))
    _, secret_b = register(api, receiver.url("/succeeded"), event_types=["upgrade.succeeded"])
    shops = several_upgrades(api)
    events = api.events()
    assert len({e["shop_id"] for e in events}) == 3

    lanes = {(d["endpoint_id"], d["shop_id"]) for d in after_fan_out(api, policy)}
    assert len(lanes) == 3 + 3

    def heads_tried(times: int):
        return lambda: sum(d["attempts"] >= times for d in deliveries(api)) == len(lanes)

    # down: nothing listens on the port; each lane's head is tried again and again, nothing behind it
    rounds(policy, heads_tried(2))
    assert not deliveries(api, "delivered")
    assert all(d["last_error"] for d in deliveries(api) if d["attempts"])
    # up, but failing
    receiver.status = 503
    receiver.start()
    rounds(policy, lambda: len(receiver.received()) >= 3)
    assert not deliveries(api, "delivered")
    assert {d["last_status"] for d in deliveries(api)} >= {503}
    # healthy
    receiver.status = 200
    rounds(policy, nothing_pending(api))

    ok = receiver.received(ok_only=True)
    by_id = {r["headers"]["webhook-id"]: r for r in ok}
    # every outbox event arrived, exactly the outbox's payload
    assert set(by_id) == {e["event_id"] for e in events}
    for e in events:
        body = body_of(by_id[e["event_id"]])
        assert body["type"] == e["type"]
        assert body["data"]["event_id"] == e["event_id"]
        assert body["data"].get("shop_id") == e["shop_id"]

    # each signature verifies with the endpoint's secret; a tampered body, another secret or a stale time do not
    now = int(time.time())
    for r in receiver.received():
        assert service.verify(secret, r["headers"], r["body"], now=now)
        assert not service.verify(secret, r["headers"], r["body"].replace(b'"data"', b'"Data"'), now=now)
        assert not service.verify(secret, r["headers"], r["body"] + b" ", now=now)
        assert not service.verify(secret_b, r["headers"], r["body"], now=now)
        assert not service.verify(secret, r["headers"], r["body"], now=now + 3600)
        assert _independent_check(secret, r["headers"], r["body"])

    # per shop, in outbox order — even counting the failed attempts
    seq_of = {e["event_id"]: n for n, e in enumerate(events)}
    for shop_id in shops:
        arrived = [seq_of[r["headers"]["webhook-id"]] for r in receiver.received() if r["lane"][1] == shop_id]
        assert arrived == sorted(arrived), shop_id
        acknowledged = [seq_of[r["headers"]["webhook-id"]] for r in ok if r["lane"][1] == shop_id]
        assert acknowledged == sorted(set(acknowledged)), shop_id

    # retried with backoff: each lane's head took several attempts, the rest went through first time
    done = deliveries(api, "delivered")
    assert len(done) == len(events) + sum(e["type"] == "upgrade.succeeded" for e in events)
    heads = {}
    for d in sorted(done, key=lambda d: d["event_seq"]):
        heads.setdefault((d["endpoint_id"], d["shop_id"]), d)
    assert all(d["attempts"] > 2 for d in heads.values())
    assert all(d["attempts"] == 1 for d in done if d not in heads.values())
    assert all(d["last_status"] == 200 and d["delivered_at"] for d in done)

    # the filtered endpoint got exactly the succeeded events, signed with its own secret
    only = receiver.received("/succeeded", ok_only=True)
    assert sorted(r["headers"]["webhook-id"] for r in only) == sorted(
        e["event_id"] for e in events if e["type"] == "upgrade.succeeded"
    )
    assert all(service.verify(secret_b, r["headers"], r["body"], now=now) for r in receiver.received("/succeeded"))


def _independent_check(secret: str, headers: dict, body: bytes) -> bool:
    """The Standard Webhooks check written out, not borrowed from the code under test."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split(" "))


def test_r61_secret_is_shown_once_and_endpoints_list_and_delete(hooks, receiver):
    api, _ = hooks()
    endpoint_id, secret = register(api, receiver.url(), ["upgrade.succeeded", "operator.changed"])
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    r = api.client.get(f"{API}/admin/webhook-endpoints", headers=api.admin)
    assert r.status_code == 200
    [listed] = r.json()["items"]
    assert listed["endpoint_id"] == endpoint_id
    assert listed["event_types"] == ["upgrade.succeeded", "operator.changed"]
    assert "secret" not in listed and secret not in r.text
    assert api.client.delete(f"{API}/admin/webhook-endpoints/{endpoint_id}", headers=api.admin).status_code == 204
    assert api.client.get(f"{API}/admin/webhook-endpoints", headers=api.admin).json()["items"] == []
    r = api.client.delete(f"{API}/admin/webhook-endpoints/{endpoint_id}", headers=api.admin)
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    subject_id = api.subject()
    merchant = api.merchant(subject_id)
    assert api.client.get(f"{API}/admin/webhook-endpoints", headers=merchant).status_code == 403
    assert (
        api.client.post(f"{API}/admin/webhook-endpoints", json={"url": receiver.url()}, headers=merchant).status_code
        == 403
    )
    r = api.client.post(f"{API}/admin/webhook-endpoints", json={"url": "not a url"}, headers=api.admin)
    assert r.status_code == 422


def test_r61_a_new_endpoint_gets_events_from_its_registration_on(hooks, receiver):
    api, policy = hooks()
    receiver.start()
    _, _, _ = api.ready_shop()
    before = {e["event_id"] for e in api.events()}
    register(api, receiver.url())
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    rounds(policy, nothing_pending(api))
    got = {r["headers"]["webhook-id"] for r in receiver.received()}
    assert got == {e["event_id"] for e in api.events()} - before
    assert got


def test_r61_a_deleted_endpoint_gets_nothing_new(hooks, receiver):
    api, policy = hooks(max_attempts=50)
    kept, _ = register(api, receiver.url("/kept"))
    gone, _ = register(api, receiver.url("/gone"))
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    # the receiver is down: deliveries queue for both endpoints
    rounds(policy, lambda: len(deliveries(api, "pending")) == 2 * len(api.events()))
    r = api.client.delete(f"{API}/admin/webhook-endpoints/{gone}", headers=api.admin)
    assert r.status_code == 204
    _, other_shop, _ = api.ready_shop()
    api.upgrade(other_shop)
    receiver.start()
    rounds(policy, lambda: len(receiver.received("/kept", ok_only=True)) == len(api.events()))
    rounds(policy, lambda: True)
    assert receiver.received("/gone") == []
    assert not list(deliveries(api, "pending"))
    assert all(d["endpoint_id"] == kept for d in deliveries(api, "delivered"))
    # what was queued for it is dead-lettered, visibly, and cannot be sent again
    dropped = deliveries(api, "dead")
    assert dropped and all(d["endpoint_id"] == gone and d["last_error"] == "endpoint removed" for d in dropped)
    r = api.client.post(f"{API}/admin/webhook-deliveries/{dropped[0]['delivery_id']}/redeliver", headers=api.admin)
    assert r.status_code == 409


def test_r61_dead_letter_after_max_attempts_then_redeliver(hooks, receiver):
    api, policy = hooks(max_attempts=2)
    register(api, receiver.url())
    receiver.status = 500
    receiver.start()
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    events = api.events()
    rounds(policy, lambda: len(deliveries(api, "dead")) == len(events))
    dead = deliveries(api, "dead")
    assert all(d["attempts"] == 2 and d["last_status"] == 500 for d in dead)
    assert len(receiver.received()) == 2 * len(events)
    # a dead letter does not block the shop's later events: each was tried in turn
    tried = [r["headers"]["webhook-id"] for r in receiver.received()]
    assert tried == [e["event_id"] for e in events for _ in range(2)]

    receiver.status = 200
    rounds(policy, lambda: True)
    assert len(receiver.received(ok_only=True)) == 0
    first = min(dead, key=lambda d: d["event_seq"])
    r = api.client.post(f"{API}/admin/webhook-deliveries/{first['delivery_id']}/redeliver", headers=api.admin)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["attempts"]) == ("pending", 0)
    rounds(policy, lambda: not deliveries(api, "pending"))
    [ok] = receiver.received(ok_only=True)
    assert ok["headers"]["webhook-id"] == events[0]["event_id"]
    [done] = deliveries(api, "delivered")
    assert done["delivery_id"] == first["delivery_id"] and done["attempts"] == 1

    r = api.client.post(f"{API}/admin/webhook-deliveries/{first['delivery_id']}/redeliver", headers=api.admin)
    assert r.status_code == 409 and r.json()["code"] == "INVALID_TRANSITION"
    r = api.client.post(f"{API}/admin/webhook-deliveries/999999/redeliver", headers=api.admin)
    assert r.status_code == 404


def test_r61_a_failing_event_holds_back_the_shops_later_events(hooks, receiver):
    """In order per shop: while the head of a shop's lane is being retried, nothing after it is sent."""
    api, policy = hooks(max_attempts=50)
    register(api, receiver.url())
    receiver.status = 503
    receiver.start()
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    events = api.events()
    rounds(policy, lambda: len(receiver.received()) >= 4)
    assert {r["headers"]["webhook-id"] for r in receiver.received()} == {events[0]["event_id"]}
    receiver.status = 200
    rounds(policy, nothing_pending(api))
    assert [r["headers"]["webhook-id"] for r in receiver.received(ok_only=True)] == [e["event_id"] for e in events]


def test_r61_verify_refuses_malformed_headers():
    secret = service.new_secret()
    body = b'{"type":"x"}'
    now = int(time.time())
    good = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(now),
        "webhook-signature": service.sign(secret, "evt_1", now, body),
    }
    assert service.verify(secret, good, body, now=now)
    assert service.verify(secret, good | {"webhook-signature": "v1,AAAA " + good["webhook-signature"]}, body, now=now)
    assert not service.verify(
        secret, good | {"webhook-signature": "v1a," + good["webhook-signature"][3:]}, body, now=now
    )
    assert not service.verify(secret, {k: v for k, v in good.items() if k != "webhook-signature"}, body, now=now)
    assert not service.verify(secret, {k: v for k, v in good.items() if k != "webhook-id"}, body, now=now)
    assert not service.verify(secret, good | {"webhook-timestamp": "soon"}, body, now=now)
    assert not service.verify(secret, good | {"webhook-id": "evt_2"}, body, now=now)
