"""Benchmark: an auto-upgrade wave against a bare set-based SQL baseline that writes the same rows.

    .venv/bin/python bench/wave.py [--sizes 100000,1000000] [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]

For each size it builds that many shops on a scratch PostgreSQL database (about 30 % qualifying),
runs a wave through guanhao's own code (`guanhao waves run`, in a child process so its peak RSS is
its own), then resets and times plain INSERT … SELECT statements that write the same upgrades
(applications, slots, official-account records), audit rows, outbox events and wave skips.
It prints both times, the ratio (target ≤ 3), shops/s and peak RSS. Not a test.
"""

import argparse
import datetime as dt
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402

WRITTEN = [
    "auto_upgrade_wave_skips",
    "official_accounts",
    "slots",
    "pools",
    "outbox_events",
    "audit_log",
    "upgrade_applications",
    "auto_upgrade_waves",
]


def record_keys(engine: sa.Engine) -> None:
    """The seeds write stand-in ciphertext that no key opens: record this process's keys first, as the first
    command on a new database would (guanhao.keyring), so the commands run on it compare fingerprints."""
    from guanhao import keyring
    from guanhao.settings import get_settings

    keyring.check(engine, *get_settings().keys(), now=dt.datetime.now(dt.UTC))


def build(engine: sa.Engine, shops: int) -> dict:
    """Subjects of three shops each; ~40 % score ≥ 4.6, of which ~3/4 pass every check → ~30 % qualify."""
    record_keys(engine)
    subjects = (shops + 2) // 3
    with engine.begin() as conn:
        conn.execute(
            sa.text("""
            INSERT INTO subjects (id, name, subject_type, cross_border, license_number, license_valid_until, created_at, updated_at)
            SELECT 'bs-' || lpad(g::text, 8, '0'), 'Bench subject ' || g,
                   CASE WHEN g % 10 = 0 THEN 'individual_business' ELSE 'enterprise' END,
                   g % 20 = 0, NULL, NULL, now(), now()
            FROM generate_series(1, :n) g"""),
            {"n": subjects},
        )
        conn.execute(
            sa.text("""
            INSERT INTO accounts (id, nickname, followers, following, posts, status, real_name_verified, violations_90d,
                                  login_phone_enc, holder_name_enc, holder_id_number_enc, holder_phone_enc, holder_id_hash,
                                  created_at, updated_at)
            SELECT 'ba-' || lpad(g::text, 8, '0'), 'bench ' || g, (g::bigint * 7919) % 900000, 0, 0,
                   CASE WHEN g % 17 = 0 THEN 'restricted' ELSE 'normal' END, g % 13 <> 0,
                   CASE WHEN g % 11 = 0 THEN 1 ELSE 0 END,
                   'v1:bench-phone', 'v1:bench-name', 'v1:bench-id', 'v1:bench-phone', md5('h' || g) || md5('o' || g),
                   now(), now()
            FROM generate_series(1, :n) g"""),
            {"n": shops},
        )
        conn.execute(
            sa.text("""
            INSERT INTO shops (id, subject_id, name, shop_type, status, experience_score, official_account_id, created_at, updated_at)
            SELECT 'bshop-' || lpad(g::text, 8, '0'), 'bs-' || lpad((1 + (g - 1) / 3)::text, 8, '0'), 'bench shop ' || g,
                   CASE WHEN g % 50 = 0 THEN 'personal' ELSE 'flagship' END, 'active',
                   CASE WHEN g % 100 < 40 THEN 4.6 + (g % 5) * 0.08 ELSE 3.0 + (g % 15) * 0.1 END,
                   'ba-' || lpad(g::text, 8, '0'), now(), now()
            FROM generate_series(1, :n) g"""),
            {"n": shops},
        )
        conn.execute(sa.text("ANALYZE"))
    return {"subjects": subjects}


def reset(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(WRITTEN)} RESTART IDENTITY CASCADE"))


def run_wave(url: str, shops: int) -> tuple[float, float, dict]:
    env = dict(os.environ, GUANHAO_DATABASE_URL=url, GUANHAO_QUIET_DEV_KEYS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    out = subprocess.run(
        [str(ROOT / ".venv/bin/guanhao"), "waves", "run", "--limit", str(shops), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"wave failed:\n{out.stdout}\n{out.stderr}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in WRITTEN}
    engine.dispose()
    return elapsed, max(peak_kib, before) / 1024, counts


BASELINE = [
    # The plan: every shop the wave would look at, whether it qualifies, and its slot numbers.
    """CREATE TEMP TABLE plan AS
       WITH looked AS (
         SELECT s.id AS shop_id, s.subject_id, a.id AS account_id, a.holder_id_hash, a.holder_name_enc,
                a.holder_id_number_enc, a.holder_phone_enc, a.login_phone_enc, j.subject_type, j.cross_border,
                CASE WHEN s.shop_type = 'personal' THEN 'SHOP_TYPE_NOT_ELIGIBLE'
                     WHEN NOT a.real_name_verified THEN 'ACCOUNT_NOT_VERIFIED'
                     WHEN a.status <> 'normal' THEN 'ACCOUNT_NOT_NORMAL'
                     WHEN a.violations_90d > 0 THEN 'ACCOUNT_HAS_VIOLATIONS' END AS reason
         FROM shops s JOIN accounts a ON a.id = s.official_account_id JOIN subjects j ON j.id = s.subject_id
         WHERE s.experience_score >= 4.6),
       ranked AS (
         SELECT l.*, row_number() OVER (PARTITION BY subject_id ORDER BY shop_id) AS n FROM looked l WHERE reason IS NULL)
       SELECT r.*, 'app_' || substr(md5(r.shop_id), 1, 20) AS app_id,
              CASE WHEN n = 1 THEN 'main'
                   WHEN cross_border THEN 'dedicated'
                   WHEN subject_type = 'individual_business' AND n = 3 THEN 'dedicated'
                   ELSE 'vertical' END AS account_type
       FROM ranked r""",
    """INSERT INTO auto_upgrade_waves (id, status, "limit", min_experience_score, scanned, upgraded, skipped, skip_reasons,
                                       started_by, created_at, updated_at)
       VALUES ('wave_baseline', 'done', 100000000, 4.6, 0, 0, 0, '{}', 'bench', now(), now())""",
    """INSERT INTO upgrade_applications (id, shop_id, account_id, subject_id, origin, status, account_type, type_chosen,
              attempt, reasons, operator_is_holder, operator_name_enc, operator_id_number_enc, operator_phone_enc,
              operator_id_hash, staff_review, wave_id, created_at, updated_at, reviewed_at, finished_at)
       SELECT app_id, shop_id, account_id, subject_id, 'auto', 'succeeded', account_type, false, 1, '[]', true,
              holder_name_enc, holder_id_number_enc, holder_phone_enc, holder_id_hash, NULL, 'wave_baseline',
              now(), now(), now(), now() FROM plan""",
    """INSERT INTO pools (key, held)
       SELECT pool, count(*) FROM (SELECT 'quota:' || subject_id || ':' || account_type AS pool FROM plan
                                   UNION ALL SELECT 'operator:' || holder_id_hash FROM plan) p GROUP BY pool""",
    """INSERT INTO slots (pool, application_id, account_id, created_at)
       SELECT 'quota:' || subject_id || ':' || account_type, app_id, account_id, now() FROM plan
       UNION ALL
       SELECT 'operator:' || holder_id_hash, app_id, account_id, now() FROM plan""",
    """INSERT INTO official_accounts (account_id, shop_id, subject_id, application_id, account_type, origin, upgraded_at,
              cancel_deadline, operator_name_enc, operator_id_number_enc, operator_phone_enc, operator_id_hash,
              operator_since, login_phone_before_enc)
       SELECT account_id, shop_id, subject_id, app_id, account_type, 'auto', now(), now() + interval '30 days',
              holder_name_enc, holder_id_number_enc, holder_phone_enc, holder_id_hash, now(), login_phone_enc FROM plan""",
    # The audit rows with their hash chain (one chain per subject; n orders a subject's upgrades): the
    # same SHA-256 link over the previous hash and the row's canonical content, computed in SQL.
    """CREATE TEMP TABLE trail AS
       SELECT p.*, json_build_object('origin', 'auto', 'wave_id', 'wave_baseline', 'account_type', account_type,
                                     'cancel_deadline', now() + interval '30 days') AS detail
       FROM plan p""",
    """INSERT INTO audit_log (at, actor, action, target_kind, target_id, subject_id, shop_id, from_state, to_state, detail,
                             chain, prev_hash, row_hash)
       WITH RECURSIVE linked AS (
         SELECT t.subject_id, t.n, t.shop_id, t.app_id, t.detail, repeat('0', 64) AS prev_hash,
                encode(sha256(convert_to(repeat('0', 64) || E'\n' || t.app_id || t.shop_id || t.detail::text, 'UTF8')), 'hex') AS row_hash
         FROM trail t WHERE t.n = 1
         UNION ALL
         SELECT t.subject_id, t.n, t.shop_id, t.app_id, t.detail, l.row_hash,
                encode(sha256(convert_to(l.row_hash || E'\n' || t.app_id || t.shop_id || t.detail::text, 'UTF8')), 'hex')
         FROM trail t JOIN linked l ON l.subject_id = t.subject_id AND t.n = l.n + 1)
       SELECT now(), 'wave:wave_baseline', 'upgrade.succeeded', 'upgrade_application', app_id, subject_id, shop_id, NULL,
              'succeeded', detail, subject_id, prev_hash, row_hash
       FROM linked ORDER BY shop_id""",
    """INSERT INTO outbox_events (event_id, type, shop_id, subject_id, at, data)
       SELECT 'evt_' || md5(app_id), 'upgrade.succeeded', shop_id, subject_id, now(),
              json_build_object('application_id', app_id, 'shop_id', shop_id, 'account_id', account_id,
                                'subject_id', subject_id, 'origin', 'auto', 'status', 'succeeded',
                                'account_type', account_type, 'attempt', 1, 'reasons', json_build_array(),
                                'wave_id', 'wave_baseline', 'cancel_deadline', now() + interval '30 days')
       FROM plan ORDER BY shop_id""",
    """INSERT INTO auto_upgrade_wave_skips (wave_id, shop_id, reason)
       SELECT 'wave_baseline', s.id, 'SKIPPED' FROM shops s JOIN accounts a ON a.id = s.official_account_id
       WHERE s.experience_score >= 4.6 AND NOT EXISTS (SELECT 1 FROM official_accounts o WHERE o.shop_id = s.id)""",
]


def run_baseline(engine: sa.Engine) -> tuple[float, int]:
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in BASELINE:
            conn.execute(sa.text(statement))
        upgraded = conn.execute(sa.text("SELECT count(*) FROM plan")).scalar()
    return time.perf_counter() - started, upgraded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument(
        "--url",
        default=os.environ.get("GUANHAO_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()

    from guanhao import migrate

    os.environ.setdefault("GUANHAO_QUIET_DEV_KEYS", "1")

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        url = scratch_database(args.url, f"guanhao_bench_{size}")
        engine = sa.create_engine(url)
        migrate.upgrade(engine)
        t0 = time.perf_counter()
        build(engine, size)
        print(f"[{size:,} shops] built in {time.perf_counter() - t0:.1f} s", flush=True)

        wave_s, rss_mib, counts = run_wave(url, size)
        upgraded = counts["official_accounts"]
        print(f"[{size:,} shops] wave: {wave_s:.1f} s, {upgraded:,} upgraded, peak RSS {rss_mib:.0f} MiB", flush=True)
        reset(engine)
        base_s, base_upgraded = run_baseline(engine)
        print(f"[{size:,} shops] baseline SQL: {base_s:.1f} s, {base_upgraded:,} upgraded", flush=True)
        if base_upgraded != upgraded:
            print(f"  WARNING: the baseline upgraded {base_upgraded:,}, the wave {upgraded:,}")
        rows.append((size, upgraded, wave_s, base_s, rss_mib))
        engine.dispose()

    print()
    print(f"{'shops':>10} {'upgraded':>9} {'wave s':>8} {'baseline s':>10} {'ratio':>6} {'shops/s':>9} {'peak RSS':>9}")
    for size, upgraded, wave_s, base_s, rss in rows:
        print(
            f"{size:>10,} {upgraded:>9,} {wave_s:>8.1f} {base_s:>10.1f} {wave_s / base_s:>6.2f} {size / wave_s:>9,.0f} {rss:>7.0f} MiB"
        )


if __name__ == "__main__":
    main()
