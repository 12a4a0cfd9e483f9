"""A revoked key is 401 at once, also for requests that race the revoke (issue 8 item 12): eight clients write
with one API key while staff revoke it. Nothing the key does may commit after the revoke: in the audit trail,
whose sequence follows commit order, no row of that key comes after the revoke's own row."""

import threading
import time

import httpx
import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.postgres

API = "/api/v1"
CLIENTS = 8


def test_r60_no_write_of_a_key_commits_after_its_revoke(live_server, driver, admin_headers, sql):
    r = driver.client.post(f"{API}/admin/api-keys", json={"role": "admin", "label": "racer"}, headers=admin_headers)
    assert r.status_code == 201, r.text
    key_id, headers = r.json()["key_id"], {"Authorization": f"Bearer {r.json()['token']}"}
    outcomes: list[int] = []
    lock = threading.Lock()

    def write(n: int) -> None:
        with httpx.Client(base_url=live_server, timeout=30) as client:
            for i in range(10_000):
                r = client.put(
                    f"{API}/subjects/race-{n}",
                    json={"name": f"主体 {i}", "subject_type": "enterprise"},
                    headers=headers,
                )
                with lock:
                    outcomes.append(r.status_code)
                if r.status_code == 401:
                    return
                assert r.status_code in (200, 201), r.text

    threads = [threading.Thread(target=write, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(outcomes) < 20 * CLIENTS and time.monotonic() < deadline:
        time.sleep(0.01)
    r = driver.client.post(f"{API}/admin/api-keys/{key_id}/revoke", headers=admin_headers)
    assert r.status_code == 200, r.text
    after = driver.client.get(f"{API}/admin/api-keys", headers=headers)
    assert after.status_code == 401
    for t in threads:
        t.join(60)
    assert outcomes.count(401) == CLIENTS
    with sql.connect() as conn:
        revoked_seq = conn.execute(
            sa.text("SELECT seq FROM audit_log WHERE action = 'api_key.revoked' AND target_id = :k"), {"k": key_id}
        ).scalar_one()
        written, late = conn.execute(
            sa.text("SELECT count(*), count(*) FILTER (WHERE seq > :s) FROM audit_log WHERE actor = :a"),
            {"s": revoked_seq, "a": f"admin:{key_id}"},
        ).one()
    assert written >= 20 * CLIENTS - CLIENTS
    assert late == 0, f"{late} writes of the key committed after its revoke"
