"""The soak's machinery (issue 8, "A soak with everything at once"): a real `guanhao serve --workers 4`,
background workers, a webhook sink, a small world of subjects, shops, accounts and operators that every
client aims at, the clients themselves, and the invariants checked in SQL afterwards.

Every request goes through `Soak.call`, which counts it by action, status and code and records as a
violation any 5xx, any transport failure and any refusal that is not problem+json with a known code.
`invariants` returns the violations it finds in the database; the test asserts that both lists are empty.
"""

import contextlib
import datetime as dt
import http.server
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

import guanhao.app  # noqa: F401  (imports every router, so every error class is known)
from guanhao import errors
from guanhao.policy import get_policy
from guanhao.upgrades import quotas, rules
from tests.factories import person, phone

GUANHAO = str(Path(sys.executable).parent / "guanhao")
API = "/api/v1"
START = dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC)  # 10:00 in Beijing: a whole posting day ahead

TRANSITION_ACTIONS = tuple(
    f"upgrade.{s}" for s in ("submitted", "reviewing", "succeeded", "rejected", "expired", "withdrawn", "cancelled")
)


def known_codes() -> set[str]:
    """Every code a refusal may carry: the error classes' codes (the API.md table and the ones added since)."""
    found, todo = set(), [errors.DomainError]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.status < 500:
            found.add(cls.code)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(database_url: str, var_dir: Path) -> dict[str, str]:
    """The environment of the server and the workers: the test's database, small connection pools (the
    shared PostgreSQL allows about 100 clients in all: 4 × 10 here, 2 × 4 for the workers), quiet logs."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return env | {
        "GUANHAO_DATABASE_URL": database_url,
        "GUANHAO_VAR_DIR": str(var_dir),
        "GUANHAO_DB_POOL_SIZE": "8",
        "GUANHAO_DB_MAX_OVERFLOW": "2",
        # A budget that a 2-core machine shared with other work does not exceed by mere load: the soak is about
        # correctness. A deadlock is still a 503 at once (PostgreSQL detects it after deadlock_timeout).
        "GUANHAO_DB_BUSY_TIMEOUT": "30",
        "GUANHAO_LOG_LEVEL": "WARNING",
        "GUANHAO_QUIET_DEV_KEYS": "1",
    }


@contextlib.contextmanager
def serving(env: dict[str, str], log_path: Path, *, workers: int) -> Iterator[str]:
    """`guanhao serve --workers N --no-worker` on a free port; yields its base URL once /readyz answers 200."""
    port = free_port()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [GUANHAO, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # four workers importing the app on a busy 2-core machine
        while True:
            assert proc.poll() is None, log_path.read_text()[-4000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "guanhao serve did not get ready: " + log_path.read_text()[-4000:]
            time.sleep(0.2)
        yield base
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def background_worker(env: dict[str, str], index: int, log) -> subprocess.Popen:
    """One background worker, `guanhao worker --id soak-N`: waves, webhook deliveries, expiry sweeps, purges."""
    return subprocess.Popen([GUANHAO, "worker", "--id", f"soak-{index}"], env=env, stdout=log, stderr=subprocess.STDOUT)


@contextlib.contextmanager
def background_workers(env: dict[str, str], log_dir: Path, *, count: int) -> Iterator[list[subprocess.Popen]]:
    """`count` background workers; the API runs none of its own (`serve --no-worker`), so these alone run the
    duties."""
    logs = [(log_dir / f"worker-{i}.log").open("w") for i in range(count)]
    # A worker's duties need a few connections, not a request server's pool: the shared PostgreSQL allows about
    # 100 clients in all, and a full server refuses every request (503 on reads too).
    env = env | {"GUANHAO_DB_POOL_SIZE": "3", "GUANHAO_DB_MAX_OVERFLOW": "1"}
    procs = [background_worker(env, i, log) for i, log in enumerate(logs)]
    try:
        yield procs
    finally:
        for proc in procs:
            stop(proc)
        for log in logs:
            log.close()


class LockWatch:
    """Every second, the lock waits longer than `threshold` seconds in the test's database, each with what its
    blockers run (pg_blocking_pids, pg_stat_activity): who holds a row that a request waits for. Printed with
    the report, so a 55P03 (a request past its lock budget) names its cause."""

    QUERY = """
        SELECT w.pid, now() - w.query_start AS waited, left(w.query, 160) AS query,
               b.pid AS blocker, b.state AS blocker_state, now() - b.xact_start AS blocker_xact,
               left(b.query, 200) AS blocker_query
        FROM pg_stat_activity w
        CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocking(pid)
        JOIN pg_stat_activity b ON b.pid = blocking.pid
        WHERE w.datname = current_database() AND w.wait_event_type = 'Lock'
          AND now() - w.query_start > make_interval(secs => :threshold)
    """

    def __init__(self, sql: sa.Engine, *, threshold: float = 5.0) -> None:
        self.sql, self.threshold = sql, threshold
        self.seen: dict[tuple, tuple[float, str]] = {}  # (waiter, blocker, query) → the longest sighting
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="soak-lockwatch", daemon=True)

    def watch(self) -> None:
        while not self.done.wait(1.0):
            with contextlib.suppress(sa.exc.SQLAlchemyError), self.sql.connect() as conn:
                for r in conn.execute(sa.text(self.QUERY), {"threshold": self.threshold}):
                    self.seen[(r.pid, r.blocker, r.query)] = (
                        r.waited.total_seconds(),
                        f"{r.waited.total_seconds():.0f} s: {r.query[:60]!r} waits for pid {r.blocker} "
                        f"({r.blocker_state}, transaction {r.blocker_xact.total_seconds():.0f} s old): "
                        f"{r.blocker_query[:90]!r}",
                    )

    def __enter__(self) -> "LockWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def report(self, most: int = 8) -> list[str]:
        """The `most` longest waits seen (each waiter counted once per blocker)."""
        longest = sorted(self.seen.values(), reverse=True)
        lines = [f"lock waits over {self.threshold:.0f} s: {len(longest)}"]
        return lines + [f"  {text}" for _, text in longest[:most]]


class Sink:
    """A webhook endpoint on loopback (sandbox mode allows it): counts each delivery by its webhook-id."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        lock = threading.Lock()
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    received[self.headers.get("webhook-id", "")] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Sink":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- the world the clients fight over


@dataclass
class Account:
    id: str
    shop_id: str | None
    subject_id: str
    holder: dict
    login_phone: str


@dataclass
class World:
    subjects: list[str]
    merchants: dict[str, dict]  # subject id → merchant headers
    shops: dict[str, str]  # shop id → subject id (bound ones and spare ones)
    accounts: dict[str, Account]
    spare_shops: list[str]
    spare_accounts: list[str]
    operators: list[dict]  # the few people named as operators everywhere (R-41: 5 places each)
    posting_accounts: list[str]


SUBJECTS = 4
SHOPS_PER_SUBJECT = 10  # more shops than the 6 slots (8 with the follower bonus)
SPARE_SHOPS_PER_SUBJECT = 2
SPARE_ACCOUNTS = 6
FOLLOWERS = (40_000, 150_000)  # 10 × 150k ≥ 1M: the bonus slots come and go with the syncs


def build_world(client: httpx.Client, admin: dict) -> World:
    """The subjects, shops and accounts, in one NDJSON import; a merchant key per subject."""
    tag = uuid.uuid4().hex[:6]
    lines: list[dict] = []
    subjects, shops, accounts, spare_shops, spare_accounts = [], {}, {}, [], []
    for s in range(SUBJECTS):
        subject_id = f"soak-{tag}-s{s}"
        subjects.append(subject_id)
        lines.append(
            {
                "kind": "subject",
                "id": subject_id,
                "name": "杭州示例科技有限公司",
                "subject_type": "enterprise",
                "cross_border": False,
                "license_valid_until": None,
            }
        )
        for n in range(SHOPS_PER_SUBJECT + SPARE_SHOPS_PER_SUBJECT):
            shop_id = f"{subject_id}-shop{n}"
            shops[shop_id] = subject_id
            lines.append(
                {
                    "kind": "shop",
                    "id": shop_id,
                    "subject_id": subject_id,
                    "name": "示例旗舰店",
                    "shop_type": "flagship",
                    "status": "active",
                    "experience_score": 4.8,
                }
            )
            if n >= SHOPS_PER_SUBJECT:
                spare_shops.append(shop_id)
                continue
            account = Account(f"{shop_id}-acct", shop_id, subject_id, person(), phone())
            accounts[account.id] = account
            lines += [
                account_line(account, FOLLOWERS[1]),
                {"kind": "binding", "shop_id": shop_id, "account_id": account.id},
            ]
    for n in range(SPARE_ACCOUNTS):
        account = Account(f"soak-{tag}-spare{n}", None, "", person(), phone())
        accounts[account.id] = account
        spare_accounts.append(account.id)
        lines.append(account_line(account, FOLLOWERS[0]))
    body = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode()
    r = client.post(
        f"{API}/import", content=body, headers=admin | {"Content-Type": "application/x-ndjson"}, timeout=120
    )
    assert r.status_code == 200 and r.json()["rejected"] == [], r.text
    merchants = {}
    for subject_id in subjects:
        r = client.post(f"{API}/admin/api-keys", json={"role": "merchant", "subject_id": subject_id}, headers=admin)
        assert r.status_code == 201, r.text
        merchants[subject_id] = {"Authorization": f"Bearer {r.json()['token']}"}
    posting = [a.id for a in accounts.values() if a.shop_id and a.shop_id.endswith(("-shop0", "-shop1"))][:6]
    return World(
        subjects,
        merchants,
        shops,
        accounts,
        spare_shops,
        spare_accounts,
        [person(name="赵运营") for _ in range(3)],
        posting,
    )


def account_line(account: Account, followers: int) -> dict:
    return {"kind": "account", "id": account.id} | account_body(account, followers)


def account_body(account: Account, followers: int) -> dict:
    return {
        "nickname": "示例官方号",
        "followers": followers,
        "status": "normal",
        "real_name_verified": True,
        "violations_90d": 0,
        "login_phone": account.login_phone,
        "holder": account.holder,
    }


# ---------------------------------------------------------------- the clients


@dataclass
class Tally:
    """What the clients saw."""

    by_action: Counter = field(default_factory=Counter)  # (action, status, code) → count
    statuses: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    submitted: set[str] = field(default_factory=set)  # application ids answered 201
    posts: Counter = field(default_factory=Counter)  # account id → posts answered 201 (each effect once)
    verified: Counter = field(default_factory=Counter)  # "operator"/"phone" → verifications answered 200
    waves: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, base: str, admin: dict, world: World, *, clients: int, requests: int, seed: int = 8):
        self.base, self.admin, self.world = base, admin, world
        self.clients, self.total, self.seed = clients, requests, seed
        self.tally = Tally()
        self.codes = known_codes()
        self.lock = threading.Lock()
        self.sent = 0
        self.apps: list[tuple[str, str]] = []  # (application id, shop id), newest last
        self.wave_marks = [int(requests * 0.3), int(requests * 0.65)]
        self.jump_mark = int(requests * 0.5)  # the clock jumps past the confirmation deadlines
        self.clock = START
        self.jump_asked = self.jump_answered = float("inf")  # when the clock's jump was asked for, answered

    # -- every request
    def call(self, client: httpx.Client, action: str, method: str, path: str, **kwargs) -> httpx.Response | None:
        with self.lock:
            self.sent += 1
        try:
            r = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.violation(f"{action}: {method} {path}: transport error {type(exc).__name__}: {exc}")
            return None
        code = ""
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {}
            code = body.get("code", "?")
            if r.status_code >= 500:
                self.violation(f"{action}: {method} {path} → {r.status_code} {r.text[:300]}")
            elif not r.headers.get("content-type", "").startswith("application/problem+json"):
                self.violation(f"{action}: {method} {path} → {r.status_code} not problem+json: {r.text[:200]}")
            elif body.get("status") != r.status_code or code not in self.codes:
                self.violation(f"{action}: {method} {path} → {r.status_code} unknown code: {r.text[:200]}")
        with self.lock:
            self.tally.by_action[(action, r.status_code, code)] += 1
            self.tally.statuses[r.status_code] += 1
        return r

    def violation(self, text: str) -> None:
        with self.lock:
            self.tally.violations.append(text)

    def left(self) -> bool:
        return self.sent < self.total

    # -- the run
    def run(self) -> float:
        """Every client at once until the budget of requests is spent; returns the seconds it took."""
        start = threading.Barrier(self.clients + 1)
        done = threading.Event()
        threads = [threading.Thread(target=self.client, args=(i, start), daemon=True) for i in range(self.clients)]
        ticker = threading.Thread(target=self.tick, args=(done,), daemon=True)
        for t in threads:
            t.start()
        start.wait(timeout=60)
        began = time.monotonic()
        ticker.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - began
        done.set()
        ticker.join()
        return elapsed

    def client(self, index: int, start: threading.Barrier) -> None:
        rnd = random.Random(self.seed * 1000 + index)
        actions, weights = zip(*ACTIONS, strict=True)
        # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) closes them under a request.
        limits = httpx.Limits(keepalive_expiry=2.0)
        with httpx.Client(base_url=self.base, timeout=60, limits=limits) as client:
            client.get("/healthz")
            start.wait(timeout=60)
            while self.left():
                with self.lock:
                    wave = bool(self.wave_marks) and self.sent >= self.wave_marks[0]
                    if wave:
                        self.wave_marks.pop(0)
                if wave:
                    self.start_wave(client)
                    continue
                rnd.choices(actions, weights)[0](self, client, rnd)

    def tick(self, done: threading.Event) -> None:
        """The service clock moves a minute at a time (SMS cooldowns lapse, codes expire), and once jumps
        past the holders' confirmation deadline (R-15) while accepts are in flight."""
        with httpx.Client(base_url=self.base, timeout=60) as client:
            jumped = False
            while not done.wait(1.0):
                step, jump = dt.timedelta(seconds=61), False
                if not jumped and self.sent >= self.jump_mark:
                    step, jumped, jump = dt.timedelta(hours=169), True, True
                    self.jump_asked = time.monotonic()  # a replay pair overlapping the jump may run anew
                self.clock += step
                self.call(
                    client,
                    "clock",
                    "POST",
                    f"{API}/sandbox/clock",
                    json={"now": self.clock.isoformat()},
                    headers=self.admin,
                )
                if jump:
                    self.jump_answered = time.monotonic()

    # -- helpers of the actions
    def pick_app(self, rnd: random.Random) -> tuple[str, str] | None:
        with self.lock:
            recent = self.apps[-40:]
        return rnd.choice(recent) if recent else None

    def merchant(self, shop_id: str) -> dict:
        return self.world.merchants[self.world.shops[shop_id]]

    def start_wave(self, client: httpx.Client) -> None:
        r = self.call(client, "wave", "POST", f"{API}/admin/auto-upgrade-waves", json={"limit": 6}, headers=self.admin)
        if r is not None and r.status_code == 202:
            with self.lock:
                self.tally.waves.append(r.json()["wave_id"])

    def twice(self, client: httpx.Client, action: str, method: str, path: str, **kwargs) -> list[httpx.Response]:
        """The same request twice with one Idempotency-Key: one effect, the first answer replayed (API.md) —
        unless the service clock jumped past the keys' retention (24 h) in between, when the second may run
        anew. Returns the answers."""
        kwargs["headers"] = kwargs["headers"] | {"Idempotency-Key": uuid.uuid4().hex}
        began = time.monotonic()
        answers = [r for r in (self.call(client, action, method, path, **kwargs) for _ in range(2)) if r is not None]
        created = {r.content for r in answers if r.status_code in (200, 201)}
        jumped = self.jump_asked <= time.monotonic() and began <= self.jump_answered
        if len(created) > 1 and not jumped:
            when = f"pair {began:.2f}–{time.monotonic():.2f}, jump {self.jump_asked:.2f}–{self.jump_answered:.2f}"
            self.violation(
                f"{action}: {path}: a replay with a second effect ({when}): {[r.text[:120] for r in answers]}"
            )
        return answers

    def latest_code(self, client: httpx.Client, action: str, to: str) -> str | None:
        r = self.call(client, action, "GET", f"{API}/sandbox/sms", params={"phone": to}, headers=self.admin)
        if r is None or r.status_code != 200 or not r.json()["items"]:
            return None
        return r.json()["items"][0]["code"]


# ---------------------------------------------------------------- the actions, each a few requests


def submit(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    shop_id = rnd.choice(list(soak.world.shops))
    body: dict = {"agree_terms": True}
    if (account_type := rnd.choice([None, None, None, "main", "vertical", "dedicated"])) is not None:
        body["account_type"] = account_type
    if rnd.random() < 0.5:
        body["operator"] = rnd.choice(soak.world.operators)
    path = f"{API}/shops/{shop_id}/upgrade-applications"
    headers = soak.merchant(shop_id)
    if rnd.random() < 0.15:
        answers = soak.twice(client, "submit", "POST", path, json=body, headers=headers)
    else:
        answers = [r for r in [soak.call(client, "submit", "POST", path, json=body, headers=headers)] if r is not None]
    for r in answers:
        if r.status_code == 201:
            app_id = r.json()["application_id"]
            with soak.lock:
                if app_id not in soak.tally.submitted:
                    soak.tally.submitted.add(app_id)
                    soak.apps.append((app_id, shop_id))


def answer(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    picked = soak.pick_app(rnd)
    if picked is None:
        return submit(soak, client, rnd)
    app_id, _ = picked
    r = soak.call(client, "holder", "GET", f"{API}/admin/upgrade-applications/{app_id}", headers=soak.admin)
    if r is None or r.status_code != 200 or not r.json().get("confirmation_url"):
        return
    token = r.json()["confirmation_url"].rsplit("/", 1)[1]
    verb = "accept" if rnd.random() < 0.8 else "decline"
    soak.call(client, "holder", "POST", f"{API}/confirmations/{token}/{verb}")


def withdraw(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    picked = soak.pick_app(rnd)
    if picked is None:
        return submit(soak, client, rnd)
    app_id, shop_id = picked
    soak.call(
        client, "withdraw", "POST", f"{API}/upgrade-applications/{app_id}/withdraw", headers=soak.merchant(shop_id)
    )


def bound_shop(soak: Soak, rnd: random.Random) -> str:
    return rnd.choice([a.shop_id for a in soak.world.accounts.values() if a.shop_id])


def cancel(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    shop_id = bound_shop(soak, rnd)
    soak.call(
        client,
        "cancel",
        "POST",
        f"{API}/shops/{shop_id}/official-account/cancel-upgrade",
        headers=soak.merchant(shop_id),
    )


def operator_change(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    shop_id = bound_shop(soak, rnd)
    newcomer = rnd.choice(soak.world.operators) if rnd.random() < 0.7 else person()
    base = f"{API}/shops/{shop_id}/official-account/operator-changes"
    headers = soak.merchant(shop_id)
    r = soak.call(client, "operator", "POST", base, json=newcomer, headers=headers)
    if r is None or r.status_code != 201:
        return
    code = soak.latest_code(client, "operator", newcomer["phone"])
    if code is None:
        return
    if rnd.random() < 0.1:
        code = f"{(int(code) + 1) % 10**6:06d}"
    r = soak.call(
        client, "operator", "POST", f"{base}/{r.json()['change_id']}/verify", json={"code": code}, headers=headers
    )
    if r is not None and r.status_code == 200:
        with soak.lock:
            soak.tally.verified["operator"] += 1


def phone_rebind(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    shop_id = bound_shop(soak, rnd)
    new_phone = phone()
    base = f"{API}/shops/{shop_id}/official-account/phone-rebinds"
    headers = soak.merchant(shop_id)
    r = soak.call(client, "phone", "POST", base, json={"new_phone": new_phone}, headers=headers)
    if r is None or r.status_code != 201:
        return
    code = soak.latest_code(client, "phone", new_phone)
    if code is None:
        return
    r = soak.call(
        client, "phone", "POST", f"{base}/{r.json()['rebind_id']}/verify", json={"code": code}, headers=headers
    )
    if r is not None and r.status_code == 200:
        with soak.lock:
            soak.tally.verified["login_phone"] += 1


def post(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    account_id = rnd.choice(soak.world.posting_accounts)
    path = f"{API}/accounts/{account_id}/posts"
    if rnd.random() < 0.15:
        answers = soak.twice(client, "post", "POST", path, headers=soak.admin)
    else:
        answers = [r for r in [soak.call(client, "post", "POST", path, headers=soak.admin)] if r is not None]
    effects = len({r.content for r in answers if r.status_code == 201})  # a replay is the same answer
    with soak.lock:
        soak.tally.posts[account_id] += effects


def sync_account(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    """A platform sync that moves followers across the bonus threshold: quotas go down and up (R-33)."""
    account = soak.world.accounts[rnd.choice(list(soak.world.accounts))]
    body = account_body(account, rnd.choice(FOLLOWERS))
    soak.call(client, "sync", "PUT", f"{API}/accounts/{account.id}", json=body, headers=soak.admin)


def sync_subject(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    """The first subject turns cross-border and back: its vertical quota drops to 0 (R-31)."""
    body = {
        "name": "杭州示例科技有限公司",
        "subject_type": "enterprise",
        "cross_border": rnd.random() < 0.5,
        "license_valid_until": None,
    }
    soak.call(client, "sync", "PUT", f"{API}/subjects/{soak.world.subjects[0]}", json=body, headers=soak.admin)


def bind(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    shop_id, account_id = rnd.choice(soak.world.spare_shops), rnd.choice(soak.world.spare_accounts)
    soak.call(
        client,
        "bind",
        "PUT",
        f"{API}/shops/{shop_id}/official-account",
        json={"account_id": account_id},
        headers=soak.admin,
    )


def read(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    shop_id = rnd.choice(list(soak.world.shops))
    subject_id = soak.world.shops[shop_id]
    path = rnd.choice(
        [
            f"{API}/shops/{shop_id}/official-account",
            f"{API}/shops/{shop_id}/eligibility",
            f"{API}/subjects/{subject_id}/quotas",
            f"{API}/shops/{shop_id}/upgrade-applications",
        ]
    )
    soak.call(client, "read", "GET", path, headers=soak.merchant(shop_id))


def sweep(soak: Soak, client: httpx.Client, rnd: random.Random) -> None:
    job = rnd.choice(["expire-confirmations", "expire-pending-changes"])
    soak.call(client, "job", "POST", f"{API}/admin/jobs/{job}/run", headers=soak.admin)


ACTIONS: list[tuple[Callable[[Soak, httpx.Client, random.Random], None], int]] = [
    (submit, 20),
    (answer, 18),
    (withdraw, 5),
    (cancel, 4),
    (operator_change, 7),
    (phone_rebind, 5),
    (post, 14),
    (sync_account, 8),
    (sync_subject, 1),
    (bind, 3),
    (read, 8),
    (sweep, 1),
]


# ---------------------------------------------------------------- afterwards


def settle(client: httpx.Client, admin: dict, sql: sa.Engine, tally: Tally, *, timeout: float) -> None:
    """Waits for the waves to end and the outbox to be delivered."""
    deadline = time.monotonic() + timeout
    for wave_id in tally.waves:
        while client.get(f"{API}/admin/auto-upgrade-waves/{wave_id}", headers=admin).json()["status"] == "running":
            assert time.monotonic() < deadline, f"wave {wave_id} still running"
            time.sleep(0.2)
    while True:
        with sql.connect() as conn:
            events = conn.execute(sa.text("SELECT count(*) FROM outbox_events")).scalar()
            delivered = conn.execute(
                sa.text("SELECT count(*) FROM webhook_deliveries WHERE status <> 'pending'")
            ).scalar()
        if delivered >= events:
            return
        if time.monotonic() > deadline:
            return  # `invariants` names what is still pending
        time.sleep(0.5)


def invariants(sql: sa.Engine, world: World, tally: Tally, sink: Sink | None) -> list[str]:
    """Every invariant, in SQL; a sentence per violation."""
    policy = get_policy()
    bad: list[str] = []
    with sql.connect() as conn:

        def q(text: str, **params):
            return conn.execute(sa.text(text), params)

        # Quota pools: held is what the slots say, never above the largest quota the subject had.
        most = {
            t: max(
                rules.quota_totals(policy, subject_type="enterprise", cross_border=cb, bound_followers=f)[t]
                for cb in (False, True)
                for f in (0, 10**9)
            )
            for t in ("main", "vertical", "dedicated")
        }
        pools = q("SELECT p.key, p.held, (SELECT count(*) FROM slots s WHERE s.pool = p.key) FROM pools p").all()
        for key, held, used in pools:
            if held != used:
                bad.append(f"pool {key}: held {held} but {used} slots")
            if key.startswith("quota:") and used > most[key.rsplit(":", 1)[1]]:
                bad.append(f"pool {key}: {used} slots over the quota {most[key.rsplit(':', 1)[1]]}")
            if key.startswith("operator:") and used > policy.operators.capacity:
                bad.append(f"pool {key}: {used} operator places over {policy.operators.capacity} (R-41)")

        # Each live application holds its type's slot and its operator's place; an ended one holds nothing.
        operators = dict(q("SELECT application_id, operator_id_hash FROM official_accounts").all())
        held: dict[str, list] = defaultdict(list)
        for app_id, pool, account_id in q("SELECT application_id, pool, account_id FROM slots"):
            held[app_id].append((pool, account_id))
        for app_id, status, subject_id, account_type, account_id, op_hash in q(
            "SELECT id, status, subject_id, account_type, account_id, operator_id_hash FROM upgrade_applications"
        ):
            want = []
            if status in ("submitted", "reviewing", "succeeded"):
                operator = operators.get(app_id, op_hash) if status == "succeeded" else op_hash
                want = sorted(
                    [
                        (quotas.quota_pool(subject_id, account_type), account_id),
                        (quotas.operator_pool(operator), account_id),
                    ]
                )
            if sorted(held.pop(app_id, [])) != want:
                bad.append(f"application {app_id} ({status}) holds {held.get(app_id)} instead of {want}")
        bad += [f"slots of unknown application {a}" for a in held]

        # one application in progress per shop.
        for shop_id, n in q(
            "SELECT shop_id, count(*) FROM upgrade_applications WHERE status IN ('submitted', 'reviewing') "
            "GROUP BY shop_id HAVING count(*) > 1"
        ):
            bad.append(f"shop {shop_id}: {n} applications in progress")

        # one shop per account; one official account per shop, from its succeeded application.
        for account_id, n in q(
            "SELECT official_account_id, count(*) FROM shops WHERE official_account_id IS NOT NULL "
            "GROUP BY official_account_id HAVING count(*) > 1"
        ):
            bad.append(f"account {account_id} bound to {n} shops")
        succeeded = q("SELECT count(*) FROM upgrade_applications WHERE status = 'succeeded'").scalar()
        records = q(
            """SELECT count(*) FROM official_accounts o
               JOIN upgrade_applications a ON a.id = o.application_id AND a.status = 'succeeded'
                    AND a.shop_id = o.shop_id AND a.account_id = o.account_id
               JOIN shops s ON s.id = o.shop_id AND s.official_account_id = o.account_id"""
        ).scalar()
        total_records = q("SELECT count(*) FROM official_accounts").scalar()
        if not succeeded == records == total_records:
            bad.append(f"{succeeded} succeeded applications, {total_records} official accounts, {records} consistent")

        # What the clients were told was created is what the database holds, no more, no less.
        manual = set(q("SELECT id FROM upgrade_applications WHERE origin = 'manual'").scalars())
        if manual != tally.submitted:
            bad.append(
                f"applications: {len(tally.submitted - manual)} answered 201 but missing, "
                f"{len(manual - tally.submitted)} present but never answered 201"
            )

        # posting counters equal the posts accepted, and never pass the limit.
        counted = Counter(dict(q("SELECT account_id, sum(used) FROM posting_counters GROUP BY account_id").all()))
        if +counted != +tally.posts:
            bad.append(f"posting counters {dict(counted)} but posts accepted {dict(tally.posts)}")
        for account_id, day, used in q("SELECT account_id, day, used FROM posting_counters WHERE used > :m", m=100):
            bad.append(f"account {account_id} posted {used} times on {day}")

        # every transition has one audit row and one event, and the rows walk the state
        # machine from the start to the application's state.
        audit_rows = q(
            "SELECT target_id, action, from_state, to_state FROM audit_log "
            "WHERE target_kind = 'upgrade_application' AND action = ANY(:actions) ORDER BY seq",
            actions=list(TRANSITION_ACTIONS),
        ).all()
        trail = Counter((r.target_id, r.action) for r in audit_rows)
        outbox = Counter(
            q(
                "SELECT data->>'application_id', type FROM outbox_events WHERE type = ANY(:types)",
                types=list(TRANSITION_ACTIONS),
            ).all()
        )
        if trail != outbox:
            bad.append(
                f"transitions: audit {sum((trail - outbox).values())} rows without an event, "
                f"{sum((outbox - trail).values())} events without an audit row"
            )
        bad += [f"transition {k} recorded {n} times" for k, n in (trail + outbox).items() if n != 2]
        walked: dict[str, str | None] = {}
        for r in audit_rows:
            if walked.get(r.target_id) != r.from_state:
                bad.append(f"application {r.target_id}: {r.from_state}→{r.to_state} after {walked.get(r.target_id)}")
            walked[r.target_id] = r.to_state
        for app_id, status in q("SELECT id, status FROM upgrade_applications"):
            if walked.get(app_id) != status:
                bad.append(f"application {app_id} is {status}, its trail ends at {walked.get(app_id)}")

        # Operator and login-phone changes: one audit row, one event, one verified change each.
        for kind, action in (("operator", "operator.changed"), ("login_phone", "login_phone.changed")):
            rows = Counter(q("SELECT detail->>'change_id' FROM audit_log WHERE action = :a", a=action).scalars())
            events = Counter(q("SELECT data->>'change_id' FROM outbox_events WHERE type = :a", a=action).scalars())
            changes = Counter(
                q("SELECT id FROM pending_changes WHERE kind = :k AND status = 'verified'", k=kind).scalars()
            )
            if not rows == events == changes or set(rows.values()) - {1}:
                bad.append(f"{action}: {len(rows)} audit rows, {len(events)} events, {len(changes)} verified changes")
            if sum(changes.values()) != tally.verified[kind]:
                bad.append(f"{action}: {sum(changes.values())} verified, {tally.verified[kind]} answered 200")

        # each wave ended, its counter equal to the applications it made.
        for wave_id in tally.waves:
            status, upgraded = q("SELECT status, upgraded FROM auto_upgrade_waves WHERE id = :w", w=wave_id).one()
            made = q("SELECT count(*) FROM upgrade_applications WHERE wave_id = :w", w=wave_id).scalar()
            if status != "done" or upgraded != made:
                bad.append(f"wave {wave_id}: {status}, upgraded {upgraded}, {made} applications")

        # Webhooks: every event delivered (at least once) to the sink.
        if sink is not None:
            ids = set(q("SELECT event_id FROM outbox_events").scalars())
            missing = ids - set(sink.received)
            if missing:
                states = dict(q("SELECT status, count(*) FROM webhook_deliveries GROUP BY status").all())
                bad.append(f"{len(missing)} of {len(ids)} events never reached the sink (deliveries: {states})")

    verify = subprocess.run(
        [GUANHAO, "audit", "verify"], env=dict(os.environ), capture_output=True, text=True, timeout=120
    )
    if verify.returncode != 0 or "audit trail intact" not in verify.stderr + verify.stdout:
        bad.append(f"audit verify: {verify.stdout} {verify.stderr}")
    return bad


def report(tally: Tally, elapsed: float, requests: int, clients: int) -> str:
    lines = [
        f"soak: {requests} requests from {clients} clients in {elapsed:.1f} s ({requests / elapsed:.0f} requests/s)",
        "statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses.items())),
    ]
    per_action: dict[str, Counter] = defaultdict(Counter)
    for (action, status, code), n in tally.by_action.items():
        per_action[action][f"{status}{' ' + code if code else ''}"] += n
    for action, seen in sorted(per_action.items()):
        lines.append(f"  {action:9} " + ", ".join(f"{k}: {n}" for k, n in seen.most_common()))
    lines.append(
        f"applications created {len(tally.submitted)}, posts {sum(tally.posts.values())}, "
        f"verified operator changes {tally.verified['operator']}, phone rebinds {tally.verified['login_phone']}, "
        f"waves {len(tally.waves)}"
    )
    return "\n".join(lines)
