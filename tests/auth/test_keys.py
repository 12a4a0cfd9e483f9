"""API keys and the Authorization header (issue 8 items 5 and 12, API.md Conventions and Bootstrap): the Bearer
scheme is case-insensitive, a 401 names it, Idempotency-Key scopes follow the principal, a field the service
would drop is a 422; keys are listed (never their tokens) and revoked — a revoked key is 401 at once."""

import pytest
import sqlalchemy as sa

from guanhao import errors
from tests.conftest import ADMIN_TOKEN

API = "/api/v1"


@pytest.mark.parametrize("spelling", ["Bearer {}", "bearer {}", "BEARER {}", "Bearer  {}", "bEaReR \t{} "])
def test_the_bearer_scheme_is_case_insensitive(api, spelling):
    subject_id = api.subject()
    token = api.merchant(subject_id)["Authorization"].split()[1]
    for value in (token, ADMIN_TOKEN):
        r = api.client.get(f"{API}/subjects/{subject_id}/quotas", headers={"Authorization": spelling.format(value)})
        assert r.status_code == 200, (spelling, r.text)


def test_a_401_names_the_bearer_scheme(api):
    subject_id = api.subject()
    merchant = api.merchant(subject_id)
    for headers in ({}, {"Authorization": "Token abc"}, {"Authorization": merchant["Authorization"] + "x"}):
        r = api.client.get(f"{API}/subjects/{subject_id}/quotas", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"


def test_the_idempotency_scope_is_the_principal_not_the_header(api):
    subject_id, shop_id, _ = api.ready_shop()
    token = api.merchant(subject_id)["Authorization"].split()[1]
    first = api.client.post(
        f"{API}/shops/{shop_id}/upgrade-applications",
        json={"agree_terms": True},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "same"},
    )
    assert first.status_code == 201, first.text
    for spelling in (f"Bearer  {token}", f"bearer {token}", f"Bearer {token} "):
        again = api.client.post(
            f"{API}/shops/{shop_id}/upgrade-applications",
            json={"agree_terms": True},
            headers={"Authorization": spelling, "Idempotency-Key": "same"},
        )
        assert again.status_code == 201, again.text
        assert again.headers.get("idempotent-replayed") == "true", spelling
        assert again.json()["application_id"] == first.json()["application_id"]
    r = api.client.get(f"{API}/shops/{shop_id}/upgrade-applications", headers=api.admin)
    assert len(r.json()["items"]) == 1


def test_an_admin_key_bound_to_a_subject_is_refused_not_silently_dropped(api):
    subject_id = api.subject()
    r = api.client.post(f"{API}/admin/api-keys", json={"role": "admin", "subject_id": subject_id}, headers=api.admin)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "VALIDATION_ERROR"
    assert [e["field"] for e in r.json()["errors"]] == ["subject_id"]
    listed = api.client.get(f"{API}/admin/api-keys", headers=api.admin).json()["items"]
    assert listed == []


def test_r60_keys_are_listed_in_pages_without_their_tokens(api):
    subject_id = api.subject()
    tokens = []
    for n in range(53):
        r = api.client.post(
            f"{API}/admin/api-keys",
            json={"role": "merchant", "subject_id": subject_id, "label": f"key {n}"},
            headers=api.admin,
        )
        tokens.append(r.json()["token"])
    seen, cursor, pages = [], None, 0
    while True:
        r = api.client.get(f"{API}/admin/api-keys", params={"cursor": cursor} if cursor else {}, headers=api.admin)
        assert r.status_code == 200, r.text
        if not r.json()["items"]:  # caught up: the cursor stays where it was
            assert r.json()["next_cursor"] == cursor
            break
        pages += 1
        seen += r.json()["items"]
        cursor = r.json()["next_cursor"]
        assert cursor
    assert pages == 2
    assert [k["label"] for k in seen] == [f"key {n}" for n in range(53)]
    assert len({k["key_id"] for k in seen}) == 53
    assert all(k["revoked_at"] is None and k["role"] == "merchant" and "token" not in k for k in seen)
    text = repr(seen)
    assert not any(t in text for t in tokens)
    r = api.client.get(f"{API}/admin/api-keys", params={"cursor": "bm90LWEtY3Vyc29y"}, headers=api.admin)
    assert r.status_code == 422


def test_r60_a_revoked_key_is_401_at_once_and_the_revoke_is_audited(api):
    subject_id = api.subject()
    r = api.client.post(f"{API}/admin/api-keys", json={"role": "merchant", "subject_id": subject_id}, headers=api.admin)
    key_id, merchant = r.json()["key_id"], {"Authorization": f"Bearer {r.json()['token']}"}
    url = f"{API}/subjects/{subject_id}/quotas"
    assert api.client.get(url, headers=merchant).status_code == 200
    r = api.client.post(f"{API}/admin/api-keys/{key_id}/revoke", headers=api.admin)
    assert r.status_code == 200, r.text
    revoked_at = r.json()["revoked_at"]
    assert revoked_at is not None
    r = api.client.get(url, headers=merchant)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    # Revoking again changes nothing; an unknown key is 404; the environment's admin token is no stored key.
    again = api.client.post(f"{API}/admin/api-keys/{key_id}/revoke", headers=api.admin)
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked_at
    assert api.client.post(f"{API}/admin/api-keys/key_nope/revoke", headers=api.admin).status_code == 404
    assert api.client.post(f"{API}/admin/api-keys/env/revoke", headers=api.admin).status_code == 404
    assert [a["action"] for a in api.audit(key_id)] == ["api_key.created", "api_key.revoked"]
    listed = api.client.get(f"{API}/admin/api-keys", headers=api.admin).json()["items"]
    assert [k["revoked_at"] for k in listed if k["key_id"] == key_id] == [revoked_at]


def test_a_request_that_authenticated_before_the_revoke_does_nothing_after_it(api, engine):
    """The race, step by step: a request authenticates, the key is revoked and committed, then the request's
    unit of work starts — and is refused, changing nothing."""
    from guanhao import http
    from guanhao.auth import service as auth
    from guanhao.db import session_scope
    from guanhao.policy import get_policy

    subject_id = api.subject()
    r = api.client.post(f"{API}/admin/api-keys", json={"role": "admin"}, headers=api.admin)
    key_id, token = r.json()["key_id"], r.json()["token"]
    with session_scope() as session:
        principal = auth.authenticate(session, f"Bearer {token}", admin_token=ADMIN_TOKEN)
    call = http.Call(principal=principal, lang="en", policy=get_policy())
    with session_scope() as session:
        auth.revoke(session, key_id, actor="admin:env", now=http.clock.now(session))
    with pytest.raises(errors.Unauthenticated), call.unit() as (session, _now):
        session.execute(sa.text("UPDATE subjects SET name = 'changed' WHERE id = :id"), {"id": subject_id})
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM subjects")).scalar() != "changed"
