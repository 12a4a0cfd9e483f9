"""Benchmark: the merchant's official-account read against a raw Starlette + asyncpg ceiling, side by side.

    apt-get install wrk            # Debian's wrk is the load generator (installed here when missing)
    .venv/bin/python bench/read.py [--sizes 10000,1000000] [--duration 10] [--runs 2] [--connections 64]
                                   [--url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--rebuild]

For each size it builds (or reuses, when its marker matches) a PostgreSQL database `guanhao_bench_read_<size>`
with that many shops — subjects of three shops, ~30 % upgraded (with encrypted operators and login phones), ~5 %
with an application in progress (some lapsed), the rest personal — loaded by set-based INSERT … SELECT, and a
merchant API key for 2,000 of its subjects. Beside the real tables it keeps a denormalized copy: one row per shop
holding the JSON the service answers.

Then, in the same run, it starts `guanhao serve --workers 2 --no-worker` (no background worker) and a raw
Starlette + asyncpg app of its own (2 uvicorn workers) that answers the same path with one indexed fetch of
that JSON, and drives both with wrk at 64 connections, alternating runs, each request a random (merchant key,
one of its shops) pair. It checks that both answer the same content for a sample of shops, prints req/s, p50,
p99 and the ratio for each size, measures the other GETs a console page calls (application, eligibility,
quotas) the same way, and ends with one line `read ratio: R` (R the worst official-account ratio of its sizes).
The load average (`uptime`) is printed beside each figure: the machine is shared. Not a test.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import free_port, scratch_database  # noqa: E402

# Fixed keys, so a database built by one run is readable by the next (reuse) and by the service.
PII_KEY = base64.b64encode(hashlib.sha256(b"guanhao bench read pii").digest()).decode()
HASH_KEY = base64.b64encode(hashlib.sha256(b"guanhao bench read hash").digest()).decode()
os.environ.update(GUANHAO_PII_KEY=PII_KEY, GUANHAO_HASH_KEY=HASH_KEY, GUANHAO_SANDBOX="0")

MARKER = "read-bench-v1"
PEOPLE = 997  # distinct encrypted persons, reused round-robin (encrypting 1M in Python would dominate the build)
KEYS = 2000  # merchant API keys, spread over the subjects
RAW_DSN_ENV = "GUANHAO_BENCH_RAW_DSN"
TS = 'YYYY-MM-DD"T"HH24:MI:SS"Z"'  # how the service writes a UTC datetime without fraction (pydantic)


# ---------------------------------------------------------------- the raw ceiling (imported by its uvicorn workers)


def raw_app():
    """Starlette + asyncpg: one indexed fetch of the stored JSON by shop id, nothing else."""
    import asyncpg
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    state: dict = {}

    async def no_reset(_connection):
        return None

    async def startup():
        # No reset on release, as in the service's pool: one round trip per request.
        state["pool"] = await asyncpg.create_pool(os.environ[RAW_DSN_ENV], min_size=8, max_size=8, reset=no_reset)

    async def official(request):
        body = await state["pool"].fetchval(
            "SELECT body FROM bench_raw_official WHERE shop_id = $1", request.path_params["shop_id"]
        )
        if body is None:
            return Response(b'{"code":"NOT_FOUND"}', status_code=404, media_type="application/problem+json")
        return Response(body.encode(), media_type="application/json")

    async def ping(_request):
        return Response(b"ok")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        await startup()
        yield
        await state["pool"].close()

    return Starlette(
        routes=[Route("/api/v1/shops/{shop_id}/official-account", official), Route("/ping", ping)], lifespan=lifespan
    )


# ---------------------------------------------------------------- data


def database(admin_url: str, name: str, *, rebuild: bool, size: int) -> tuple[str, bool]:
    """The database's URL and whether it already holds this bench's data for `size`."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        exists = conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if exists and not rebuild:
            engine = sa.create_engine(url)
            try:
                with engine.connect() as c:
                    marker = c.scalar(sa.text("SELECT marker FROM bench_meta WHERE size = :s"), {"s": size})
            except sa.exc.DBAPIError:
                marker = None
            engine.dispose()
            if marker == MARKER:
                admin.dispose()
                return url, True
    admin.dispose()
    return scratch_database(admin_url, name), False


def people() -> list[dict]:
    from guanhao import pii

    rng = random.Random(7)
    family = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
    given = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"
    v = pii.vault()
    out = []
    for i in range(PEOPLE):
        name = rng.choice(family) + "".join(rng.choice(given) for _ in range(rng.choice((1, 2))))
        first17 = f"{110101 + i % 500:06d}{1960 + i % 40}{1 + i % 12:02d}{1 + i % 28:02d}{i % 1000:03d}"
        id_number = first17 + pii.id_check_char(first17)
        phone = f"13{i % 10}{rng.randrange(10**8):08d}"
        login = f"15{i % 10}{rng.randrange(10**8):08d}"
        out.append(
            {
                "n": i,
                "name_enc": v.encrypt(name, context="person"),
                "id_enc": v.encrypt(id_number, context="person"),
                "phone_enc": v.encrypt(phone, context="person"),
                "id_hash": v.blind_index(id_number, kind="id_number"),
                "login_enc": v.encrypt(login, context="login_phone"),
                "name_m": pii.mask_name(name),
                "id_m": pii.mask_id_number(id_number),
                "phone_m": pii.mask_phone(phone),
                "login_m": pii.mask_phone(login),
            }
        )
    return out


BUILD = [
    """INSERT INTO subjects (id, name, subject_type, cross_border, license_number, license_valid_until, created_at, updated_at)
       SELECT 'bs-' || lpad(g::text, 8, '0'), 'Bench subject ' || g,
              CASE WHEN g % 10 = 0 THEN 'individual_business' ELSE 'enterprise' END,
              g % 20 = 0, NULL, NULL, timestamptz '2026-01-01 00:00:00+00', timestamptz '2026-01-01 00:00:00+00'
       FROM generate_series(1, :subjects) g""",
    """INSERT INTO accounts (id, nickname, followers, following, posts, status, real_name_verified, violations_90d,
                            login_phone_enc, holder_name_enc, holder_id_number_enc, holder_phone_enc, holder_id_hash,
                            created_at, updated_at)
       SELECT 'ba-' || lpad(g::text, 8, '0'), 'bench ' || g, (g::bigint * 7919) % 900000, 0, 0,
              CASE WHEN g % 17 = 0 THEN 'restricted' ELSE 'normal' END, g % 13 <> 0,
              CASE WHEN g % 11 = 0 THEN 1 ELSE 0 END,
              p.login_enc, p.name_enc, p.id_enc, p.phone_enc, p.id_hash,
              timestamptz '2026-01-01 00:00:00+00', timestamptz '2026-01-01 00:00:00+00'
       FROM generate_series(1, :shops) g JOIN bench_people p ON p.n = g % :people""",
    # One shop in 37 has no account bound (the JSON's account is null).
    """INSERT INTO shops (id, subject_id, name, shop_type, status, experience_score, official_account_id, created_at, updated_at)
       SELECT 'bshop-' || lpad(g::text, 8, '0'), 'bs-' || lpad((1 + (g - 1) / 3)::text, 8, '0'), 'bench shop ' || g,
              CASE WHEN g % 50 = 0 THEN 'personal' ELSE 'flagship' END, 'active',
              CASE WHEN g % 100 < 40 THEN 4.6 + (g % 5) * 0.08 ELSE 3.0 + (g % 15) * 0.1 END,
              CASE WHEN g % 37 = 1 THEN NULL ELSE 'ba-' || lpad(g::text, 8, '0') END,
              timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', timestamptz '2026-01-01 00:00:00+00'
       FROM generate_series(1, :shops) g""",
    # The applications: succeeded for the upgraded 30 % (g % 10 in 0, 3, 6), in progress for some others
    # (submitted awaiting the holder — some lapsed —, reviewing), rejected for a few.
    """CREATE TABLE bench_apps AS
       SELECT g, 'bapp-' || lpad(g::text, 8, '0') AS id, 'bshop-' || lpad(g::text, 8, '0') AS shop_id,
              'ba-' || lpad(g::text, 8, '0') AS account_id, 'bs-' || lpad((1 + (g - 1) / 3)::text, 8, '0') AS subject_id,
              CASE WHEN g % 10 IN (0, 3, 6) THEN 'succeeded'
                   WHEN g % 40 IN (1, 21) THEN 'submitted'
                   WHEN g % 30 = 7 THEN 'reviewing'
                   ELSE 'rejected' END AS status,
              CASE WHEN g % 10 IN (0, 3, 6) AND g % 7 <> 0 THEN 'auto' ELSE 'manual' END AS origin,
              (ARRAY['main', 'vertical', 'dedicated'])[1 + g % 3] AS account_type,
              CASE WHEN g % 4 = 0 THEN timestamptz '2026-11-20 00:00:00+00' ELSE timestamptz '2026-10-01 00:00:00+00' END
                + (g % 86400) * interval '1 second' AS at,
              CASE WHEN g % 40 = 1 THEN timestamptz '2036-01-01 00:00:00+00'
                   WHEN g % 40 = 21 THEN timestamptz '2026-01-02 00:00:00+00' END AS expires_at,
              g % :people AS person
       FROM generate_series(1, :shops) g
       WHERE g % 37 <> 1 AND (g % 10 IN (0, 3, 6) OR g % 40 IN (1, 21) OR g % 30 = 7 OR g % 100 = 99)""",
    """INSERT INTO upgrade_applications (id, shop_id, account_id, subject_id, origin, status, account_type, type_chosen,
              attempt, reasons, operator_is_holder, operator_name_enc, operator_id_number_enc, operator_phone_enc,
              operator_id_hash, confirmation_expires_at, staff_review, created_at, updated_at, finished_at)
       SELECT a.id, a.shop_id, a.account_id, a.subject_id, a.origin, a.status, a.account_type, false, 1,
              CASE WHEN a.status = 'rejected' THEN '[{"code": "ACCOUNT_HAS_VIOLATIONS"}]' ELSE '[]' END::json, true,
              p.name_enc, p.id_enc, p.phone_enc, p.id_hash, a.expires_at,
              CASE WHEN a.status = 'reviewing' THEN 'waiting' END, a.at, a.at,
              CASE WHEN a.status IN ('succeeded', 'rejected') THEN a.at END
       FROM bench_apps a JOIN bench_people p ON p.n = a.person""",
    """INSERT INTO official_accounts (account_id, shop_id, subject_id, application_id, account_type, origin, upgraded_at,
              cancel_deadline, operator_name_enc, operator_id_number_enc, operator_phone_enc, operator_id_hash,
              operator_since, login_phone_before_enc)
       SELECT a.account_id, a.shop_id, a.subject_id, a.id, a.account_type, a.origin, a.at, a.at + interval '30 days',
              p.name_enc, p.id_enc, p.phone_enc, p.id_hash, a.at, p.login_enc
       FROM bench_apps a JOIN bench_people p ON p.n = a.person WHERE a.status = 'succeeded'""",
    """INSERT INTO pools (key, held)
       SELECT 'quota:' || subject_id || ':' || account_type, count(*) FROM bench_apps
       WHERE status IN ('succeeded', 'reviewing') OR (status = 'submitted' AND expires_at > now())
       GROUP BY 1""",
    """INSERT INTO slots (pool, application_id, account_id, created_at)
       SELECT 'quota:' || subject_id || ':' || account_type, id, account_id, at FROM bench_apps
       WHERE status IN ('succeeded', 'reviewing') OR (status = 'submitted' AND expires_at > now())""",
]

# The denormalized copy the raw ceiling serves: what the service answers, built in SQL.
RAW = f"""
CREATE TABLE bench_raw_official AS
SELECT s.id AS shop_id, json_build_object(
  'shop_id', s.id,
  'account', CASE WHEN a.id IS NULL THEN NULL ELSE json_build_object(
      'account_id', a.id, 'nickname', a.nickname, 'followers', a.followers, 'login_phone', pl.login_m) END,
  'upgrade_status', CASE WHEN o.account_id IS NOT NULL THEN 'upgraded'
                         WHEN act.id IS NOT NULL THEN 'in_progress' ELSE 'not_upgraded' END,
  'account_type', o.account_type,
  'ownership', CASE WHEN o.account_id IS NOT NULL THEN 'enterprise' ELSE 'personal' END,
  'origin', o.origin,
  'upgraded_at', to_char(o.upgraded_at AT TIME ZONE 'UTC', '{TS}'),
  'operator', CASE WHEN o.account_id IS NULL THEN NULL ELSE json_build_object(
      'name', po.name_m, 'id_number', po.id_m, 'phone', po.phone_m) END,
  'daily_post_limit', CASE WHEN o.account_id IS NOT NULL THEN :after ELSE :before END,
  'can_cancel', o.account_id IS NOT NULL AND o.origin = 'auto' AND now() < o.cancel_deadline,
  'cancel_deadline', to_char(o.cancel_deadline AT TIME ZONE 'UTC', '{TS}'),
  'can_sell_as_official', a.id IS NOT NULL,
  'upgrade_deadline', NULL,
  'active_application_id', CASE WHEN o.account_id IS NULL THEN act.id END)::text AS body
FROM shops s
LEFT JOIN accounts a ON a.id = s.official_account_id
LEFT JOIN bench_people pl ON pl.login_enc = a.login_phone_enc
LEFT JOIN official_accounts o ON o.shop_id = s.id
LEFT JOIN bench_people po ON po.name_enc = o.operator_name_enc
LEFT JOIN upgrade_applications act ON act.shop_id = s.id AND act.status IN ('submitted', 'reviewing')
     AND NOT (act.status = 'submitted' AND act.confirmation_expires_at <= now())
"""


def build(url: str, size: int) -> None:
    from guanhao import migrate
    from guanhao.policy import get_policy

    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    policy = get_policy()
    subjects = (size + 2) // 3
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE bench_people (n int PRIMARY KEY, name_enc text, id_enc text, phone_enc text, "
                "id_hash text, login_enc text, name_m text, id_m text, phone_m text, login_m text)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO bench_people VALUES (:n, :name_enc, :id_enc, :phone_enc, :id_hash, :login_enc, "
                ":name_m, :id_m, :phone_m, :login_m)"
            ),
            people(),
        )
        conn.execute(sa.text("CREATE INDEX ON bench_people (login_enc)"))
        conn.execute(sa.text("CREATE INDEX ON bench_people (name_enc)"))
        params = {"subjects": subjects, "shops": size, "people": PEOPLE}
        for statement in BUILD:
            conn.execute(sa.text(statement), params)
        conn.execute(sa.text(RAW), {"after": policy.posting.limit_after, "before": policy.posting.limit_before})
        conn.execute(sa.text("ALTER TABLE bench_raw_official ADD PRIMARY KEY (shop_id)"))
        add_keys(conn, subjects)
        conn.execute(sa.text("CREATE TABLE bench_meta (size int PRIMARY KEY, marker text)"))
        conn.execute(sa.text("INSERT INTO bench_meta VALUES (:s, :m)"), {"s": size, "m": MARKER})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
        # The build's dirty pages written out now, not by a checkpoint in the middle of the first timed run.
        conn.execute(sa.text("CHECKPOINT"))
    engine.dispose()


def token_of(i: int) -> str:
    return f"gh_mch_bench{i:06d}{hashlib.sha256(f'bench{i}'.encode()).hexdigest()[:24]}"


def add_keys(conn, subjects: int) -> None:
    from guanhao.auth.service import token_hash

    count = min(KEYS, subjects)
    rows = []
    for i in range(count):
        subject = 1 + i * subjects // count
        rows.append(
            {
                "id": f"key_bench{i:06d}",
                "h": token_hash(token_of(i)),
                "s": f"bs-{subject:08d}",
            }
        )
    conn.execute(
        sa.text(
            "INSERT INTO api_keys (id, token_hash, role, subject_id, label, created_at) "
            "VALUES (:id, :h, 'merchant', :s, 'bench', timestamptz '2026-01-01 00:00:00+00')"
        ),
        rows,
    )


def requests_file(url: str, path: Path) -> list[tuple[str, str, str, str]]:
    """One line per (key, shop of its subject): token, shop id, subject id, an application of the subject."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("""
            SELECT k.id, k.subject_id, s.id,
                   (SELECT min(a.id) FROM upgrade_applications a WHERE a.subject_id = k.subject_id)
            FROM api_keys k JOIN shops s ON s.subject_id = k.subject_id
            WHERE k.label = 'bench' ORDER BY k.id, s.id""")
        ).all()
    engine.dispose()
    lines = [
        (token_of(int(key_id[len("key_bench") :])), shop, subject, app or "") for key_id, subject, shop, app in rows
    ]
    path.write_text("".join(f"{t} {s} {j} {a}\n" for t, s, j, a in lines))
    return lines


# ---------------------------------------------------------------- servers and load

LUA = r"""
local reqs = {}
local n = 0
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  math.randomseed(tid * 7919)
  local kind, path = args[1], args[2]
  for line in io.lines(path) do
    local token, shop, subject, app = line:match("^(%S+) (%S+) (%S+) ?(%S*)$")
    local p = nil
    if kind == "official" then p = "/api/v1/shops/" .. shop .. "/official-account"
    elseif kind == "eligibility" then p = "/api/v1/shops/" .. shop .. "/eligibility"
    elseif kind == "quotas" then p = "/api/v1/subjects/" .. subject .. "/quotas"
    elseif kind == "application" and app ~= "" then p = "/api/v1/upgrade-applications/" .. app end
    if p then
      n = n + 1
      reqs[n] = wrk.format("GET", p, {["Host"] = wrk.headers["Host"], ["Authorization"] = "Bearer " .. token})
    end
  end
end
function request()
  return reqs[math.random(n)]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"no answer from {url}")


def start_service(url: str, port: int, workers: int, source: str | None) -> subprocess.Popen:
    env = dict(os.environ, GUANHAO_DATABASE_URL=url, GUANHAO_LOG_LEVEL="INFO", GUANHAO_DB_POOL_SIZE="8")
    if source:  # another checkout's code (e.g. `git archive` of an older commit) ahead of the editable install
        env["PYTHONPATH"] = source
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/guanhao"), "serve", "--port", str(port), "--workers", str(workers), "--no-worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_ready(f"http://127.0.0.1:{port}/api/v1/health", proc)
    return proc


def start_raw(url: str, port: int, workers: int) -> subprocess.Popen:
    dsn = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    env = dict(os.environ, **{RAW_DSN_ENV: dsn})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(ROOT / "bench"),
            "read:raw_app",
            "--factory",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_ready(f"http://127.0.0.1:{port}/ping", proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def load() -> str:
    return os.getloadavg().__repr__() if hasattr(os, "getloadavg") else "?"


def wrk(port: int, kind: str, lua: Path, reqs: Path, *, duration: int, connections: int) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "5s",
            "-s",
            str(lua),
            f"http://127.0.0.1:{port}",
            "--",
            kind,
            str(reqs),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    requests, duration_us, p50, p99, errors = (int(x) for x in line.split()[1:])
    return {
        "rps": requests / (duration_us / 1e6),
        "p50": p50 / 1000,
        "p99": p99 / 1000,
        "errors": errors,
        "load": os.getloadavg()[0],
    }


def compare(svc_port: int, raw_port: int, lines: list, sample: int = 40) -> int:
    """Shops whose JSON differs between the service and the raw copy (parsed, so key order and spacing aside)."""
    rng = random.Random(3)
    bad = 0
    for token, shop, _subject, _app in rng.sample(lines, min(sample, len(lines))):
        got = []
        for port in (svc_port, raw_port):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/shops/{shop}/official-account",
                headers={"Authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                got.append(json.loads(r.read()))
        if got[0] != got[1]:
            bad += 1
            if bad <= 2:
                print(f"  differs for {shop}:\n    service {got[0]}\n    raw     {got[1]}")
    return bad


def fmt(r: dict) -> str:
    return f"{r['rps']:>8,.0f} req/s  p50 {r['p50']:>6.1f} ms  p99 {r['p99']:>6.1f} ms  errors {r['errors']}  load {r['load']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument(
        "--url",
        default=os.environ.get("GUANHAO_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=2, help="alternating runs per server")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--others", action=argparse.BooleanOptionalAction, default=True, help="also the other GETs")
    parser.add_argument("--source", help="serve guanhao from this directory (an export of another commit)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the databases even when they match")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)

    tmp = Path(tempfile.mkdtemp(prefix="guanhao-bench-read-"))
    lua = tmp / "read.lua"
    lua.write_text(LUA)
    summary = []
    for size in (int(s) for s in args.sizes.split(",")):
        url, reused = database(args.url, f"guanhao_bench_read_{size}", rebuild=args.rebuild, size=size)
        if reused:
            print(f"[{size:,} shops] reusing guanhao_bench_read_{size}", flush=True)
        else:
            t0 = time.perf_counter()
            build(url, size)
            print(f"[{size:,} shops] built in {time.perf_counter() - t0:.1f} s", flush=True)
        reqs = tmp / f"requests-{size}.txt"
        lines = requests_file(url, reqs)

        svc_port, raw_port = free_port(), free_port()
        svc = start_service(url, svc_port, args.workers, args.source)
        try:
            raw = start_raw(url, raw_port, args.workers)
            try:
                bad = compare(svc_port, raw_port, lines)
                print(
                    f"[{size:,} shops] same JSON from both on a sample: {'yes' if bad == 0 else f'NO ({bad} differ)'}"
                )
                # Warm both up, then alternate.
                for port in (svc_port, raw_port):
                    wrk(port, "official", lua, reqs, duration=2, connections=args.connections)
                results: dict[str, list[dict]] = {"service": [], "raw": []}
                for run in range(args.runs):
                    order = [("service", svc_port), ("raw", raw_port)]
                    for name, port in order if run % 2 == 0 else order[::-1]:
                        r = wrk(port, "official", lua, reqs, duration=args.duration, connections=args.connections)
                        results[name].append(r)
                        print(f"[{size:,} shops] run {run + 1} {name:<8} {fmt(r)}", flush=True)
                svc_rps = statistics.mean(r["rps"] for r in results["service"])
                raw_rps = statistics.mean(r["rps"] for r in results["raw"])
                row = {
                    "size": size,
                    "svc": svc_rps,
                    "raw": raw_rps,
                    "svc_p50": statistics.median(r["p50"] for r in results["service"]),
                    "svc_p99": max(r["p99"] for r in results["service"]),
                    "raw_p50": statistics.median(r["p50"] for r in results["raw"]),
                    "raw_p99": max(r["p99"] for r in results["raw"]),
                    "ratio": svc_rps / raw_rps,
                    "others": {},
                }
                if args.others:
                    for kind in ("application", "eligibility", "quotas"):
                        r = wrk(
                            svc_port, kind, lua, reqs, duration=max(3, args.duration // 2), connections=args.connections
                        )
                        row["others"][kind] = r
                        print(f"[{size:,} shops] {kind:<11} {fmt(r)}  ratio {r['rps'] / raw_rps:.2f}", flush=True)
                summary.append(row)
            finally:
                stop(raw)
        finally:
            stop(svc)

    print()
    print(
        f"GET /api/v1/shops/{{id}}/official-account, {args.workers} workers each, wrk -t2 -c{args.connections}, merchant keys"
    )
    print(
        f"{'shops':>10} {'service req/s':>14} {'p50':>7} {'p99':>7} {'raw req/s':>10} {'p50':>7} {'p99':>7} {'ratio':>6}"
    )
    for r in summary:
        print(
            f"{r['size']:>10,} {r['svc']:>14,.0f} {r['svc_p50']:>7.1f} {r['svc_p99']:>7.1f} {r['raw']:>10,.0f} "
            f"{r['raw_p50']:>7.1f} {r['raw_p99']:>7.1f} {r['ratio']:>6.2f}"
        )
    if any(r["others"] for r in summary):
        print()
        print("other console GETs (service only; ratio against the raw official-account ceiling of the same size)")
        for r in summary:
            for kind, o in r["others"].items():
                print(f"{r['size']:>10,} {kind:<12} {fmt(o)}  ratio {o['rps'] / r['raw']:.2f}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"read ratio: {min(r['ratio'] for r in summary):.2f}")


if __name__ == "__main__":
    main()
