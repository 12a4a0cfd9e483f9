"""`GET /api/v1/admin/jobs` and `POST /api/v1/admin/jobs/{job}/run` (issue 7, item 6): every duty with its
interval, last run and outcome, next run and the worker holding it now."""

import datetime as dt

from guanhao import clock
from guanhao.db import session_scope
from guanhao.worker import scheduler
from guanhao.worker.runner import Worker

API = "/api/v1"
DUTIES = {
    "expire-confirmations": (60.0, False, True),
    "expire-pending-changes": (60.0, False, True),
    "purge-idempotency-keys": (3600.0, False, True),
    "deliver-webhooks": (1.0, True, False),
    "waves": (1.0, True, False),
}


def listing(api) -> dict[str, dict]:
    r = api.client.get(f"{API}/admin/jobs", headers=api.admin)
    assert r.status_code == 200, r.text
    return {item["job"]: item for item in r.json()["items"]}


def test_every_duty_is_listed_with_its_interval_before_any_worker_ran(api):
    items = listing(api)
    assert {name: (i["interval_seconds"], i["shared"], i["runnable"]) for name, i in items.items()} == DUTIES
    sweep = items["purge-idempotency-keys"]
    assert (sweep["runs"], sweep["last_run_at"], sweep["next_run_at"], sweep["lease_holder"]) == (0, None, None, None)


def test_a_run_on_demand_is_the_duty_last_run_and_a_worker_run_moves_the_next_one(api):
    r = api.client.post(f"{API}/admin/jobs/expire-confirmations/run", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json() == {"job": "expire-confirmations", "processed": 0}
    item = listing(api)["expire-confirmations"]
    assert (item["runs"], item["last_outcome"], item["last_processed"]) == (1, "ok", 0)
    assert item["last_worker"].startswith("admin")

    before = clock.real_now()
    Worker("w-http", duties=["expire-pending-changes", "purge-idempotency-keys"]).run_once()
    items = listing(api)
    for name in ("expire-pending-changes", "purge-idempotency-keys"):
        item = items[name]
        assert (item["runs"], item["last_outcome"], item["last_worker"], item["lease_holder"]) == (
            1,
            "ok",
            "w-http",
            None,
        )
        finished = dt.datetime.fromisoformat(item["last_finished_at"])
        assert finished >= before
        assert dt.datetime.fromisoformat(item["next_run_at"]) == finished + dt.timedelta(seconds=DUTIES[name][0])


def test_the_worker_holding_a_duty_is_shown_until_its_lease_ends(api):
    now = clock.real_now()
    with session_scope() as session:
        scheduler.ensure(session, ["expire-confirmations"], now=now)
        assert scheduler.claim(
            session, "expire-confirmations", "w-busy", now=now, lease=dt.timedelta(minutes=5)
        ).claimed
    item = listing(api)["expire-confirmations"]
    assert item["lease_holder"] == "w-busy"
    assert dt.datetime.fromisoformat(item["lease_until"]) == now + dt.timedelta(minutes=5)


def test_the_jobs_are_for_staff_only_and_unknown_jobs_are_refused(api):
    subject_id = api.subject()
    merchant = api.merchant(subject_id)
    assert api.client.get(f"{API}/admin/jobs", headers=merchant).status_code == 403
    assert api.client.get(f"{API}/admin/jobs").status_code == 401
    assert api.client.post(f"{API}/admin/jobs/expire-confirmations/run", headers=merchant).status_code == 403
    r = api.client.post(f"{API}/admin/jobs/waves/run", headers=api.admin)  # a duty, not a job run on demand
    assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR"
