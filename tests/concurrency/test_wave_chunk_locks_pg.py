"""R-11: a wave chunk holds its shops FOR UPDATE; when it has to wait for a pool (a sweep or a merchant holds it),
it lets go of them after `wave_lock_wait` (1 s) and redoes the chunk, so that a request for one of its shops never
waits behind it for long. Found by the soak: a submit waited past its 30 s budget for a shop row (55P03) that a
chunk held while it waited itself."""

import threading
import time

import pytest
import sqlalchemy as sa

from guanhao.policy import get_policy
from guanhao.upgrades import quotas, waves
from tests.upgrades.test_wave_workers import idle_api, start  # noqa: F401  (the fixture)

pytestmark = pytest.mark.postgres


def waiting_for_the_pool(sql: sa.Engine) -> None:
    """Until the chunk (having claimed the shop) waits for a lock, or the wave has ended."""
    with sql.connect() as conn:
        for _ in range(600):
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE '%pools%'"
                )
            ).scalar()
            if waiting:
                return
            conn.rollback()
            time.sleep(0.05)


def test_r11_a_chunk_waiting_for_a_pool_lets_go_of_its_shops(idle_api, sql):  # noqa: F811
    api = idle_api
    subject_id, shop_id, _ = api.ready_shop()
    wave_id = start(api, limit=1)
    with sql.connect() as pool_holder, sql.connect() as merchant:
        # Somebody holds the subject's main quota pool (a long sweep, say) — as long as this test likes.
        key = quotas.quota_pool(subject_id, "main")
        pool_holder.execute(sa.text("INSERT INTO pools (key, held) VALUES (:k, 0) ON CONFLICT DO NOTHING"), {"k": key})
        pool_holder.commit()
        pool_holder.execute(sa.text("SELECT held FROM pools WHERE key = :k FOR UPDATE"), {"k": key})

        worker = threading.Thread(target=waves.work, args=(wave_id, get_policy()), daemon=True)
        worker.start()
        waiting_for_the_pool(sql)
        # The chunk claims the shop, then waits for the pool. A request for the shop gets it all the same, long
        # before its budget: the chunk gave it back (before: it held it as long as the pool was held).
        merchant.execute(sa.text("SET lock_timeout = '20s'"))
        got = merchant.execute(sa.text("SELECT id FROM shops WHERE id = :s FOR NO KEY UPDATE"), {"s": shop_id})
        assert got.scalar() == shop_id
        merchant.rollback()

        pool_holder.rollback()  # the pool is free again: the wave goes on and upgrades the shop
        worker.join(timeout=60)
    assert not worker.is_alive()
    r = api.client.get(f"/api/v1/admin/auto-upgrade-waves/{wave_id}", headers=api.admin)
    assert (r.json()["status"], r.json()["upgraded"]) == ("done", 1)
