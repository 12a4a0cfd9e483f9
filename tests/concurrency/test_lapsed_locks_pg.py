"""Found by the soak (issue 8): a submit locked its pools, then waited for the lapsed applications holding
them — while the sweep, holding such an application, released its places into those same pools. A circle:
PostgreSQL killed one of them (deadlock detected → 503). The lock order is now an application, then the
pools in key order, and no pool after that; a lapsed holder another transaction holds is skipped (R-15)."""

import datetime as dt
import threading
import time

import pytest
import sqlalchemy as sa

from tests.concurrency.test_races import scalar, seed

pytestmark = pytest.mark.postgres

API = "/api/v1"
WAITING = """SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"""


def test_a_submit_never_waits_in_a_circle_with_the_sweep_releasing_a_lapsed_holder(
    live_server, driver, admin_headers, sql
):
    """R-15, R-33: shop 1's application lapsed holding the subject's main slot. The sweep has locked it and is
    about to give the slot back when shop 2 of the same subject applies: the submit answers (the main slot
    still counts until released: it falls back to vertical), and the sweep's release then goes through."""
    (subject_id, shop1, _), (_, shop2, _) = seed(driver, subjects=1, shops_per_subject=2)
    driver.set_clock(dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC))
    lapsed = driver.submit(shop1).json()["application_id"]
    driver.set_clock(dt.datetime(2026, 3, 18, 2, 0, tzinfo=dt.UTC))  # past the 168 h deadline

    sweep = sql.connect()
    sweep.execute(sa.text("SELECT 1 FROM upgrade_applications WHERE id = :a FOR UPDATE"), {"a": lapsed})
    answers = []
    submit = threading.Thread(target=lambda: answers.append(driver.submit(shop2)))
    submit.start()
    while submit.is_alive() and scalar(sql, WAITING) == 0:
        time.sleep(0.01)
    try:
        # The sweep gives back the slot: before the fix the submit held this pool and waited for our row.
        sweep.execute(sa.text("UPDATE pools SET held = held - 1 WHERE key = :p"), {"p": f"quota:{subject_id}:main"})
        sweep.execute(sa.text("DELETE FROM slots WHERE application_id = :a AND pool LIKE 'quota:%'"), {"a": lapsed})
        sweep.rollback()
    finally:
        sweep.close()
        submit.join(timeout=30)
    (r,) = answers
    assert r.status_code == 201, r.text
    assert r.json()["account_type"] == "vertical"
