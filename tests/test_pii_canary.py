"""SPEC R-50 canary: distinctive personal data goes in over HTTP through every flow, then we look for it in clear
in every response, the outbox, the audit trail, the logs, every table and (on SQLite) the raw database files.
Masked forms (张*, 138****5678, 110***********1234) are fine; the full value never is."""

import datetime as dt
import io
import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog

from guanhao import logs
from guanhao.pii import id_check_char
from tests.dbdump import snapshot

API = "/api/v1"


def _id(first17: str) -> str:
    return first17 + id_check_char(first17)


# Distinctive values: an area code, dates and names that appear nowhere else in the code or the fixtures.
HOLDER = {"name": "鞠蔻黛", "id_number": _id("37132719870615573"), "phone": "13717171735"}
HOLDER_BIG = {"name": "隗翡翠", "id_number": _id("37132719880716584"), "phone": "13727272746"}
HOLDER_DECLINES = {"name": "乜琥珀", "id_number": _id("37132719890817595"), "phone": "13737373757"}
HOLDER_IMPORTED = {"name": "亓玳瑁", "id_number": _id("37132719900918506"), "phone": "13747474768"}
OPERATOR = {"name": "禚玛瑙", "id_number": _id("37132719911019517"), "phone": "13757575779"}
NEW_OPERATOR = {"name": "暨琉璃", "id_number": _id("37132719921120528"), "phone": "13767676780"}
LOGIN_PHONES = ["13777777791", "13787878702", "13797979713", "13707070724"]
NEW_LOGIN_PHONE = "13719191935"
NEW_LOGIN_PHONE_2 = "13729292946"

PEOPLE = [HOLDER, HOLDER_BIG, HOLDER_DECLINES, HOLDER_IMPORTED, OPERATOR, NEW_OPERATOR]
CANARIES = (
    [p[k] for p in PEOPLE for k in ("name", "id_number", "phone")] + LOGIN_PHONES + [NEW_LOGIN_PHONE, NEW_LOGIN_PHONE_2]
)


def _forms(value: str) -> set[str]:
    """The value as it could appear in text: plain, JSON-escaped (ensure_ascii), and the lower-case x."""
    forms = {value, json.dumps(value)[1:-1], value.lower()}
    return {f for f in forms if f}


def find_canaries(text: str) -> list[str]:
    return sorted({c for c in CANARIES for f in _forms(c) if f in text})


def find_canaries_in_bytes(raw: bytes) -> list[str]:
    hits = set()
    for c in CANARIES:
        for f in _forms(c):
            for encoded in (f.encode("utf-8"), f.encode("utf-16-le")):
                if encoded in raw:
                    hits.add(c)
    return sorted(hits)


def test_canaries_are_distinct_and_valid():
    assert len(set(CANARIES)) == len(CANARIES)
    from guanhao import pii

    for p in PEOPLE:
        assert pii.normalize_id_number(p["id_number"]) == p["id_number"]
        assert pii.normalize_phone(p["phone"]) == p["phone"]
    # the finder works on the masked forms without false alarms
    assert find_canaries(json.dumps(pii.Person(**HOLDER).masked(), ensure_ascii=False)) == []
    assert find_canaries(json.dumps(HOLDER)) == sorted(HOLDER.values())


class Recorder:
    """Every response the client receives, as text."""

    def __init__(self, client):
        self.bodies: list[tuple[str, str]] = []
        original = client.request

        def request(method, url, *args, **kwargs):
            r = original(method, url, *args, **kwargs)
            self.bodies.append(
                (
                    f"{method} {url} → {r.status_code}",
                    r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items()),
                )
            )
            return r

        client.request = request


def _account_body(holder: dict, login_phone: str, **fields) -> dict:
    return {
        "nickname": "金丝雀号",
        "followers": 5000,
        "status": "normal",
        "real_name_verified": True,
        "violations_90d": 0,
        "login_phone": login_phone,
        "holder": holder,
    } | fields


def _route_exists(app, path_suffix: str) -> bool:
    from fastapi import routing

    contexts = routing.iter_route_contexts(app.routes) if hasattr(routing, "iter_route_contexts") else app.routes
    return any(getattr(rc, "path", "").endswith(path_suffix) for rc in contexts)


def _latest_code(api, phone: str) -> str | None:
    r = api.client.get(f"{API}/sandbox/sms", params={"phone": phone}, headers=api.admin)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    return next((m["code"] for m in items if m.get("code")), None)


def _other(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def _drive_everything(api, app) -> None:
    c = api.client
    admin = api.admin
    subject_id = api.subject(name="金丝雀科技有限公司")
    merchant = api.merchant(subject_id)

    # 1. manual upgrade with another operator, holder accepts
    shop_1 = api.shop(subject_id)
    r = c.put(f"{API}/accounts/acct-canary-1", json=_account_body(HOLDER, LOGIN_PHONES[0]), headers=admin)
    assert r.status_code == 201, r.text
    assert api.bind(shop_1, "acct-canary-1").status_code == 200
    r = c.get(f"{API}/shops/{shop_1}/eligibility", headers=merchant)
    assert r.status_code == 200
    r = c.post(
        f"{API}/shops/{shop_1}/upgrade-applications",
        json={"agree_terms": True, "operator": OPERATOR},
        headers=merchant | {"Idempotency-Key": "canary-submit"},
    )
    assert r.status_code == 201, r.text
    app_1 = r.json()["application_id"]
    # replayed from the idempotency store
    r = c.post(
        f"{API}/shops/{shop_1}/upgrade-applications",
        json={"agree_terms": True, "operator": OPERATOR},
        headers=merchant | {"Idempotency-Key": "canary-submit"},
    )
    assert r.headers.get("idempotent-replayed") == "true"
    token = api.token(app_1)
    assert c.get(f"{API}/confirmations/{token}").status_code == 200
    assert c.post(f"{API}/confirmations/{token}/accept").status_code == 200
    assert api.application(app_1, merchant)["status"] == "succeeded"
    view = api.official_account(shop_1, merchant)
    assert view["operator"]["name"] == "禚**"
    c.get(f"{API}/shops/{shop_1}/upgrade-applications", headers=merchant)
    c.get(f"{API}/subjects/{subject_id}/quotas", headers=merchant)
    c.get(f"{API}/admin/upgrade-applications/{app_1}", headers=admin)
    if _route_exists(app, "/official-account/ownership-record"):
        assert c.get(f"{API}/shops/{shop_1}/official-account/ownership-record", headers=merchant).status_code == 200

    # 2. operator change and login phone rebind, confirmed by SMS: refused inputs, a wrong code,
    # a superseded code, then the right one; a second change back to another canary person
    base = f"{API}/shops/{shop_1}/official-account"
    bad_id = NEW_OPERATOR["id_number"][:17] + ("0" if NEW_OPERATOR["id_number"][17] != "0" else "1")
    r = c.post(f"{base}/operator-changes", json=NEW_OPERATOR | {"id_number": bad_id}, headers=merchant)
    assert r.status_code == 422 and r.json()["code"] == "INVALID_ID_NUMBER", r.text
    r = c.post(f"{base}/operator-changes", json=NEW_OPERATOR | {"phone": NEW_OPERATOR["phone"] + "9"}, headers=merchant)
    assert r.status_code == 422 and r.json()["code"] == "INVALID_PHONE", r.text
    r = c.post(f"{base}/operator-changes", json=NEW_OPERATOR | {"extra": NEW_OPERATOR["name"]}, headers=merchant)
    assert r.status_code == 422, r.text
    r = c.post(f"{base}/operator-changes", json=NEW_OPERATOR, headers=merchant)
    assert r.status_code == 201, r.text
    superseded_id = r.json()["change_id"]
    r = c.post(f"{base}/operator-changes", json=NEW_OPERATOR, headers=merchant)
    assert r.status_code == 429, r.text  # the resend cooldown
    api.set_clock(api.now() + dt.timedelta(seconds=61))
    r = c.post(f"{base}/operator-changes", json=NEW_OPERATOR, headers=merchant | {"Idempotency-Key": "canary-operator"})
    assert r.status_code == 201, r.text
    change_id = r.json()["change_id"]
    code = _latest_code(api, NEW_OPERATOR["phone"])
    assert code
    r = c.post(f"{base}/operator-changes/{change_id}/verify", json={"code": _other(code)}, headers=merchant)
    assert r.status_code == 422 and r.json()["code"] == "CODE_INVALID", r.text
    r = c.post(f"{base}/operator-changes/{superseded_id}/verify", json={"code": code}, headers=merchant)
    assert r.status_code == 409, r.text
    r = c.post(f"{base}/operator-changes/{change_id}/verify", json={"code": code}, headers=merchant)
    assert r.status_code == 200, r.text
    assert r.json()["operator"]["name"] == "暨**"
    assert api.official_account(shop_1, merchant)["operator"]["name"] == "暨**"
    r = c.post(f"{base}/operator-changes", json=OPERATOR, headers=merchant)  # and back to the first operator
    assert r.status_code == 201, r.text
    r = c.post(
        f"{base}/operator-changes/{r.json()['change_id']}/verify",
        json={"code": _latest_code(api, OPERATOR["phone"])},
        headers=merchant,
    )
    assert r.status_code == 200, r.text

    r = c.post(f"{base}/phone-rebinds", json={"new_phone": NEW_LOGIN_PHONE + "9"}, headers=merchant)
    assert r.status_code == 422 and r.json()["code"] == "INVALID_PHONE", r.text
    r = c.post(f"{base}/phone-rebinds", json={"new_phone": NEW_LOGIN_PHONE}, headers=merchant)
    assert r.status_code == 201, r.text
    rebind_id = r.json()["rebind_id"]
    code = _latest_code(api, NEW_LOGIN_PHONE)
    assert code
    r = c.post(f"{base}/phone-rebinds/{rebind_id}/verify", json={"code": _other(code)}, headers=merchant)
    assert r.status_code == 422 and r.json()["code"] == "CODE_INVALID", r.text
    r = c.post(
        f"{base}/phone-rebinds/{rebind_id}/verify",
        json={"code": code},
        headers=merchant | {"Idempotency-Key": "canary-rebind"},
    )
    assert r.status_code == 200, r.text
    assert (
        api.official_account(shop_1, merchant)["account"]["login_phone"]
        == NEW_LOGIN_PHONE[:3] + "****" + NEW_LOGIN_PHONE[-4:]
    )
    r = c.post(f"{base}/phone-rebinds", json={"new_phone": NEW_LOGIN_PHONE_2}, headers=merchant)
    assert r.status_code == 201, r.text
    r = c.post(
        f"{base}/phone-rebinds/{r.json()['rebind_id']}/verify",
        json={"code": _latest_code(api, NEW_LOGIN_PHONE_2)},
        headers=merchant,
    )
    assert r.status_code == 200, r.text
    for kind in ("operator.changed", "login_phone.changed"):
        assert [e for e in api.events(shop_id=shop_1) if e["type"] == kind], kind
    if _route_exists(app, "/ownership-record"):
        c.get(f"{API}/shops/{shop_1}/official-account/ownership-record", headers=merchant)
    api.official_account(shop_1, merchant)

    # 3. staff review path: approve one, reject another
    shop_2 = api.shop(subject_id)
    c.put(
        f"{API}/accounts/acct-canary-2",
        json=_account_body(HOLDER_BIG, LOGIN_PHONES[1], followers=2_000_000),
        headers=admin,
    )
    assert api.bind(shop_2, "acct-canary-2").status_code == 200
    app_2 = api.upgrade(shop_2)
    assert app_2["status"] == "reviewing"
    c.get(f"{API}/admin/review-queue", headers=admin)
    r = c.post(
        f"{API}/admin/upgrade-applications/{app_2['application_id']}/reject",
        json={"reason": "资料待补充"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    app_2b = api.upgrade(shop_2)
    r = c.post(f"{API}/admin/upgrade-applications/{app_2b['application_id']}/approve", headers=admin)
    assert r.status_code == 200, r.text

    # 4. decline path and a withdrawn retry
    shop_3 = api.shop(subject_id)
    c.put(f"{API}/accounts/acct-canary-3", json=_account_body(HOLDER_DECLINES, LOGIN_PHONES[2]), headers=admin)
    assert api.bind(shop_3, "acct-canary-3").status_code == 200
    app_3 = api.submit(shop_3, merchant).json()["application_id"]
    assert api.decline(app_3).status_code == 200
    app_3b = api.submit(shop_3, merchant, operator=OPERATOR).json()["application_id"]
    assert c.post(f"{API}/upgrade-applications/{app_3b}/withdraw", headers=merchant).status_code == 200

    # 5. NDJSON import, with a bad line that carries personal data
    shop_4 = api.shop(subject_id)
    lines = [
        {"kind": "account", "id": "acct-canary-4"} | _account_body(HOLDER_IMPORTED, LOGIN_PHONES[3]),
        {"kind": "binding", "shop_id": shop_4, "account_id": "acct-canary-4"},
        {"kind": "account", "id": "acct-canary-bad"}
        | _account_body(HOLDER_IMPORTED | {"phone": "12" + HOLDER_IMPORTED["phone"][2:]}, LOGIN_PHONES[3]),
        {"kind": "account", "id": "acct-canary-bad2"}
        | _account_body(HOLDER_IMPORTED, LOGIN_PHONES[3], surprise=HOLDER["name"]),
    ]
    body = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode()
    r = c.post(f"{API}/import", content=body, headers=admin | {"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text

    # 6. refused inputs do not echo what was sent
    wrong_check = HOLDER["id_number"][:17] + ("0" if HOLDER["id_number"][17] != "0" else "1")
    r = c.put(
        f"{API}/accounts/acct-canary-5",
        json=_account_body(HOLDER | {"id_number": wrong_check}, LOGIN_PHONES[0]),
        headers=admin,
    )
    assert r.status_code == 422
    r = c.put(f"{API}/accounts/acct-canary-5", json=_account_body(HOLDER, LOGIN_PHONES[0], nickname=""), headers=admin)
    assert r.status_code == 422
    r = c.post(
        f"{API}/shops/{shop_4}/upgrade-applications",
        json={"agree_terms": True, "operator": OPERATOR | {"extra": 1}},
        headers=merchant,
    )
    assert r.status_code == 422

    # 7. the sandbox SMS, the outbox and the audit trail
    for p in PEOPLE:
        c.get(f"{API}/sandbox/sms", params={"phone": p["phone"]}, headers=admin)
    for phone_ in [*LOGIN_PHONES, NEW_LOGIN_PHONE, NEW_LOGIN_PHONE_2]:
        c.get(f"{API}/sandbox/sms", params={"phone": phone_}, headers=admin)
    api.events()
    cursor = None
    while True:
        r = c.get(f"{API}/admin/audit", params={"cursor": cursor} if cursor else {}, headers=admin)
        assert r.status_code == 200
        if not r.json()["items"]:
            break
        cursor = r.json()["next_cursor"]
    for target in (subject_id, shop_1, "acct-canary-1", "acct-canary-2", app_1, app_3):
        api.audit(target)
    for acct in ("acct-canary-1", "acct-canary-2", "acct-canary-3", "acct-canary-4"):
        c.get(f"{API}/accounts/{acct}/posting-quota", headers=admin)
    c.post(f"{API}/admin/jobs/expire-confirmations/run", headers=admin)


@pytest.fixture
def json_logs(caplog):
    """The service's own log configuration (JSON lines), written to a buffer instead of stderr."""
    caplog.set_level(logging.DEBUG)
    buffer = io.StringIO()
    logs.configure("DEBUG", stream=buffer)
    # httpx logs the test client's own request URLs: that is the caller, not the service.
    yield (
        lambda: (
            buffer.getvalue()
            + "\n".join(
                caplog.handler.format(r) for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
            )
        )
    )
    structlog.reset_defaults()


def test_r50_canaries_never_appear_in_clear(api, app, engine, database, json_logs):
    recorder = Recorder(api.client)
    _drive_everything(api, app)

    # responses, including events and audit read over HTTP
    assert len(recorder.bodies) > 50
    leaks = [(where, find_canaries(text)) for where, text in recorder.bodies if find_canaries(text)]
    assert leaks == [], leaks

    # the logs: JSON lines on stderr, and anything through stdlib logging
    log_text = json_logs()
    assert '"event": "request"' in log_text or '"event":"request"' in log_text, "the JSON access log was not captured"
    hits = find_canaries(log_text)
    assert hits == [], "\n".join(line for line in log_text.splitlines() if find_canaries(line))[:3000]

    # every table, every row
    tables = snapshot(engine)
    assert {"accounts", "audit_log", "outbox_events", "upgrade_applications"} <= set(tables)
    for name, rows in tables.items():
        assert find_canaries("\n".join(rows)) == [], f"table {name} holds personal data in clear"

    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
            for name in names:
                text = "\n".join(conn.execute(sa.text(f'SELECT row_to_json(t)::text FROM "{name}" t')).scalars())
                assert find_canaries(text) == [], f"table {name} holds personal data in clear"
    else:
        engine.dispose()
        path = Path(sa.engine.make_url(database).database)
        files = [f for f in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if f.exists()]
        assert path in files
        for f in files:
            assert find_canaries_in_bytes(f.read_bytes()) == [], f"{f.name} holds personal data in clear"
