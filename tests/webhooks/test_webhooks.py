"""Signed webhooks (SPEC R-61): every outbox event reaches each registered endpoint at least once, in
order per shop, signed as the Standard Webhooks spec says, retried with backoff, dead-lettered after
the policy's max_attempts. A real HTTP receiver on 127.0.0.1 plays the platform system."""

import base64
import datetime as dt
import hashlib
import hmac
import json
import socket
import sqlite3
import threading
import time
from collections import defaultdict
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from guanhao.webhooks import service, worker
from tests.clocks import StepClock
from tests.conftest import reset_caches
from tests.factories import Api, person

API = "/api/v1"


# ---------------------------------------------------------------- a receiver on 127.0.0.1


class Receiver:
    """Records every request. `status` is what it answers; `hold` (an Event) keeps requests open;
    per lane (path, shop) it notes requests that overlapped another one of the same lane."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.status = 200
        self.delay = 0.0
        self.hold: threading.Event | None = None
        self.requests: list[dict] = []
        self.in_flight: dict = defaultdict(int)
        self.overlaps: list = []
        self.entered = threading.Event()
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                lane = (self.path, json.loads(body)["data"].get("shop_id"))
                with receiver.lock:
                    if receiver.in_flight[lane]:
                        receiver.overlaps.append(lane)
                    receiver.in_flight[lane] += 1
                receiver.entered.set()
                if receiver.hold is not None:
                    receiver.hold.wait(20)
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.status
                with receiver.lock:
                    receiver.in_flight[lane] -= 1
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                            "status": status,
                            "lane": lane,
                        }
                    )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def received(self, path: str = "/hooks", *, ok_only: bool = False) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path and (not ok_only or 200 <= r["status"] < 300)]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    if r.hold is not None:
        r.hold.set()
    r.stop()


# ---------------------------------------------------------------- a service with a fast retry policy


@pytest.fixture
def hooks(database, tmp_path, monkeypatch, admin_headers):
    """Builds (Api, policy) against a fresh app whose policy [webhooks] section has the given values."""
    from guanhao.app import create_app
    from guanhao.policy import DEFAULT_POLICY_PATH, get_policy

    stack = ExitStack()

    def build(**values) -> tuple[Api, object]:
        values = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2, "timeout_seconds": 2.0} | values
        head, section = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").split("[webhooks]", 1)
        lines = section.splitlines()
        for key, value in values.items():
            [i] = [n for n, line in enumerate(lines) if line.startswith(f"{key} =")]
            lines[i] = f"{key} = {value}"
        path = tmp_path / "policy.toml"
        path.write_text(head + "[webhooks]" + "\n".join(lines) + "\n", encoding="utf-8")
        monkeypatch.setenv("GUANHAO_POLICY", str(path))
        reset_caches()
        client = stack.enter_context(TestClient(create_app(), raise_server_exceptions=False))
        return Api(client, admin_headers), get_policy()

    with stack:
        yield build
    reset_caches()


def register(api: Api, url: str, event_types: list[str] | None = None) -> tuple[str, str]:
    body = {"url": url} | ({"event_types": event_types} if event_types is not None else {})
    r = api.client.post(f"{API}/admin/webhook-endpoints", json=body, headers=api.admin)
    assert r.status_code == 201, r.text
    return r.json()["endpoint_id"], r.json()["secret"]


def deliveries(api: Api, status: str | None = None) -> list[dict]:
    r = api.client.get(
        f"{API}/admin/webhook-deliveries", params={"status": status} if status else {}, headers=api.admin
    )
    assert r.status_code == 200, r.text
    return r.json()["items"]


# The delivery worker's clock in `rounds`: moved on by the longest backoff after each round, so every retry
# is due at the next round without sleeping (reset for each test; it never falls behind the real clock).
WORKER_CLOCK = StepClock(follow_real_time=True)


@pytest.fixture(autouse=True)
def _worker_clock():
    WORKER_CLOCK.reset()


def rounds(policy, until, *, most: int = 300, real_time: bool = False) -> int:
    """Runs worker rounds until `until()` holds. With `real_time`, on the worker's own clock (the real one),
    waiting a little between rounds: for tests about which clock the worker reads."""
    with httpx.Client() as client:
        for n in range(1, most + 1):
            if real_time:
                worker.run_once(policy, client)
            else:
                worker.run_once(policy, client, clock=WORKER_CLOCK)
            if until():
                return n
            if real_time:
                time.sleep(0.02)
            else:
                WORKER_CLOCK.advance(policy.webhooks.backoff_max_seconds)
    raise AssertionError(f"not done after {most} rounds")


def _after_fan_out(api: Api, policy) -> list[dict]:
    from guanhao import clock
    from guanhao.db import session_scope

    with session_scope() as session:
        service.fan_out(session, now=clock.now(session))
    return deliveries(api)


def nothing_pending(api: Api):
    return lambda: not deliveries(api, "pending")


def several_upgrades(api: Api) -> list[str]:
    """Three shops of two subjects: two upgraded, one withdrawn then upgraded, one operator change."""
    a, b = api.subject(), api.subject()
    shops = [api.ready_shop(a)[1], api.ready_shop(a)[1], api.ready_shop(b)[1]]
    assert api.upgrade(shops[0])["status"] == "succeeded"
    app_id = api.submit(shops[1]).json()["application_id"]
    r = api.client.post(f"{API}/upgrade-applications/{app_id}/withdraw", headers=api.admin)
    assert r.status_code == 200, r.text
    assert api.upgrade(shops[2])["status"] == "succeeded"
    assert api.upgrade(shops[1])["status"] == "succeeded"
    new = person()
    r = api.client.post(f"{API}/shops/{shops[0]}/official-account/operator-changes", json=new, headers=api.admin)
    assert r.status_code == 201, r.text
    code = api.client.get(f"{API}/sandbox/sms", params={"phone": new["phone"]}, headers=api.admin).json()["items"][0][
        "code"
    ]
    r = api.client.post(
        f"{API}/shops/{shops[0]}/official-account/operator-changes/{r.json()['change_id']}/verify",
        json={"code": code},
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    return shops


def body_of(request: dict) -> dict:
    return json.loads(request["body"])


# ---------------------------------------------------------------- the test


def test_r61_receiver_down_then_up_loses_nothing_and_every_signature_verifies(hooks, receiver):
    api, policy = hooks(max_attempts=50)
    _, secret = register(api, receiver.url("/hooks"))
    _, secret_b = register(api, receiver.url("/succeeded"), event_types=["upgrade.succeeded"])
    shops = several_upgrades(api)
    events = api.events()
    assert len({e["shop_id"] for e in events}) == 3

    lanes = {(d["endpoint_id"], d["shop_id"]) for d in _after_fan_out(api, policy)}
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


def test_r61_two_workers_never_send_a_shops_events_at_once_or_out_of_order(hooks, receiver):
    api, policy = hooks(max_attempts=50)
    register(api, receiver.url())
    receiver.delay = 0.02
    receiver.start()
    subject_id = api.subject()
    shops = [api.ready_shop(subject_id)[1] for _ in range(4)]
    for shop_id in shops:
        api.upgrade(shop_id)
    events = api.events()
    stop = threading.Event()
    errors: list[BaseException] = []

    def work():
        try:
            with httpx.Client() as client:
                while not stop.is_set():
                    worker.run_once(policy, client)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    # Once every delivery is settled the workers are stopped and joined: nothing can be sent after that, so the
    # receiver's log is final without a grace period to guess.
    deadline = time.monotonic() + 60
    while len(deliveries(api, "delivered")) < len(events):
        assert time.monotonic() < deadline and not errors, errors
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert receiver.overlaps == []
    ids = [r["headers"]["webhook-id"] for r in receiver.received()]
    assert sorted(ids) == sorted(e["event_id"] for e in events), "each delivery sent exactly once"
    seq_of = {e["event_id"]: n for n, e in enumerate(events)}
    for shop_id in shops:
        arrived = [seq_of[r["headers"]["webhook-id"]] for r in receiver.received() if r["lane"][1] == shop_id]
        assert arrived == sorted(arrived)


def test_r61_a_batch_outlasting_its_lease_is_not_sent_twice(hooks, receiver):
    """A worker that claimed more than it can send before its lease runs out leaves the rest to others
    instead of sending them while another worker does.

    Deterministic: both workers run on one clock that moves only when a request is sent. Worker A claims the
    head of every shop's lane and sends them one by one; each of its requests takes one second, and while
    it waits on the receiver, worker B runs a whole round (B's own requests take no time: they run beside A's).
    A's lease is 8 s and it sends only while a whole send (4 s) still fits in it: five sends, then it hands the
    rest back and B sends them. Were A to go on sending after its lease ran out, B would claim the delivery A
    is sending and send it too, in the same lane at the same time."""
    api, policy = hooks(max_attempts=50, timeout_seconds=1.0)  # budget 4 × 1 s, lease 2 × budget
    register(api, receiver.url())  # never started: the workers' clients answer in-process
    shops = [api.ready_shop()[1] for _ in range(10)]
    for shop_id in shops:
        assert api.submit(shop_id).status_code == 201
    events = api.events()
    heads = [next(e["event_id"] for e in events if e["shop_id"] == shop_id) for shop_id in shops]
    clock = StepClock()
    sent: list[tuple[str, str]] = []
    in_flight: set[str] = set()
    overlaps: list[str] = []

    def receiver_for(name: str, others: httpx.Client | None):
        def handle(request: httpx.Request) -> httpx.Response:
            lane = json.loads(request.content)["data"]["shop_id"]
            if lane in in_flight:
                overlaps.append(lane)
            in_flight.add(lane)
            sent.append((name, request.headers["webhook-id"]))
            if others is not None:
                clock.advance(1.0)
                worker.run_once(policy, others, clock=clock)
            in_flight.discard(lane)
            return httpx.Response(200)

        return handle

    with (
        httpx.Client(transport=httpx.MockTransport(receiver_for("B", None))) as b,
        httpx.Client(transport=httpx.MockTransport(receiver_for("A", b))) as a,
    ):
        worker.run_once(policy, a, clock=clock)
        sent_by_a = [event_id for name, event_id in sent if name == "A"]
        for _ in range(10):
            if not deliveries(api, "pending"):
                break
            worker.run_once(policy, b, clock=clock)
    assert not deliveries(api, "pending")
    assert overlaps == []
    assert sorted(event_id for _, event_id in sent) == sorted(e["event_id"] for e in events), "each sent exactly once"
    assert sent_by_a == heads[:5], "A sent only while a whole send fitted in its lease"
    assert {event_id for name, event_id in sent if name == "B"} >= set(heads[5:]), "the rest was left to B"


def other_transactions(url: str) -> int:
    """Transactions other connections hold open on the test's database now. SQLite: 1 if another connection
    holds the write lock (every transaction of ours takes it at BEGIN), found without waiting."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return 0
        except sqlite3.OperationalError:
            return 1
        finally:
            conn.close()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND xact_start IS NOT NULL"
                )
            ).scalar_one()
    finally:
        engine.dispose()


def test_r61_a_slow_receiver_does_not_hold_up_the_service(hooks, receiver, database):
    """While a delivery waits on the receiver, the worker holds no database lock: writes go on."""
    api, policy = hooks(timeout_seconds=10.0)
    register(api, receiver.url())
    receiver.hold = threading.Event()
    receiver.start()
    subject_id, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    thread = threading.Thread(target=lambda: rounds(policy, lambda: True))
    thread.start()
    try:
        assert receiver.entered.wait(10)
        assert other_transactions(database) == 0
        api.subject(subject_id, name="送达期间的改名")
    finally:
        receiver.hold.set()
        thread.join(15)
    rounds(policy, nothing_pending(api))
    assert len(receiver.received(ok_only=True)) == len(api.events())


def test_r61_retries_go_on_while_the_sandbox_clock_stands_still(hooks, receiver):
    """A set sandbox clock stands still (API.md); webhook retries still come due."""
    api, policy = hooks(max_attempts=50)
    api.set_clock(dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))))
    register(api, receiver.url())
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    rounds(policy, lambda: any(d["attempts"] >= 3 for d in deliveries(api)), real_time=True)
    receiver.start()
    rounds(policy, nothing_pending(api), real_time=True)
    assert {r["headers"]["webhook-id"] for r in receiver.received(ok_only=True)} == {
        e["event_id"] for e in api.events()
    }


def test_r61_redeliver_works_while_the_sandbox_clock_is_ahead(hooks, receiver):
    api, policy = hooks(max_attempts=1)
    register(api, receiver.url())
    receiver.status = 500
    receiver.start()
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    rounds(policy, lambda: not deliveries(api, "pending"))
    api.set_clock(dt.datetime.now(dt.UTC) + dt.timedelta(days=40))
    receiver.status = 200
    first = min(deliveries(api, "dead"), key=lambda d: d["event_seq"])
    r = api.client.post(f"{API}/admin/webhook-deliveries/{first['delivery_id']}/redeliver", headers=api.admin)
    assert r.status_code == 200, r.text
    rounds(policy, lambda: not deliveries(api, "pending"))
    assert len(receiver.received(ok_only=True)) == 1


def test_r61_a_late_failure_does_not_undo_a_delivery(hooks):
    """At least once: a delivery whose lease ran out may be sent twice; the slower attempt's failure
    must not dead-letter (or reschedule) a delivery another worker already delivered."""
    from guanhao import clock
    from guanhao.db import session_scope

    api, policy = hooks(max_attempts=1)
    register(api, "http://127.0.0.1:9/unused")
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    with session_scope() as session:
        now = clock.real_now()
        service.fan_out(session, now=now)
        [seq, *_] = service.claim(session, now=now, lease=dt.timedelta(seconds=30))
    with session_scope() as session:
        assert service.settle(session, service.Attempt(seq, 200, None), policy, now=now) == "delivered"
    with session_scope() as session:
        assert service.settle(session, service.Attempt(seq, None, "ReadTimeout"), policy, now=now) == "delivered"
    [d] = [d for d in deliveries(api) if d["delivery_id"] == seq]
    assert (d["status"], d["attempts"], d["last_status"]) == ("delivered", 1, 200)


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


# ---------------------------------------------------------------- the ways to run the worker


def _policy_env(tmp_path, monkeypatch, **values):
    from guanhao.policy import DEFAULT_POLICY_PATH

    values = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2} | values
    head, section = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").split("[webhooks]", 1)
    lines = section.splitlines()
    for key, value in values.items():
        [i] = [n for n, line in enumerate(lines) if line.startswith(f"{key} =")]
        lines[i] = f"{key} = {value}"
    path = tmp_path / "policy.toml"
    path.write_text(head + "[webhooks]" + "\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("GUANHAO_POLICY", str(path))


def test_r61_serve_with_deliver_webhooks_delivers(database, tmp_path, monkeypatch, admin_headers, receiver):
    from guanhao.app import create_app

    _policy_env(tmp_path, monkeypatch)
    monkeypatch.setenv("GUANHAO_DELIVER_WEBHOOKS", "1")
    reset_caches()
    receiver.start()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        api = Api(client, admin_headers)
        _, secret = register(api, receiver.url())
        _, shop_id, _ = api.ready_shop()
        api.upgrade(shop_id)
        events = api.events()
        deadline = time.monotonic() + 20
        while len(receiver.received(ok_only=True)) < len(events) and time.monotonic() < deadline:
            time.sleep(0.1)
    got = receiver.received(ok_only=True)
    assert [r["headers"]["webhook-id"] for r in got] == [e["event_id"] for e in events]
    assert all(service.verify(secret, r["headers"], r["body"], now=int(time.time())) for r in got)
    reset_caches()


def test_r61_guanhao_serve_deliver_webhooks(database, tmp_path, monkeypatch, admin_headers, receiver):
    """The real command in its own process, against this test's database."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    _policy_env(tmp_path, monkeypatch)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    receiver.start()
    command = [
        str(Path(sys.executable).with_name("guanhao")),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--deliver-webhooks",
    ]
    proc = subprocess.Popen(
        command, env=os.environ | {"NO_PROXY": "127.0.0.1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if client.get(f"{API}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "guanhao serve did not start"
                time.sleep(0.1)
            api = Api(client, admin_headers)
            _, secret = register(api, receiver.url())
            _, shop_id, _ = api.ready_shop()
            api.upgrade(shop_id)
            events = api.events()
            deadline = time.monotonic() + 60  # the embedded worker is a process starting beside the server
            while len(receiver.received(ok_only=True)) < len(events) and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(15)
    got = receiver.received(ok_only=True)
    assert [r["headers"]["webhook-id"] for r in got] == [e["event_id"] for e in events]
    assert all(service.verify(secret, r["headers"], r["body"], now=int(time.time())) for r in got)


def test_r61_serve_without_the_flag_delivers_nothing(api, receiver):
    receiver.start()
    register(api, receiver.url())
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    time.sleep(1.5)
    assert receiver.received() == []


def test_r61_cli_events_deliver_once(hooks, receiver):
    from guanhao.cli import app as cli

    api, _ = hooks()
    register(api, receiver.url())
    receiver.start()
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    result = CliRunner().invoke(cli, ["events", "deliver", "--once"])
    assert result.exit_code == 0, result.output
    assert "queued" in result.output and "delivered" in result.output
    # one round sends each shop's head: the first event
    assert [r["headers"]["webhook-id"] for r in receiver.received()] == [api.events()[0]["event_id"]]
