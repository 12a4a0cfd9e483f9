"""Errors: RFC 9457 problem+json with a stable code (API.md), and a refused request changes nothing (SPEC R-63)."""

import pytest

from tests.dbdump import changed_tables, snapshot
from tests.factories import id_number, person, phone

PROBLEM_KEYS = {"type", "title", "status", "code", "detail"}


def assert_problem(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["type"]
    return body


def account_body(**fields) -> dict:
    return {
        "nickname": "号",
        "followers": 1,
        "status": "normal",
        "real_name_verified": True,
        "violations_90d": 0,
        "login_phone": phone(),
        "holder": person(),
    } | fields


def test_r63_not_found_is_a_problem(client, admin_headers):
    assert_problem(client.get("/api/v1/shops/no-such-shop/official-account", headers=admin_headers), 404, "NOT_FOUND")


def test_unknown_path_is_a_problem(client, admin_headers):
    assert_problem(client.get("/api/v1/no/such/path", headers=admin_headers), 404, "NOT_FOUND")
    assert_problem(client.get("/api/v1/no/such/path"), 404, "NOT_FOUND")


def test_wrong_method_is_a_problem(client, admin_headers):
    r = client.delete("/api/v1/shops/x/eligibility", headers=admin_headers)
    assert r.status_code == 405
    assert r.headers["content-type"].startswith("application/problem+json")
    assert set(r.json()) >= PROBLEM_KEYS


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"name": "x",}', b"\xff\xfe"])
def test_r63_body_not_json_is_malformed(client, admin_headers, raw):
    r = client.put("/api/v1/subjects/s-1", content=raw, headers=admin_headers | {"Content-Type": "application/json"})
    assert_problem(r, 400, "MALFORMED_BODY")


@pytest.mark.parametrize("raw", [b"[]", b'[{"name": "x"}]', b"3", b'"text"', b"null"])
def test_r63_json_that_is_not_an_object_is_malformed(client, admin_headers, raw):
    r = client.put("/api/v1/subjects/s-1", content=raw, headers=admin_headers | {"Content-Type": "application/json"})
    assert_problem(r, 400, "MALFORMED_BODY")


def test_r63_validation_error_lists_every_offending_field(client, admin_headers):
    r = client.put(
        "/api/v1/subjects/s-1", json={"subject_type": "bogus", "cross_border": "yes", "extra": 1}, headers=admin_headers
    )
    body = assert_problem(r, 422, "VALIDATION_ERROR")
    fields = {e["field"] for e in body["errors"]}
    assert {"name", "subject_type", "cross_border", "extra"} <= fields
    for e in body["errors"]:
        assert {"field", "type", "message"} <= set(e)


def test_r50_bad_id_number_is_invalid_id_number_and_not_echoed(client, admin_headers):
    good = id_number()
    bad = good[:17] + ("1" if good[17] != "1" else "2")
    r = client.put(
        "/api/v1/accounts/a-1", json=account_body(holder=person() | {"id_number": bad}), headers=admin_headers
    )
    body = assert_problem(r, 422, "INVALID_ID_NUMBER")
    assert any(e["field"] == "holder.id_number" for e in body["errors"])
    assert bad not in r.text


def test_r50_bad_phone_is_invalid_phone_and_not_echoed(client, admin_headers):
    r = client.put("/api/v1/accounts/a-1", json=account_body(login_phone="12345678901"), headers=admin_headers)
    body = assert_problem(r, 422, "INVALID_PHONE")
    assert any(e["field"] == "login_phone" for e in body["errors"])
    assert "12345678901" not in r.text
    r = client.put(
        "/api/v1/accounts/a-1", json=account_body(holder=person() | {"phone": "1380013800"}), headers=admin_headers
    )
    assert_problem(r, 422, "INVALID_PHONE")


def test_r63_submit_with_bad_operator_id_is_invalid_id_number(api):
    subject_id, shop_id, _ = api.ready_shop()
    r = api.submit(shop_id, api.merchant(subject_id), operator=person() | {"id_number": "110105199003070010"})
    assert_problem(r, 422, "INVALID_ID_NUMBER")


def test_titles_follow_accept_language(client):
    zh = assert_problem(client.get("/api/v1/shops/s/official-account"), 401, "UNAUTHENTICATED")
    en = assert_problem(
        client.get("/api/v1/shops/s/official-account", headers={"Accept-Language": "en-US,en;q=0.9"}),
        401,
        "UNAUTHENTICATED",
    )
    explicit_zh = client.get("/api/v1/shops/s/official-account", headers={"Accept-Language": "zh-CN"}).json()
    assert zh["title"] == explicit_zh["title"] == "未登录或令牌无效"
    assert en["title"] == "Missing or invalid credentials"


def test_eligibility_reasons_follow_accept_language(api):
    subject_id, shop_id, _ = api.ready_shop(shop_fields={"shop_type": "personal"})
    merchant = api.merchant(subject_id)
    zh = api.submit(shop_id, merchant)
    en = api.client.post(
        f"/api/v1/shops/{shop_id}/upgrade-applications",
        json={"agree_terms": True},
        headers=merchant | {"Accept-Language": "en"},
    )
    assert zh.status_code == en.status_code == 409
    assert zh.json()["title"] != en.json()["title"]
    zh_reasons = {r["code"]: r["message"] for r in zh.json()["reasons"]}
    en_reasons = {r["code"]: r["message"] for r in en.json()["reasons"]}
    assert "SHOP_TYPE_NOT_ELIGIBLE" in zh_reasons
    assert zh_reasons.keys() == en_reasons.keys()
    assert zh_reasons["SHOP_TYPE_NOT_ELIGIBLE"] != en_reasons["SHOP_TYPE_NOT_ELIGIBLE"]


def test_r63_refused_requests_change_nothing(api, engine):
    subject_id, shop_id, account_id = api.ready_shop()
    other_subject, other_shop, other_account = api.ready_shop()
    merchant = api.merchant(subject_id)
    r = api.submit(shop_id, merchant)
    assert r.status_code == 201, r.text
    app_id = r.json()["application_id"]
    _, personal_shop, _ = api.ready_shop(subject_id, shop_fields={"shop_type": "personal"})
    events_before = api.events()
    before = snapshot(engine)

    refused = [
        # a second application while one is in progress
        (api.submit(shop_id, merchant), 409),
        # terms not accepted
        (api.submit(other_shop, api.admin, agree_terms=False), 422),
        # not eligible: personal shop
        (api.submit(personal_shop, merchant), 409),
        # bad operator identity
        (api.submit(other_shop, api.admin, operator=person() | {"phone": "12000000000"}), 422),
        # a transition not in the diagram: approve a submitted application
        (api.client.post(f"/api/v1/admin/upgrade-applications/{app_id}/approve", headers=api.admin), 409),
        # re-sync with a bad ID number over an existing account keeps the old data
        (
            api.client.put(
                f"/api/v1/accounts/{other_account}",
                headers=api.admin,
                json=account_body(holder=person() | {"id_number": "110105199003070010"}),
            ),
            422,
        ),
        # shop under an unknown subject
        (
            api.client.put(
                f"/api/v1/shops/{other_shop}",
                headers=api.admin,
                json={
                    "subject_id": "nope",
                    "name": "x",
                    "shop_type": "flagship",
                    "status": "active",
                    "experience_score": 4,
                },
            ),
            422,
        ),
        # binding an account bound elsewhere
        (api.bind(other_shop, account_id), 409),
        # malformed body
        (api.client.put(f"/api/v1/subjects/{subject_id}", content=b"{", headers=api.admin), 400),
        # another subject's shop
        (api.submit(other_shop, merchant), 404),
        # no token
        (api.client.post(f"/api/v1/upgrade-applications/{app_id}/withdraw"), 401),
    ]
    for r, status in refused:
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    assert changed_tables(before, snapshot(engine)) == []
    assert api.events() == events_before
