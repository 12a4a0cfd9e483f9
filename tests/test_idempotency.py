"""Idempotency-Key on every mutating request (API.md; IETF draft "The Idempotency-Key HTTP Header Field")."""

import datetime as dt

from tests.factories import person

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def _submit(api, shop_id, headers, key, **body):
    return api.client.post(
        f"/api/v1/shops/{shop_id}/upgrade-applications",
        json={"agree_terms": True} | body,
        headers=headers | {"Idempotency-Key": key},
    )


def _applications(api, shop_id) -> list[dict]:
    r = api.client.get(f"/api/v1/shops/{shop_id}/upgrade-applications", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_same_key_same_body_replays_the_first_response_with_one_effect(api):
    subject_id, shop_id, _ = api.ready_shop()
    merchant = api.merchant(subject_id)
    first = _submit(api, shop_id, merchant, "submit-1")
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = _submit(api, shop_id, merchant, "submit-1")
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(_applications(api, shop_id)) == 1
    submitted = [e for e in api.events(shop_id=shop_id) if e["type"] == "upgrade.submitted"]
    assert len(submitted) == 1


def test_same_body_in_another_key_order_is_the_same_request(api):
    subject_id, shop_id, _ = api.ready_shop()
    merchant = api.merchant(subject_id)
    h = merchant | {"Idempotency-Key": "k", "Content-Type": "application/json"}
    first = api.client.post(
        f"/api/v1/shops/{shop_id}/upgrade-applications",
        content=b'{"agree_terms":true,"account_type":"main"}',
        headers=h,
    )
    again = api.client.post(
        f"/api/v1/shops/{shop_id}/upgrade-applications",
        content=b'{ "account_type": "main", "agree_terms": true }',
        headers=h,
    )
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"


def test_same_key_other_body_is_refused(api):
    subject_id, shop_id, _ = api.ready_shop()
    merchant = api.merchant(subject_id)
    assert _submit(api, shop_id, merchant, "k-1").status_code == 201
    r = _submit(api, shop_id, merchant, "k-1", operator=person())
    assert r.status_code == 422
    assert r.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert len(_applications(api, shop_id)) == 1


def test_same_key_other_path_is_refused(api):
    subject_id, shop_id, _ = api.ready_shop()
    _, other_shop, _ = api.ready_shop(subject_id)
    merchant = api.merchant(subject_id)
    assert _submit(api, shop_id, merchant, "k-2").status_code == 201
    r = _submit(api, other_shop, merchant, "k-2")
    assert r.status_code == 422
    assert r.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert _applications(api, other_shop) == []


def test_keys_are_scoped_to_the_caller(api):
    subject_a, shop_a, _ = api.ready_shop()
    subject_b, shop_b, _ = api.ready_shop()
    a = _submit(api, shop_a, api.merchant(subject_a), "shared-key")
    b = _submit(api, shop_b, api.merchant(subject_b), "shared-key")
    assert a.status_code == b.status_code == 201, (a.text, b.text)
    assert "idempotent-replayed" not in b.headers
    assert a.json()["application_id"] != b.json()["application_id"]
    assert len(_applications(api, shop_a)) == len(_applications(api, shop_b)) == 1


def test_an_error_response_is_replayed_too(api):
    subject_id, shop_id, _ = api.ready_shop(shop_fields={"shop_type": "personal"})
    merchant = api.merchant(subject_id)
    first = _submit(api, shop_id, merchant, "k-4xx")
    assert first.status_code == 409, first.text
    again = _submit(api, shop_id, merchant, "k-4xx")
    assert again.status_code == 409
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["content-type"].startswith("application/problem+json")


def test_a_replayed_secret_is_not_stored_in_clear(api, engine):
    import sqlalchemy as sa

    r = api.client.post(
        "/api/v1/admin/api-keys", json={"role": "admin"}, headers=api.admin | {"Idempotency-Key": "key-1"}
    )
    assert r.status_code == 201
    token = r.json()["token"]
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM idempotency_keys")).all()
    assert rows and token not in repr(rows)


def test_keys_are_kept_24_hours_of_the_service_clock_then_expire(api):
    api.set_clock(T0)
    h = api.admin | {"Idempotency-Key": "expiring"}
    body = {"role": "admin", "label": "ops"}
    first = api.client.post("/api/v1/admin/api-keys", json=body, headers=h)
    assert first.status_code == 201

    api.set_clock(T0 + dt.timedelta(hours=23, minutes=59))
    kept = api.client.post("/api/v1/admin/api-keys", json=body, headers=h)
    assert kept.headers.get("idempotent-replayed") == "true"
    assert kept.json()["token"] == first.json()["token"]

    api.set_clock(T0 + dt.timedelta(hours=24, minutes=1))
    fresh = api.client.post("/api/v1/admin/api-keys", json=body, headers=h)
    assert fresh.status_code == 201
    assert "idempotent-replayed" not in fresh.headers
    assert fresh.json()["token"] != first.json()["token"]


def test_over_long_key_is_refused(api):
    subject_id, shop_id, _ = api.ready_shop()
    merchant = api.merchant(subject_id)
    r = _submit(api, shop_id, merchant, "x" * 256)
    assert r.status_code == 422
    assert r.json()["code"] == "VALIDATION_ERROR"
    assert _applications(api, shop_id) == []
    assert _submit(api, shop_id, merchant, "x" * 255).status_code == 201


def test_the_caller_scope_is_a_keyed_hash(api, engine):
    import hashlib

    import sqlalchemy as sa

    from tests.conftest import ADMIN_TOKEN

    r = api.client.post(
        "/api/v1/admin/api-keys", json={"role": "admin"}, headers=api.admin | {"Idempotency-Key": "scope"}
    )
    assert r.status_code == 201
    with engine.connect() as conn:
        [caller] = conn.execute(sa.text("SELECT caller FROM idempotency_keys")).scalars().all()
    assert ADMIN_TOKEN not in caller
    assert caller != hashlib.sha256(f"Bearer {ADMIN_TOKEN}".encode()).hexdigest()
