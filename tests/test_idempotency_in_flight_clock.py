"""A key in flight is abandoned after `in_flight_timeout_seconds` of the real clock, not of the service clock: the
sandbox clock may move hours while a slow first request still runs, and a retry must then wait, not run anew (a
second application found by the soak). Retention stays on the service clock (API.md, test_idempotency.py)."""

import datetime as dt

from guanhao import clock, idempotency

T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)


def test_a_key_in_flight_stays_claimed_however_far_the_sandbox_clock_moves(api):
    api.set_clock(T0)
    assert idempotency._claim("caller", "slow", "hash") is None  # claimed: the first request runs
    api.set_clock(T0 + dt.timedelta(hours=2))
    existing = idempotency._claim("caller", "slow", "hash")
    assert existing is not None and existing.state == "in_flight"


def test_a_key_in_flight_past_the_timeout_of_the_real_clock_is_taken_over(api, monkeypatch):
    api.set_clock(T0)
    assert idempotency._claim("caller", "abandoned", "hash") is None
    later = clock.real_now() + dt.timedelta(minutes=10)
    monkeypatch.setattr(clock, "real_now", lambda: later)
    assert idempotency._claim("caller", "abandoned", "hash") is None  # the first one died: the retry runs
