"""The upgrade workflow through the HTTP API: the official-account view and the upgrade deadline."""

import datetime as dt

from tests.upgrades.helpers import T0

# ---------------------------------------------------------------- the official-account view


def test_official_account_view_before_and_after(api, shop):
    """R-22, R-23 personal with limit 75 before; enterprise, main, manual, 100 after; not cancellable (R-12)."""
    subject_id, shop_id, account_id, _ = shop
    merchant = api.merchant(subject_id)
    before = api.official_account(shop_id, merchant)
    assert before["upgrade_status"] == "not_upgraded"
    assert before["ownership"] == "personal"
    assert before["account_type"] is None and before["origin"] is None and before["upgraded_at"] is None
    assert before["operator"] is None
    assert before["daily_post_limit"] == 75
    assert before["can_sell_as_official"] is True
    assert before["active_application_id"] is None
    assert before["account"]["account_id"] == account_id
    assert before["account"]["login_phone"].count("*") == 4

    api.set_clock(T0 + dt.timedelta(minutes=5))
    api.upgrade(shop_id)
    after = api.official_account(shop_id, merchant)
    assert after["upgrade_status"] == "upgraded"
    assert after["ownership"] == "enterprise"
    assert after["account_type"] == "main"
    assert after["origin"] == "manual"
    assert dt.datetime.fromisoformat(after["upgraded_at"]) == T0 + dt.timedelta(minutes=5)
    assert after["daily_post_limit"] == 100
    assert after["can_cancel"] is False and after["cancel_deadline"] is None
    assert after["active_application_id"] is None
    assert after["account"]["followers"] == before["account"]["followers"]


def test_r62_merchant_cannot_see_another_subjects_official_account(api, shop):
    """R-62 404 for another subject's shop."""
    _, shop_id, _, _ = shop
    stranger = api.merchant(api.subject())
    assert api.client.get(f"/api/v1/shops/{shop_id}/official-account", headers=stranger).status_code == 404


def test_r14_upgrade_deadline_ends_selling_for_accounts_not_upgraded(deadline_api):
    """R-14 after the deadline a not-upgraded official account cannot sell as official; an upgraded one still can."""
    api = deadline_api
    deadline = dt.datetime(2026, 6, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    api.set_clock(deadline - dt.timedelta(days=1))
    subject_id, upgraded_shop, _ = api.ready_shop()
    _, plain_shop, _ = api.ready_shop(subject_id)
    api.upgrade(upgraded_shop)

    view = api.official_account(plain_shop)
    assert view["can_sell_as_official"] is True
    assert dt.datetime.fromisoformat(view["upgrade_deadline"]) == deadline

    api.set_clock(deadline - dt.timedelta(seconds=1))
    assert api.official_account(plain_shop)["can_sell_as_official"] is True
    api.set_clock(deadline)
    assert api.official_account(plain_shop)["can_sell_as_official"] is False
    assert api.official_account(upgraded_shop)["can_sell_as_official"] is True
    api.upgrade(plain_shop)
    assert api.official_account(plain_shop)["can_sell_as_official"] is True


def test_r14_without_a_deadline_every_bound_account_can_sell(api, shop):
    """R-14 the default policy sets no deadline."""
    _, shop_id, _, _ = shop
    api.set_clock(dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    view = api.official_account(shop_id)
    assert view["upgrade_deadline"] is None
    assert view["can_sell_as_official"] is True
