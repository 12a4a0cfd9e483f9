"""Retry-After (API.md Conventions, issue 8 item 8): every 429 (SMS cooldown, too many wrong codes, the daily
posting limit), every 503 and 409 IDEMPOTENCY_KEY_IN_FLIGHT tell the client when to come back; a 429 does not
hold the Idempotency-Key, so the retry it invites runs."""

import datetime as dt

import pytest

from guanhao import errors, problems
from tests import factories
from tests.operators.helpers import T0, latest_code, request_change, requested, verify_change, wrong

API = "/api/v1"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def _retry_after(r) -> int:
    assert "retry-after" in r.headers, (r.status_code, r.text)
    seconds = int(r.headers["retry-after"])
    assert seconds >= 1
    assert r.json()["retry_after"] == seconds
    return seconds


@pytest.mark.parametrize(
    "cls", [c for c in errors.BY_CODE.values() if c.status in (429, 503)] + [errors.IdempotencyKeyInFlight]
)
def test_every_error_that_asks_to_come_back_says_when(cls):
    response = problems.response(cls(), "en")
    assert int(response.headers["retry-after"]) >= 1
    assert int(problems.response(cls(retry_after=7), "en").headers["retry-after"]) == 7


def test_a_refused_post_says_when_the_next_posting_day_begins(api):
    _, shop_id, account_id = api.ready_shop()
    api.set_clock(dt.datetime(2026, 3, 10, 23, 0, tzinfo=SHANGHAI))
    for _ in range(75):
        assert api.client.post(f"{API}/accounts/{account_id}/posts", headers=api.admin).status_code == 201
    r = api.client.post(f"{API}/accounts/{account_id}/posts", headers=api.admin)
    assert r.status_code == 429
    assert _retry_after(r) == 3600  # midnight in Shanghai


@pytest.fixture
def upgraded(api):
    api.set_clock(T0)
    holder = factories.person()
    subject_id, shop_id, _ = api.ready_shop(holder=holder)
    assert api.upgrade(shop_id)["status"] == "succeeded"
    return shop_id


def test_the_sms_cooldown_says_how_long_it_lasts(api, upgraded):
    new = factories.person()
    requested(api, upgraded, new)
    api.set_clock(T0 + dt.timedelta(seconds=15))
    r = request_change(api, upgraded, new)
    assert r.status_code == 429
    assert _retry_after(r) == 45


def test_too_many_wrong_codes_say_when_a_new_code_may_be_asked_for(api, upgraded):
    new = factories.person()
    change_id = requested(api, upgraded, new)
    code = latest_code(api, new["phone"])
    api.set_clock(T0 + dt.timedelta(seconds=20))
    for _ in range(4):
        assert verify_change(api, upgraded, change_id, wrong(code)).status_code == 422
    fifth = verify_change(api, upgraded, change_id, wrong(code))
    assert fifth.status_code == 429
    assert _retry_after(fifth) == 40
    after = verify_change(api, upgraded, change_id, code)
    assert after.status_code == 429
    assert _retry_after(after) == 40
    # And when it says so, a new code is indeed sent.
    api.set_clock(T0 + dt.timedelta(seconds=60))
    assert request_change(api, upgraded, new).status_code == 201


def test_a_429_does_not_hold_the_idempotency_key(api, upgraded):
    new = factories.person()
    requested(api, upgraded, new)
    headers = api.admin | {"Idempotency-Key": "rq-2"}
    url = f"{API}/shops/{upgraded}/official-account/operator-changes"
    first = api.client.post(url, json=new, headers=headers)
    assert first.status_code == 429
    api.set_clock(T0 + dt.timedelta(seconds=60))
    again = api.client.post(url, json=new, headers=headers)
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers


def test_a_request_whose_key_is_in_flight_says_when_to_retry(api):
    from guanhao import idempotency
    from guanhao.auth.service import ENV_KEY, Principal, caller_scope

    caller = caller_scope(Principal(role="admin", subject_id=None, key_id=ENV_KEY), "")
    # Another import with this key is running (a streamed body's hash is known only once it has passed).
    assert idempotency._claim(caller, "busy", idempotency._STREAMING) is None
    r = api.client.post(
        f"{API}/import",
        content=b"",
        headers=api.admin | {"Idempotency-Key": "busy", "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "IDEMPOTENCY_KEY_IN_FLIGHT"
    assert _retry_after(r) == 1
