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


def test_an_answer_takes_the_shop_before_the_application_as_a_wave_chunk_does(live_server, driver, admin_headers, sql):
    """Found by the soak: a write that ends an application writes its row twice, and PostgreSQL then checks the
    row's foreign key again — KEY SHARE on the shop. Taken last, that closed a circle with a wave chunk, which holds
    its shops FOR UPDATE and then waits for their applications. An expiry now writes the row once; the holder's
    answer (whose review writes it more than once) takes the shop before the application: while a chunk holds the
    shop, the answer waits without holding the application."""
    ((_, shop_id, _),) = seed(driver, subjects=1, shops_per_subject=1)
    application_id = driver.submit(shop_id).json()["application_id"]
    token = driver.token(application_id)

    chunk = sql.connect()
    chunk.execute(sa.text("SELECT 1 FROM shops WHERE id = :s FOR UPDATE"), {"s": shop_id})
    answers = []
    answer = threading.Thread(target=lambda: answers.append(driver.client.post(f"{API}/confirmations/{token}/accept")))
    answer.start()
    try:
        while answer.is_alive() and scalar(sql, WAITING) == 0:
            time.sleep(0.01)
        time.sleep(0.2)  # were the answer to lock the application first, it would have by now
        with sql.connect() as other:
            # The chunk's next step: the shop's application, which the waiting answer must not hold.
            other.execute(sa.text("SET lock_timeout = '500ms'"))
            other.execute(sa.text("SELECT 1 FROM upgrade_applications WHERE id = :a FOR UPDATE"), {"a": application_id})
            other.rollback()
    finally:
        chunk.rollback()
        chunk.close()
        answer.join(timeout=30)
    (r,) = answers
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
