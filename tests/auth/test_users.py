"""Console users (issue 10): created by staff (API, CLI), listed, disabled; passwords hashed with argon2 and never
returned; logins counted in the database per username and per client (R-62 for the consoles' access)."""

import datetime as dt

import pytest
import sqlalchemy as sa

from guanhao import errors
from guanhao.auth import users
from guanhao.db import session_scope
from guanhao.policy import get_policy
from tests.test_cli import run

API = "/api/v1/admin/users"
NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def subject_id(api) -> str:
    return api.subject()


def _create(session, **fields) -> users.User:
    body = {"username": "shop.owner", "password": "correct horse", "role": "merchant", "subject_id": None} | fields
    return users.create_user(session, actor="test", now=NOW, **body)


# ---------------------------------------------------------------- service


def test_a_merchant_user_needs_a_known_subject_and_staff_none(subject_id):
    with session_scope() as session:
        with pytest.raises(errors.ValidationFailed):
            _create(session)
        with pytest.raises(errors.ValidationFailed):
            _create(session, subject_id="no-such-subject")
        with pytest.raises(errors.ValidationFailed):
            _create(session, role="staff", subject_id=subject_id)
        with pytest.raises(errors.ValidationFailed):
            _create(session, role="admin", subject_id=subject_id)
        merchant = _create(session, subject_id=subject_id)
        staff = _create(session, username="ops.lead", role="staff")
    assert (merchant.role, merchant.subject_id) == ("merchant", subject_id)
    assert (staff.role, staff.subject_id) == ("staff", None)


def test_usernames_are_unique_whatever_their_case(subject_id):
    with session_scope() as session:
        _create(session, username="Shop.Owner", subject_id=subject_id)
    with session_scope() as session, pytest.raises(errors.UsernameTaken):
        _create(session, username="shop.owner ", subject_id=subject_id)


def test_bad_usernames_and_short_passwords_are_refused(subject_id):
    with session_scope() as session:
        for bad in ("ab", "has space", "-dash-first", "x" * 65):
            with pytest.raises(errors.ValidationFailed):
                _create(session, username=bad, subject_id=subject_id)
        with pytest.raises(errors.ValidationFailed):
            _create(session, password="short", subject_id=subject_id)


def test_the_password_is_stored_as_an_argon2_hash_only(subject_id, engine):
    with session_scope() as session:
        _create(session, subject_id=subject_id, password="correct horse battery")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM users")).all()
    assert "correct horse battery" not in repr(rows)
    assert rows[0].password_hash.startswith("$argon2id$")


def _login(password="correct horse", *, username="shop.owner", client="10.0.0.1", now=NOW) -> users.Login:
    with session_scope() as session:
        return users.login(session, username=username, password=password, client=client, policy=get_policy(), now=now)


def test_login_checks_the_password_and_the_user_being_enabled(subject_id):
    with session_scope() as session:
        user = _create(session, subject_id=subject_id)
    assert _login().user.id == user.id
    assert _login(username="SHOP.OWNER").user.id == user.id
    assert isinstance(_login("wrong password").error, errors.Unauthenticated)
    assert isinstance(_login(username="nobody").error, errors.Unauthenticated)
    with session_scope() as session:
        users.disable_user(session, user.id, actor="test", now=NOW)
    assert isinstance(_login().error, errors.Unauthenticated)


def test_logins_are_limited_per_username_in_a_window_kept_in_the_database(subject_id):
    with session_scope() as session:
        _create(session, subject_id=subject_id)
    most = get_policy().login.max_attempts_per_user
    for i in range(most):
        assert isinstance(_login("wrong password", client=f"10.0.0.{i}").error, errors.Unauthenticated)
    # the right password from yet another client is refused too: the name is locked, not the address
    refused = _login(client="10.9.9.9").error
    assert isinstance(refused, errors.TooManyAttempts)
    assert 0 < refused.retry_after <= get_policy().login.window_minutes * 60
    later = NOW + dt.timedelta(minutes=get_policy().login.window_minutes, seconds=1)
    assert _login(now=later).user is not None


def test_logins_are_limited_per_client_across_usernames(subject_id):
    most = get_policy().login.max_attempts_per_client
    for i in range(most):
        assert isinstance(_login(username=f"guess{i}").error, errors.Unauthenticated)
    assert isinstance(_login(username="another").error, errors.TooManyAttempts)
    assert isinstance(_login(username="another", client="10.0.0.2").error, errors.Unauthenticated)


def test_a_good_login_clears_the_usernames_count(subject_id):
    with session_scope() as session:
        _create(session, subject_id=subject_id)
    most = get_policy().login.max_attempts_per_user
    for _ in range(most - 1):
        _login("wrong password")
    assert _login().user is not None
    for _ in range(most - 1):
        assert isinstance(_login("wrong password").error, errors.Unauthenticated)


def test_sessions_end_on_logout_expiry_and_when_the_user_is_disabled(subject_id):
    policy = get_policy()
    with session_scope() as session:
        user = _create(session, subject_id=subject_id)
        _, token = users.start_session(session, user, policy=policy, now=NOW)
        _, other = users.start_session(session, user, policy=policy, now=NOW)
    with session_scope() as session:
        assert users.session_for(session, token, now=NOW)[1].id == user.id
        expiry = NOW + dt.timedelta(hours=policy.login.session_hours)
        assert users.session_for(session, token, now=expiry) is None
        assert users.session_for(session, "not-a-token", now=NOW) is None
        users.end_session(session, token)
    with session_scope() as session:
        assert users.session_for(session, token, now=NOW) is None
        assert users.session_for(session, other, now=NOW) is not None
        users.disable_user(session, user.id, actor="test", now=NOW)
    with session_scope() as session:
        assert users.session_for(session, other, now=NOW) is None


def test_flash_messages_are_shown_once(subject_id):
    with session_scope() as session:
        user = _create(session, subject_id=subject_id)
        row, _ = users.start_session(session, user, policy=get_policy(), now=NOW)
        users.push_flash(session, row.token_hash, "success", "Upgrade application submitted", {})
    with session_scope() as session:
        assert [f["msgid"] for f in users.pop_flash(session, row.token_hash)] == ["Upgrade application submitted"]
        assert users.pop_flash(session, row.token_hash) == []


# ---------------------------------------------------------------- HTTP


def test_staff_create_list_and_disable_users_over_http(api, subject_id):
    r = api.client.post(
        API,
        json={"username": "yunqi", "password": "yunqi-pass-1", "role": "merchant", "subject_id": subject_id},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    user_id = r.json()["user_id"]
    assert set(r.json()) == {"user_id"}
    r = api.client.post(API, json={"username": "ops", "password": "ops-pass-12", "role": "staff"}, headers=api.admin)
    assert r.status_code == 201, r.text

    r = api.client.get(API, headers=api.admin)
    assert r.status_code == 200
    page = r.json()
    assert [u["username"] for u in page["items"]] == ["yunqi", "ops"]
    assert page["next_cursor"]  # a feed that can grow: the position after the last user (API.md)
    assert api.client.get(API, params={"cursor": page["next_cursor"]}, headers=api.admin).json() == {
        "items": [],
        "next_cursor": page["next_cursor"],
    }
    assert "password" not in r.text and "argon2" not in r.text

    r = api.client.post(f"{API}/{user_id}/disable", headers=api.admin)
    assert r.status_code == 200
    assert r.json()["disabled_at"] is not None
    assert [a["action"] for a in api.audit(user_id)] == ["user.created", "user.disabled"]


def test_user_creation_refusals_over_http(api, subject_id):
    body = {"username": "yunqi", "password": "yunqi-pass-1", "role": "merchant"}
    assert api.client.post(API, json=body, headers=api.admin).json()["code"] == "VALIDATION_ERROR"
    r = api.client.post(API, json=body | {"subject_id": "nobody"}, headers=api.admin)
    assert (r.status_code, r.json()["code"]) == (422, "VALIDATION_ERROR")
    r = api.client.post(API, json=body | {"subject_id": subject_id, "password": "short"}, headers=api.admin)
    assert r.status_code == 422
    assert api.client.post(API, json=body | {"subject_id": subject_id}, headers=api.admin).status_code == 201
    r = api.client.post(API, json=body | {"subject_id": subject_id}, headers=api.admin)
    assert (r.status_code, r.json()["code"]) == (409, "USERNAME_TAKEN")
    merchant = api.merchant(subject_id)
    assert api.client.post(API, json=body | {"username": "x-y-z"}, headers=merchant).status_code == 403
    assert api.client.get(API, headers=merchant).status_code == 403
    assert api.client.post(f"{API}/usr_nobody/disable", headers=api.admin).status_code == 404


def test_users_list_pages_with_a_cursor(api, subject_id, monkeypatch):
    from guanhao.auth import api as auth_api

    monkeypatch.setattr(auth_api, "PAGE_SIZE", 2)
    for n in range(3):
        body = {"username": f"user{n}", "password": "pass-word-1", "role": "merchant", "subject_id": subject_id}
        assert api.client.post(API, json=body, headers=api.admin).status_code == 201
    first = api.client.get(API, headers=api.admin).json()
    second = api.client.get(API, params={"cursor": first["next_cursor"]}, headers=api.admin).json()
    assert [u["username"] for u in first["items"] + second["items"]] == ["user0", "user1", "user2"]
    third = api.client.get(API, params={"cursor": second["next_cursor"]}, headers=api.admin).json()
    assert third == {"items": [], "next_cursor": second["next_cursor"]}


def test_cli_users_create(api, subject_id):
    result = run("users", "create", "cli.merchant", "--subject", subject_id, "--password", "cli-pass-123")
    assert result.exit_code == 0, result.output
    items = api.client.get(API, headers=api.admin).json()["items"]
    assert [(u["username"], u["subject_id"]) for u in items] == [("cli.merchant", subject_id)]
    result = run("users", "create", "cli.merchant", "--subject", subject_id, "--password", "cli-pass-123")
    assert result.exit_code == 2
    result = run("users", "create", "staff.one", "--role", "staff", "--password", "cli-pass-123")
    assert result.exit_code == 0, result.output
