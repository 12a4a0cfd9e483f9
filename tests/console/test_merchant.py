"""The merchant console (issue 10), end to end in Chromium against a live server."""

import re

from playwright.sync_api import expect

from tests.console.conftest import main_page


def test_login_lists_the_subjects_shops_with_their_states(console, page):
    api = console.api
    subject_id, shop_id, _ = api.ready_shop()
    _, upgraded_shop, _ = api.ready_shop(subject_id)
    api.upgrade(upgraded_shop)
    username = console.merchant_user(subject_id)
    page.goto(console.url + "/")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    main_page(page, "login")
    console.login(page, username)
    rows = page.locator("tr[data-shop]")
    expect(rows).to_have_count(2)
    expect(page.locator(f"tr[data-shop='{upgraded_shop}']")).to_contain_text("已升级")
    expect(page.locator(f"tr[data-shop='{shop_id}']")).to_contain_text("未升级")
    main_page(page, "shops")
    page.locator(f"tr[data-shop='{upgraded_shop}'] a", has_text=re.compile("示例")).first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("店铺官方账号")
    main_page(page, "official-upgraded")
