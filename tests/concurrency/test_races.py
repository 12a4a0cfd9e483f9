"""Invariants under concurrency, raced over real HTTP against a live server and checked in SQL.

Each race releases at least 20 requests together (a barrier over warmed-up clients), then reads
the database directly: the invariant must be held by the database (unique and partial indexes,
row locks), so no interleaving may break it. No race may end in a 5xx, and every refusal is
problem+json with a stable code.
"""

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from guanhao.http import encode_cursor
from tests.factories import Api, ids, person, phone

pytestmark = pytest.mark.postgres

API = "/api/v1"


# ---------------------------------------------------------------- harness


def race(base_url: str, requests: list) -> list[httpx.Response]:
    """Sends every `requests[i](client)` at once, one warmed-up client per thread; returns the responses in order."""
    n = len(requests)
    barrier = threading.Barrier(n)

    def run(i: int) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            client.get(f"{API}/health")  # the connection is open before the start
            barrier.wait(timeout=30)
            return requests[i](client)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def assert_clean(responses: list[httpx.Response], *, ok: set[int], refused: set[str]) -> Counter:
    """No 5xx; every refusal problem+json with one of the expected codes. Returns a count per status/code."""
    outcome = Counter()
    for r in responses:
        assert r.status_code < 500, r.text
        if r.status_code in ok:
            outcome[r.status_code] += 1
            continue
        assert r.headers["content-type"].startswith("application/problem+json"), (r.status_code, r.text)
        body = r.json()
        assert body["status"] == r.status_code and body["code"], body
        assert body["code"] in refused, body
        outcome[body["code"]] += 1
    return outcome


def refusal_codes(r: httpx.Response) -> set[str]:
    """The specific code of a refused submit, or the reason codes of NOT_ELIGIBLE."""
    body = r.json()
    if body["code"] == "NOT_ELIGIBLE":
        return {reason["code"] for reason in body["reasons"]}
    return {body["code"]}


def seed(
    driver: Api, *, subjects: int, shops_per_subject: int, subject_type: str = "enterprise"
) -> list[tuple[str, str, str]]:
    """(subject_id, shop_id, account_id) of ready shops, each account with its own holder; one bulk import."""
    lines, out = [], []
    for _ in range(subjects):
        subject_id = ids("subj")
        lines.append(
            {
                "kind": "subject",
                "id": subject_id,
                "name": "杭州示例科技有限公司",
                "subject_type": subject_type,
                "cross_border": False,
                "license_valid_until": None,
            }
        )
        for _ in range(shops_per_subject):
            shop_id, account_id = ids("shop"), ids("acct")
            lines += [
                {
                    "kind": "shop",
                    "id": shop_id,
                    "subject_id": subject_id,
                    "name": "示例旗舰店",
                    "shop_type": "flagship",
                    "status": "active",
                    "experience_score": 4.8,
                },
                # Few followers: no follower bonus slot, no staff review.
                {
                    "kind": "account",
                    "id": account_id,
                    "nickname": "示例官方号",
                    "followers": 1000,
                    "status": "normal",
                    "real_name_verified": True,
                    "violations_90d": 0,
                    "login_phone": phone(),
                    "holder": person(),
                },
                {"kind": "binding", "shop_id": shop_id, "account_id": account_id},
            ]
            out.append((subject_id, shop_id, account_id))
    body = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode()
    r = driver.client.post(
        f"{API}/import", content=body, headers=driver.admin | {"Content-Type": "application/x-ndjson"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": len(lines), "rejected": []}, r.text
    return out


def submit(shop_id: str, headers: dict, **body):
    payload = {"agree_terms": True} | body
    return lambda client: client.post(f"{API}/shops/{shop_id}/upgrade-applications", json=payload, headers=headers)


def scalar(engine: sa.Engine, query: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(query), params).scalar()


def rows(engine: sa.Engine, query: str, **params) -> list:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(query), params))


# ---------------------------------------------------------------- account-type quotas


def test_explicit_type_quota_holds_under_25_concurrent_submits(live_server, driver, admin_headers, sql):
    """R-32, R-33: 25 shops of one enterprise ask for `dedicated` at once; the quota is 3."""
    shops = seed(driver, subjects=1, shops_per_subject=25)
    subject_id = shops[0][0]

    responses = race(live_server, [submit(shop, admin_headers, account_type="dedicated") for _, shop, _ in shops])

    outcome = assert_clean(responses, ok={201}, refused={"TYPE_QUOTA_EXHAUSTED", "NOT_ELIGIBLE"})
    assert outcome[201] == 3, outcome
    for r in responses:
        if r.status_code == 201:
            assert r.json()["account_type"] == "dedicated"
        else:
            assert refusal_codes(r) == {"TYPE_QUOTA_EXHAUSTED"}, r.text
    assert scalar(sql, "SELECT count(*) FROM slots WHERE pool = :p", p=f"quota:{subject_id}:dedicated") == 3
    assert scalar(sql, "SELECT count(*) FROM slots WHERE pool LIKE :p", p=f"quota:{subject_id}:%") == 3
    assert scalar(sql, "SELECT count(*) FROM upgrade_applications WHERE subject_id = :s", s=subject_id) == 3
    assert scalar(sql, "SELECT held FROM pools WHERE key = :p", p=f"quota:{subject_id}:dedicated") == 3


def test_fallback_fills_every_type_exactly_under_25_concurrent_submits(live_server, driver, admin_headers, sql):
    """R-32, R-33: with no type chosen, 25 shops at once fill main 1, vertical 2, dedicated 3 and no more."""
    shops = seed(driver, subjects=1, shops_per_subject=25)
    subject_id = shops[0][0]

    responses = race(live_server, [submit(shop, admin_headers) for _, shop, _ in shops])

    outcome = assert_clean(responses, ok={201}, refused={"QUOTA_EXHAUSTED", "NOT_ELIGIBLE"})
    assert outcome[201] == 6, outcome
    accepted = Counter(r.json()["account_type"] for r in responses if r.status_code == 201)
    assert accepted == {"main": 1, "vertical": 2, "dedicated": 3}
    for r in responses:
        if r.status_code != 201:
            assert refusal_codes(r) == {"QUOTA_EXHAUSTED"}, r.text
    used = dict(
        rows(sql, "SELECT pool, count(*) FROM slots WHERE pool LIKE :p GROUP BY pool", p=f"quota:{subject_id}:%")
    )
    assert used == {
        f"quota:{subject_id}:main": 1,
        f"quota:{subject_id}:vertical": 2,
        f"quota:{subject_id}:dedicated": 3,
    }
    by_type = dict(
        rows(
            sql,
            "SELECT account_type, count(*) FROM upgrade_applications WHERE subject_id = :s GROUP BY account_type",
            s=subject_id,
        )
    )
    assert by_type == {"main": 1, "vertical": 2, "dedicated": 3}

    r = driver.client.get(f"{API}/subjects/{subject_id}/quotas", headers=admin_headers)
    assert r.status_code == 200, r.text
    assert {t: q["used"] for t, q in r.json().items()} == {"main": 1, "vertical": 2, "dedicated": 3}


# ---------------------------------------------------------------- one application in progress per shop


def test_one_application_in_progress_per_shop_under_20_concurrent_submits(live_server, driver, admin_headers, sql):
    """R-19: 20 submits for one shop at once; one is accepted, the others see it in progress."""
    [(subject_id, shop_id, _)] = seed(driver, subjects=1, shops_per_subject=1)
    merchant = driver.merchant(subject_id)

    responses = race(live_server, [submit(shop_id, merchant) for _ in range(20)])

    outcome = assert_clean(responses, ok={201}, refused={"APPLICATION_IN_PROGRESS", "NOT_ELIGIBLE"})
    assert outcome[201] == 1, outcome
    for r in responses:
        if r.status_code != 201:
            assert refusal_codes(r) == {"APPLICATION_IN_PROGRESS"}, r.text
    assert (
        scalar(
            sql,
            "SELECT count(*) FROM upgrade_applications WHERE shop_id = :s AND status IN ('submitted', 'reviewing')",
            s=shop_id,
        )
        == 1
    )
    assert scalar(sql, "SELECT count(*) FROM upgrade_applications WHERE shop_id = :s", s=shop_id) == 1
    assert scalar(sql, "SELECT count(*) FROM slots WHERE pool LIKE :p", p=f"quota:{subject_id}:%") == 1
    assert scalar(sql, "SELECT count(*) FROM slots WHERE pool LIKE 'operator:%'") == 1


# ---------------------------------------------------------------- operator capacity


def test_operator_capacity_holds_across_subjects_under_22_concurrent_submits(live_server, driver, admin_headers, sql):
    """R-41: 22 shops of 22 subjects name the same operator at once; one person operates at most 5."""
    shops = seed(driver, subjects=22, shops_per_subject=1)
    operator = person(name="李运营")

    responses = race(live_server, [submit(shop, admin_headers, operator=operator) for _, shop, _ in shops])

    outcome = assert_clean(responses, ok={201}, refused={"OPERATOR_LIMIT_REACHED", "NOT_ELIGIBLE"})
    assert outcome[201] == 5, outcome
    for r in responses:
        if r.status_code != 201:
            assert refusal_codes(r) == {"OPERATOR_LIMIT_REACHED"}, r.text
    pools = rows(
        sql,
        """SELECT s.pool, count(*), p.held FROM slots s JOIN pools p ON p.key = s.pool
           WHERE s.pool LIKE 'operator:%' GROUP BY s.pool, p.held""",
    )
    assert [(count, held) for _, count, held in pools] == [(5, 5)], pools
    [(pool, _, _)] = pools
    accepted = {r.json()["application_id"] for r in responses if r.status_code == 201}
    assert {a for (a,) in rows(sql, "SELECT application_id FROM slots WHERE pool = :p", p=pool)} == accepted
    # The losers' type slots went back with their rollback.
    assert scalar(sql, "SELECT count(*) FROM slots WHERE pool LIKE 'quota:%'") == 5
    assert scalar(sql, "SELECT count(*) FROM upgrade_applications") == 5


# ---------------------------------------------------------------- one shop per official account


def test_account_binds_to_one_shop_under_20_concurrent_bindings(live_server, driver, admin_headers, sql):
    """R-05: the same account bound to 20 different shops at once; one binding wins."""
    subject_id = driver.subject()
    shops = [driver.shop(subject_id) for _ in range(20)]
    account_id = driver.account()

    def bind(shop_id):
        return lambda client: client.put(
            f"{API}/shops/{shop_id}/official-account", json={"account_id": account_id}, headers=admin_headers
        )

    responses = race(live_server, [bind(shop) for shop in shops])

    outcome = assert_clean(responses, ok={200}, refused={"ACCOUNT_ALREADY_BOUND"})
    assert outcome == {200: 1, "ACCOUNT_ALREADY_BOUND": 19}, outcome
    [winner] = [r.json()["shop_id"] for r in responses if r.status_code == 200]
    assert rows(sql, "SELECT id FROM shops WHERE official_account_id = :a", a=account_id) == [(winner,)]
    assert (
        scalar(
            sql,
            "SELECT count(*) FROM audit_log WHERE action = 'shop.official_account_bound' AND to_state = :a",
            a=account_id,
        )
        == 1
    )


# ---------------------------------------------------------------- Idempotency-Key


def test_same_idempotency_key_20_at_once_has_one_effect(live_server, driver, sql):
    """API.md: 20 identical submits with one Idempotency-Key at once → one application; a retry replays it."""
    [(subject_id, shop_id, _)] = seed(driver, subjects=1, shops_per_subject=1)
    merchant = driver.merchant(subject_id)
    headers = merchant | {"Idempotency-Key": "submit-" + ids("k")}

    responses = race(live_server, [submit(shop_id, headers) for _ in range(20)])

    outcome = assert_clean(responses, ok={201}, refused={"IDEMPOTENCY_KEY_IN_FLIGHT"})
    assert outcome[201] >= 1, outcome
    bodies = {r.text for r in responses if r.status_code == 201}
    assert len(bodies) == 1, bodies
    [first] = bodies
    assert scalar(sql, "SELECT count(*) FROM upgrade_applications WHERE shop_id = :s", s=shop_id) == 1
    assert (
        scalar(sql, "SELECT count(*) FROM outbox_events WHERE shop_id = :s AND type = 'upgrade.submitted'", s=shop_id)
        == 1
    )

    retry = submit(shop_id, headers)(driver.client)
    assert retry.status_code == 201, retry.text
    assert retry.headers.get("idempotent-replayed") == "true"
    assert retry.json() == json.loads(first)
    assert scalar(sql, "SELECT count(*) FROM upgrade_applications WHERE shop_id = :s", s=shop_id) == 1


# ---------------------------------------------------------------- the holder's confirmation


def test_holder_accepts_20_at_once_succeed_once(live_server, driver, admin_headers, sql):
    """R-15, R-20: 20 accepts of one confirmation token at once; one moves the application, the rest are refused."""
    [(_, shop_id, _)] = seed(driver, subjects=1, shops_per_subject=1)
    r = driver.submit(shop_id)
    assert r.status_code == 201, r.text
    app_id = r.json()["application_id"]
    token = driver.token(app_id)

    responses = race(live_server, [lambda client: client.post(f"{API}/confirmations/{token}/accept")] * 20)

    outcome = assert_clean(responses, ok={200}, refused={"INVALID_TRANSITION"})
    assert outcome == {200: 1, "INVALID_TRANSITION": 19}, outcome
    assert scalar(sql, "SELECT status FROM upgrade_applications WHERE id = :a", a=app_id) == "succeeded"
    transitions = rows(sql, "SELECT from_state, to_state FROM audit_log WHERE target_id = :a ORDER BY seq", a=app_id)
    assert transitions == [(None, "submitted"), ("submitted", "reviewing"), ("reviewing", "succeeded")]
    assert scalar(sql, "SELECT count(*) FROM consents WHERE application_id = :a AND party = 'holder'", a=app_id) == 1
    assert scalar(sql, "SELECT count(*) FROM official_accounts WHERE application_id = :a", a=app_id) == 1
    types = [t for (t,) in rows(sql, "SELECT type FROM outbox_events WHERE shop_id = :s ORDER BY seq", s=shop_id)]
    assert types == ["upgrade.submitted", "upgrade.confirmation_requested", "upgrade.reviewing", "upgrade.succeeded"]


# ---------------------------------------------------------------- the outbox in commit order


def test_outbox_reader_misses_nothing_while_30_submits_commit(live_server, driver, admin_headers, sql):
    """R-61: a reader following the outbox during 30 concurrent submits sees every event once, in order."""
    shops = seed(driver, subjects=30, shops_per_subject=1)
    before = scalar(sql, "SELECT coalesce(max(seq), 0) FROM outbox_events")
    stop = threading.Event()
    seen: list[dict] = []

    def follow():
        # A strict consumer: after every page it continues after the last seq it saw, so an event that
        # committed with a lower seq than one already read would be skipped for good.
        with httpx.Client(base_url=live_server, timeout=30) as client:
            last = before
            while True:
                done = stop.is_set()
                r = client.get(
                    f"{API}/admin/events", params={"cursor": encode_cursor(last), "limit": 500}, headers=admin_headers
                )
                assert r.status_code == 200, r.text
                items = r.json()["items"]
                seen.extend(items)
                if items:
                    last = items[-1]["seq"]
                elif done:
                    return
                else:
                    time.sleep(0.002)

    with ThreadPoolExecutor(max_workers=1) as pool:
        follower = pool.submit(follow)
        responses = race(live_server, [submit(shop, admin_headers) for _, shop, _ in shops])
        stop.set()
        follower.result(timeout=30)

    outcome = assert_clean(responses, ok={201}, refused=set())
    assert outcome == {201: 30}, outcome
    expected = rows(sql, "SELECT seq, event_id FROM outbox_events WHERE seq > :b ORDER BY seq", b=before)
    assert len(expected) == 60
    assert [(e["seq"], e["event_id"]) for e in seen] == [tuple(e) for e in expected]

    # Paging with the documented cursor reads the same, strictly increasing.
    paged, cursor = [], None
    while True:
        r = driver.client.get(
            f"{API}/admin/events", params={"limit": 7} | ({"cursor": cursor} if cursor else {}), headers=admin_headers
        )
        assert r.status_code == 200, r.text
        if not r.json()["items"]:  # caught up
            break
        paged += r.json()["items"]
        cursor = r.json()["next_cursor"]
    seqs = [e["seq"] for e in paged]
    assert seqs == sorted(set(seqs))
    assert len(paged) == scalar(sql, "SELECT count(*) FROM outbox_events")
    for _, shop, _ in shops:
        assert [e["type"] for e in paged if e["shop_id"] == shop] == [
            "upgrade.submitted",
            "upgrade.confirmation_requested",
        ]
