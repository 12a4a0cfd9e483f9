"""`make run`'s demo in the console: the printed logins work and every state is on screen at once."""

import io

from playwright.sync_api import expect
from rich.console import Console as RichConsole

from guanhao import demo
from tests.console.conftest import main_page


def test_the_demo_logins_show_shops_in_every_state(console, page):
    demo.load(RichConsole(file=io.StringIO()))
    console.login(page, "yunqi", "yunqi-demo-1")
    rows = page.locator("tr[data-shop]")
    expect(rows).to_have_count(4)
    for shop_id, state in (
        ("shop-1001", "未升级"),
        ("shop-1002", "等待账号持有人确认"),
        ("shop-1003", "已升级"),
        ("shop-1004", "平台审核中"),
    ):
        expect(page.locator(f"tr[data-shop='{shop_id}']")).to_contain_text(state)
    main_page(page, "demo-shops")
    page.get_by_role("button", name="退出登录").click()
    console.login(page, "shenjia", "shenjia-demo-1")
    page.goto(f"{console.url}/shops/shop-5001")
    expect(page.locator(".semi-banner-info")).to_contain_text("平台已为你自动升级")
    main_page(page, "demo-official-auto")
