"""Found by the soak (issue 8): verifying a code locked the pending change, then the account's record; a
request for a new code locks the record, then supersedes the pending change. Both at once on one account
were a circle (deadlock detected → 503). Verify now locks the record first (R-24, R-42)."""

import threading
import time

import pytest
import sqlalchemy as sa

from tests.concurrency.test_operators_pg import latest_code
from tests.concurrency.test_races import scalar, seed
from tests.factories import phone

pytestmark = pytest.mark.postgres

API = "/api/v1"
WAITING = """SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"""


def test_a_verify_and_a_request_for_a_new_code_on_one_account_never_wait_in_a_circle(
    live_server, driver, admin_headers, sql
):
    """R-24: the merchant verifies a rebind code while asking for another one. A transaction standing in for
    the request holds the record; the verify waits for it without locking the change first, and the request
    then supersedes the change: the verify answers (the code is no longer valid), nobody gets a 503."""
    ((_, shop_id, _),) = seed(driver, subjects=1, shops_per_subject=1)
    assert driver.upgrade(shop_id)["status"] == "succeeded"
    base = f"{API}/shops/{shop_id}/official-account/phone-rebinds"
    new_phone = phone()
    r = driver.client.post(base, json={"new_phone": new_phone}, headers=admin_headers)
    assert r.status_code == 201, r.text
    rebind_id, code = r.json()["rebind_id"], latest_code(driver, new_phone)

    request = sql.connect()
    request.execute(sa.text("SELECT 1 FROM official_accounts WHERE shop_id = :s FOR UPDATE"), {"s": shop_id})
    answers = []
    verify = threading.Thread(
        target=lambda: answers.append(
            driver.client.post(f"{base}/{rebind_id}/verify", json={"code": code}, headers=admin_headers)
        )
    )
    verify.start()
    while verify.is_alive() and scalar(sql, WAITING) == 0:
        time.sleep(0.01)
    try:
        request.execute(
            sa.text("UPDATE pending_changes SET status = 'superseded' WHERE id = :c AND status = 'pending'"),
            {"c": rebind_id},
        )
        request.commit()
    finally:
        request.close()
        verify.join(timeout=30)
    (r,) = answers
    assert r.status_code == 409 and r.json()["code"] == "CODE_EXPIRED", r.text
    assert scalar(sql, "SELECT status FROM pending_changes WHERE id = :c", c=rebind_id) == "superseded"
    assert scalar(sql, "SELECT count(*) FROM audit_log WHERE action = 'login_phone.changed'") == 0
