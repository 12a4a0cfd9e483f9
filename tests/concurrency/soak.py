"""The soak's machinery (issue 8, "A soak with everything at once"): a real `guanhao serve --workers 4`,
background workers, a webhook sink, a small world of subjects, shops, accounts and operators that every
client aims at, the clients themselves, and the invariants checked in SQL afterwards.

Every request goes through `Soak.call`, which counts it by action, status and code and records as a
violation any 5xx, any transport failure and any refusal that is not problem+json with a known code.
`soak_checks.invariants` returns the violations it finds in the database; the test asserts that both lists are
empty. The processes (server, workers, lock watch, webhook sink) are in `soak_processes`.
"""

import datetime as dt
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

import guanhao.app  # noqa: F401  (imports every router, so every error class is known)
from guanhao import errors
from tests.factories import person, phone

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
