"""Who is calling, at the service level (guanhao.auth.service): API keys are created for a role (a merchant
key bound to one subject), stored only as a keyed hash, and authenticate to a principal that sees only its
own subject (R-62); anything else is refused with a stable code (R-63)."""

import datetime as dt

import pytest
from sqlalchemy import select

from guanhao import errors
from guanhao.auth import service as auth
from guanhao.auth.models import ApiKey
from tests.conftest import ADMIN_TOKEN


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_r62_a_merchant_key_authenticates_as_its_subject_only(session, now):
    key, token = auth.create_key(
        session, role="merchant", subject_id="subj-a", label="ERP", actor="admin:test", now=now
    )
    assert token.startswith("gh_mch_")
    principal = auth.authenticate(session, bearer(token), admin_token=ADMIN_TOKEN)
    assert (principal.role, principal.subject_id, principal.key_id) == ("merchant", "subj-a", key.id)
    assert principal.actor == f"merchant:{key.id}" and not principal.is_admin
    assert principal.can_see_subject("subj-a") and not principal.can_see_subject("subj-b")


def test_r62_an_admin_key_sees_every_subject_and_is_bound_to_none(session, now):
    with pytest.raises(errors.ValidationFailed):  # not a silently dropped field
        auth.create_key(session, role="admin", subject_id="subj-a", label=None, actor="admin:test", now=now)
    key, token = auth.create_key(session, role="admin", subject_id=None, label=None, actor="admin:test", now=now)
    assert token.startswith("gh_adm_") and key.subject_id is None
    principal = auth.authenticate(session, bearer(token), admin_token=ADMIN_TOKEN)
    assert principal.is_admin and principal.can_see_subject("any-subject")
    env = auth.authenticate(session, bearer(ADMIN_TOKEN), admin_token=ADMIN_TOKEN)
    assert (env.role, env.key_id) == ("admin", "env")


def test_r50_a_key_is_stored_only_as_a_keyed_hash(session, now):
    _, token = auth.create_key(session, role="merchant", subject_id="subj-a", label=None, actor="admin:test", now=now)
    stored = session.scalars(select(ApiKey)).one()
    assert stored.token_hash == auth.token_hash(token) and token not in stored.token_hash


def test_r63_a_key_needs_a_known_role_and_a_merchant_key_a_subject(session, now):
    with pytest.raises(errors.ValidationFailed):
        auth.create_key(session, role="root", subject_id=None, label=None, actor="admin:test", now=now)
    with pytest.raises(errors.ValidationFailed) as refused:
        auth.create_key(session, role="merchant", subject_id=None, label=None, actor="admin:test", now=now)
    assert refused.value.extra["errors"][0]["field"] == "subject_id"
    assert session.scalars(select(ApiKey)).all() == []


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer   ", "Bearer gh_mch_unknown", "bearer x"])
def test_r62_anything_but_a_known_bearer_token_is_unauthenticated(session, header):
    with pytest.raises(errors.Unauthenticated):
        auth.authenticate(session, header, admin_token=ADMIN_TOKEN)


def test_r62_a_revoked_key_no_longer_authenticates(session, now):
    key, token = auth.create_key(session, role="merchant", subject_id="subj-a", label=None, actor="admin:test", now=now)
    key.revoked_at = now + dt.timedelta(minutes=1)
    session.flush()
    with pytest.raises(errors.Unauthenticated):
        auth.authenticate(session, bearer(token), admin_token=ADMIN_TOKEN)


def test_r62_without_an_admin_token_configured_no_token_is_the_admin(session):
    with pytest.raises(errors.Unauthenticated):
        auth.authenticate(session, bearer(ADMIN_TOKEN), admin_token="")
