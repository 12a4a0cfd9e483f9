"""R-15 with nobody typing a command: a running worker records the expiry of an application past its
confirmation deadline by itself (issue 7, items 2 and 6)."""

import datetime as dt
import time

from sqlalchemy import select

from guanhao.audit.models import AuditEntry
from guanhao.db import session_scope
from guanhao.policy import Policy, get_policy
from guanhao.upgrades.models import Application
from guanhao.worker.runner import Worker

API = "/api/v1"
T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def fast_policy() -> Policy:
    data = get_policy().model_dump()
    data["worker"] |= {"intervals": {"expire-confirmations": 0.05}, "poll_seconds": 0.05}
    return Policy.model_validate(data)


def stored_status(application_id: str) -> str:
    with session_scope(write=False) as session:
        return session.scalar(select(Application.status).where(Application.id == application_id))


def test_r15_a_running_worker_sweeps_an_application_past_its_deadline(api):
    api.set_clock(T0)
    shop_id = api.ready_shop()[1]
    r = api.submit(shop_id)
    assert r.status_code == 201, r.text
    application_id = r.json()["application_id"]

    worker = Worker("w-sweeper", policy=fast_policy(), duties=["expire-confirmations"]).start()
    try:
        time.sleep(0.3)  # it ran a few times already: nothing had lapsed
        assert stored_status(application_id) == "submitted"
        api.set_clock(T0 + dt.timedelta(hours=168, seconds=1))
        deadline = time.monotonic() + 30
        while stored_status(application_id) != "expired":
            assert time.monotonic() < deadline, "the worker did not sweep the lapsed application"
            time.sleep(0.05)
    finally:
        worker.stop()

    with session_scope(write=False) as session:
        trail = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.from_state, AuditEntry.to_state).where(
                AuditEntry.target_id == application_id, AuditEntry.to_state == "expired"
            )
        ).all()
    assert trail == [("job:expire-confirmations", "upgrade.expired", "submitted", "expired")]
    jobs = {i["job"]: i for i in api.client.get(f"{API}/admin/jobs", headers=api.admin).json()["items"]}
    assert jobs["expire-confirmations"]["last_worker"] == "w-sweeper"
    assert jobs["expire-confirmations"]["runs"] >= 2
