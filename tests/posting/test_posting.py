"""Daily posting limit (投稿频次, SPEC R-23, R-13) through the HTTP API: 75 a day before the upgrade, 100 after,
on the Asia/Shanghai calendar day; after a cancel the day's posts above 75 leave 0 remaining, never less."""

import datetime as dt
import time
from pathlib import Path

import pytest

import guanhao.policy
from tests.conftest import reset_caches
from tests.factories import Api

T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
API = "/api/v1"


def post(api: Api, account_id: str, headers: dict | None = None):
    return api.client.post(f"{API}/accounts/{account_id}/posts", headers=headers or api.admin)


def posts(api: Api, account_id: str, n: int) -> dict:
    """Makes n accepted posts; returns the last answer."""
    for i in range(n):
        r = post(api, account_id)
        assert r.status_code == 201, (i, r.text)
    return r.json()


def quota(api: Api, account_id: str, headers: dict | None = None) -> dict:
    r = api.client.get(f"{API}/accounts/{account_id}/posting-quota", headers=headers or api.admin)
    assert r.status_code == 200, r.text
    return r.json()


def refused(r) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "DAILY_POST_LIMIT_REACHED"


def figures(q: dict) -> tuple:
    return q["limit"], q["used"], q["remaining"], q["day"]


def auto_upgrade(api: Api, limit: int = 10) -> dict:
    r = api.client.post(f"{API}/admin/auto-upgrade-waves", json={"limit": limit}, headers=api.admin)
    assert r.status_code == 202, r.text
    wave_id = r.json()["wave_id"]
    deadline = time.monotonic() + 20
    while True:
        r = api.client.get(f"{API}/admin/auto-upgrade-waves/{wave_id}", headers=api.admin)
        assert r.status_code == 200, r.text
        if r.json()["status"] != "running":
            assert r.json()["status"] == "done", r.json()
            return r.json()
        assert time.monotonic() < deadline, "the wave did not finish"
        time.sleep(0.05)


@pytest.fixture
def shop(api):
    """(subject_id, shop_id, account_id) of a ready, not upgraded shop; clock frozen at T0."""
    api.set_clock(T0)
    return api.ready_shop()


def test_r23_limit_is_75_before_the_upgrade(api, shop):
    """R-23 before the upgrade 75 posts a day; the 76th → 429 DAILY_POST_LIMIT_REACHED and is not counted."""
    _, _, account_id = shop
    assert figures(quota(api, account_id)) == (75, 0, 75, "2026-03-10")
    first = posts(api, account_id, 1)
    assert (first["used"], first["remaining"]) == (1, 74)
    last = posts(api, account_id, 74)
    assert (last["used"], last["remaining"]) == (75, 0)
    refused(post(api, account_id))
    refused(post(api, account_id))
    assert figures(quota(api, account_id)) == (75, 75, 0, "2026-03-10")


def test_r23_limit_is_100_after_the_upgrade(api, shop):
    """R-23 after the upgrade 100 posts a day; the 101st is refused; the view says 100."""
    _, shop_id, account_id = shop
    assert api.official_account(shop_id)["daily_post_limit"] == 75
    assert api.upgrade(shop_id)["status"] == "succeeded"
    assert api.official_account(shop_id)["daily_post_limit"] == 100
    last = posts(api, account_id, 100)
    assert (last["used"], last["remaining"]) == (100, 0)
    refused(post(api, account_id))
    assert figures(quota(api, account_id)) == (100, 100, 0, "2026-03-10")


def test_r23_upgrade_during_the_day_raises_that_days_limit(api, shop):
    """R-23 posts made before the upgrade count toward the day's 100 after it."""
    _, shop_id, account_id = shop
    posts(api, account_id, 75)
    refused(post(api, account_id))
    api.upgrade(shop_id)
    assert figures(quota(api, account_id)) == (100, 75, 25, "2026-03-10")
    assert posts(api, account_id, 25)["remaining"] == 0
    refused(post(api, account_id))


def test_r23_day_turns_at_asia_shanghai_midnight(api, shop):
    """R-23 the day is the Asia/Shanghai calendar day: 15:59:59Z is still 10 March, 16:00:00Z is 11 March."""
    _, _, account_id = shop
    api.set_clock("2026-03-10T15:59:59Z")
    posts(api, account_id, 75)
    refused(post(api, account_id))
    assert figures(quota(api, account_id)) == (75, 75, 0, "2026-03-10")
    api.set_clock("2026-03-10T16:00:00Z")
    assert figures(quota(api, account_id)) == (75, 0, 75, "2026-03-11")
    assert post(api, account_id).json()["used"] == 1
    # UTC midnight is not a day boundary
    api.set_clock("2026-03-11T00:00:00Z")
    assert figures(quota(api, account_id)) == (75, 1, 74, "2026-03-11")
    # and going back in the sandbox clock finds the full day again
    api.set_clock("2026-03-10T15:59:59Z")
    refused(post(api, account_id))


def test_r13_after_a_cancel_remaining_is_zero_never_negative(api, shop):
    """R-13 an auto upgrade, 80 posts today, cancelled: the limit is 75 again and 0 remain (not -5);
    the next post is refused."""
    subject_id, shop_id, account_id = shop
    assert auto_upgrade(api)["upgraded"] == 1
    view = api.official_account(shop_id)
    assert (view["origin"], view["daily_post_limit"], view["can_cancel"]) == ("auto", 100, True)
    posts(api, account_id, 80)
    r = api.client.post(f"{API}/shops/{shop_id}/official-account/cancel-upgrade", headers=api.merchant(subject_id))
    assert r.status_code == 200, r.text
    assert api.official_account(shop_id)["daily_post_limit"] == 75
    assert figures(quota(api, account_id)) == (75, 80, 0, "2026-03-10")
    r = post(api, account_id)
    refused(r)
    assert figures(quota(api, account_id)) == (75, 80, 0, "2026-03-10")
    # the next day starts from 0 with the limit of 75
    api.set_clock(T0 + dt.timedelta(days=1))
    assert figures(quota(api, account_id)) == (75, 0, 75, "2026-03-11")


def test_r23_accounts_are_counted_separately(api, shop):
    """R-23 the counter is per account."""
    _, _, account_id = shop
    _, _, other = api.ready_shop()
    posts(api, account_id, 75)
    refused(post(api, account_id))
    assert post(api, other).status_code == 201
    assert quota(api, other)["used"] == 1


def test_r23_unknown_account_is_not_found(api, shop):
    """R-63 an unknown account → 404 NOT_FOUND, nothing counted."""
    for r in (post(api, "acct-nope"), api.client.get(f"{API}/accounts/acct-nope/posting-quota", headers=api.admin)):
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "NOT_FOUND"


def test_r62_posting_quota_is_for_platform_systems_only(api, shop):
    """R-62 a merchant key → 403 FORBIDDEN (even for its own account); no key → 401; nothing counted."""
    subject_id, _, account_id = shop
    merchant = api.merchant(subject_id)
    for r in (
        post(api, account_id, merchant),
        api.client.get(f"{API}/accounts/{account_id}/posting-quota", headers=merchant),
    ):
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "FORBIDDEN"
    assert api.client.post(f"{API}/accounts/{account_id}/posts").status_code == 401
    assert quota(api, account_id)["used"] == 0


def test_r23_limits_come_from_the_policy(api, shop, tmp_path, monkeypatch):
    """R-23 the limits are policy values, not constants."""
    source = (Path(guanhao.policy.__file__).parent / "default.toml").read_text(encoding="utf-8")
    custom = tmp_path / "policy.toml"
    custom.write_text(source.replace("limit_before = 75", "limit_before = 3"), encoding="utf-8")
    monkeypatch.setenv("GUANHAO_POLICY", str(custom))
    reset_caches()
    _, _, account_id = shop
    posts(api, account_id, 3)
    refused(post(api, account_id))
    assert figures(quota(api, account_id)) == (3, 3, 0, "2026-03-10")
