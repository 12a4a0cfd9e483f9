"""Calls shared by the webhook tests: registering endpoints, reading deliveries, running worker rounds."""

import json
import time

import httpx

from guanhao.webhooks import service, worker
from tests.clocks import StepClock
from tests.factories import Api, person

API = "/api/v1"


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


def after_fan_out(api: Api, policy) -> list[dict]:
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
