"""Issue 7, items 4 and 6: two `guanhao worker` processes on one database; a wave started over the API; the
worker holding chunks is killed with SIGKILL mid-wave; the other one finishes the wave by itself, with every
invariant of a wave (each eligible shop upgraded once, counters equal to the SQL counts, one audit row and one
event per upgrade and per wave transition, the audit chain intact) and each worker's share adding up."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from bench.wave import record_keys
from guanhao.policy import DEFAULT_POLICY_PATH
from tests.concurrency.test_waves_pg import assert_exactly_once, wave_row
from tests.conftest import is_postgres

GUANHAO = str(Path(sys.executable).parent / "guanhao")


def seed(sql: sa.Engine, shops: int) -> None:
    """bench/wave.py's shops (three a subject, ~30 % qualify), written portably for both databases."""
    if is_postgres():
        from bench.wave import build

        build(sql, shops)
        return
    record_keys(sql)
    now = "2026-03-10 01:00:00.000000"
    subjects = (shops + 2) // 3
    with sql.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO subjects (id, name, subject_type, cross_border, license_number, license_valid_until,"
                " created_at, updated_at) VALUES (:id, :name, :type, :cb, NULL, NULL, :now, :now)"
            ),
            [
                {
                    "id": f"bs-{g:08d}",
                    "name": f"Bench subject {g}",
                    "type": "individual_business" if g % 10 == 0 else "enterprise",
                    "cb": g % 20 == 0,
                    "now": now,
                }
                for g in range(1, subjects + 1)
            ],
        )
        conn.execute(
            sa.text(
                "INSERT INTO accounts (id, nickname, followers, following, posts, status, real_name_verified,"
                " violations_90d, login_phone_enc, holder_name_enc, holder_id_number_enc, holder_phone_enc,"
                " holder_id_hash, created_at, updated_at) VALUES (:id, :nick, :followers, 0, 0, :status, :verified,"
                " :violations, 'v1:bench-phone', 'v1:bench-name', 'v1:bench-id', 'v1:bench-phone', :hash, :now, :now)"
            ),
            [
                {
                    "id": f"ba-{g:08d}",
                    "nick": f"bench {g}",
                    "followers": (g * 7919) % 900000,
                    "status": "restricted" if g % 17 == 0 else "normal",
                    "verified": g % 13 != 0,
                    "violations": 1 if g % 11 == 0 else 0,
                    "hash": hashlib.md5(f"h{g}".encode()).hexdigest() + hashlib.md5(f"o{g}".encode()).hexdigest(),
                    "now": now,
                }
                for g in range(1, shops + 1)
            ],
        )
        conn.execute(
            sa.text(
                "INSERT INTO shops (id, subject_id, name, shop_type, status, experience_score, official_account_id,"
                " created_at, updated_at) VALUES (:id, :subject, :name, :type, 'active', :score, :account, :now, :now)"
            ),
            [
                {
                    "id": f"bshop-{g:08d}",
                    "subject": f"bs-{1 + (g - 1) // 3:08d}",
                    "name": f"bench shop {g}",
                    "type": "personal" if g % 50 == 0 else "flagship",
                    "score": 4.6 + (g % 5) * 0.08 if g % 100 < 40 else 3.0 + (g % 15) * 0.1,
                    "account": f"ba-{g:08d}",
                    "now": now,
                }
                for g in range(1, shops + 1)
            ],
        )


def worker_policy(path: Path, *, chunk: int) -> Path:
    """The default policy with a small wave chunk and quick polling (the schedule only: every rule as shipped)."""
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    text = text.replace("poll_seconds = 1.0", "poll_seconds = 0.1").replace(
        "wave_chunk = 1000", f"wave_chunk = {chunk}"
    )
    text = text.replace("waves = 1.0", "waves = 0.1")
    path.write_text(text, encoding="utf-8")
    return path


def shares(sql: sa.Engine, wave_id: str) -> dict[str, dict]:
    with sql.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT * FROM auto_upgrade_wave_workers WHERE wave_id = :w"), {"w": wave_id}
        ).mappings()
        return {r["worker_id"]: dict(r) for r in rows}


def wait_until(what: str, predicate, *, timeout: float, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def kill_a_worker_mid_wave(sql, live_server, admin_headers, tmp_path, *, shops: int, chunk: int) -> None:
    seed(sql, shops)
    env = dict(os.environ) | {
        "GUANHAO_POLICY": str(worker_policy(tmp_path / "policy.toml", chunk=chunk)),
        "GUANHAO_DB_POOL_SIZE": "4",
        "GUANHAO_LOG_LEVEL": "INFO",
    }
    env.pop("GUANHAO_WORKER", None)
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("w1", "w2")}
    procs = {
        name: subprocess.Popen([GUANHAO, "worker", "--id", name], env=env, stdout=log, stderr=log)
        for name, log in logs.items()
    }
    try:
        with httpx.Client(base_url=live_server, timeout=30, trust_env=False) as client:
            r = client.post("/api/v1/admin/auto-upgrade-waves", json={"limit": 10_000_000}, headers=admin_headers)
            assert r.status_code == 202, r.text
            wave_id = r.json()["wave_id"]

            # A worker has committed chunks of the wave, which is still running: kill the one with more (on SQLite
            # the other one may not have had its turn at the write lock yet).
            def working() -> bool:
                assert all(p.poll() is None for p in procs.values()), [
                    (tmp_path / f"{n}.log").read_text() for n in procs
                ]
                s = shares(sql, wave_id)
                return bool(s) and max(x["chunks"] for x in s.values()) >= 1

            wait_until("a worker to commit chunks", working, timeout=120)
            before = shares(sql, wave_id)
            victim = max(before, key=lambda n: before[n]["chunks"])
            survivor = next(n for n in procs if n != victim)
            os.kill(procs[victim].pid, signal.SIGKILL)
            assert procs[victim].wait(timeout=10) == -signal.SIGKILL
            killed = wave_row(sql, wave_id)
            assert killed["status"] == "running", "the wave ended before the kill: seed more shops"

            # Nobody types a command: the survivor finishes the wave.
            wait_until(
                "the survivor to finish the wave", lambda: wave_row(sql, wave_id)["status"] != "running", timeout=300
            )
            body = client.get(f"/api/v1/admin/auto-upgrade-waves/{wave_id}", headers=admin_headers).json()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()

    assert procs[survivor].returncode == 0, (tmp_path / f"{survivor}.log").read_text()  # graceful stop on SIGTERM
    wave = assert_exactly_once(sql, wave_id)  # every shop once, counters = SQL counts, audit chain verifies

    # Each worker's share was committed with its chunks: the killed one's stops where it died, and they add up.
    after = shares(sql, wave_id)
    assert after[victim]["chunks"] >= before[victim]["chunks"]
    assert after[survivor]["chunks"] > before.get(survivor, {"chunks": 0})["chunks"]
    for figure in ("scanned", "upgraded", "skipped"):
        assert sum(s[figure] for s in after.values()) == wave[figure], figure
    assert {w["worker_id"]: w["chunks"] for w in body["workers"]} == {n: s["chunks"] for n, s in after.items()}

    # One audit row and one event per wave transition: started once, done once.
    with sql.connect() as conn:
        actions = conn.execute(
            sa.text("SELECT action FROM audit_log WHERE target_id = :w ORDER BY seq"), {"w": wave_id}
        ).scalars()
        assert list(actions) == ["wave.started", "wave.done"]


@pytest.mark.postgres
def test_two_workers_on_postgresql_one_killed_mid_wave_the_other_finishes_it(sql, live_server, admin_headers, tmp_path):
    kill_a_worker_mid_wave(sql, live_server, admin_headers, tmp_path, shops=4000, chunk=20)


@pytest.mark.skipif(is_postgres(), reason="the SQLite variant")
def test_two_workers_on_sqlite_one_killed_mid_wave_the_other_finishes_it(sql, live_server, admin_headers, tmp_path):
    kill_a_worker_mid_wave(sql, live_server, admin_headers, tmp_path, shops=3000, chunk=10)
