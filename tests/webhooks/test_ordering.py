"""Signed webhooks (SPEC R-61): in order per shop, one worker per shop's lane at a time, leases that run out,
and the clocks the worker reads."""

import datetime as dt
import json
import sqlite3
import threading
import time

import httpx
import sqlalchemy as sa

from guanhao.webhooks import service, worker
from tests.clocks import StepClock
from tests.webhooks.helpers import API, deliveries, nothing_pending, register, rounds


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
