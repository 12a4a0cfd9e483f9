"""`make run`'s demo in the staff console: the printed staff login works, and every chart and list has something
to show — several days of upgrades, a finished wave, rejections, cancels, an application waiting for staff."""

import io

from playwright.sync_api import expect
from rich.console import Console as RichConsole

from guanhao import demo
from tests.console.conftest import main_page
from tests.console.test_staff import rows


def test_the_demo_staff_login_shows_every_chart_and_list(console, page):
    printed = io.StringIO()
    demo.load(RichConsole(file=printed, width=200))
    assert "/staff   sign in as ops / ops-demo-1" in printed.getvalue()
    console.login(page, "ops", "ops-demo-1", home="/staff")
    upgrades = rows(page, "#upgrades-data table")
    manual_days = [r[0] for r in upgrades if r[1] != "0"]
    auto_days = [r[0] for r in upgrades if r[2] != "0"]
    assert len(manual_days) >= 4 and len(auto_days) >= 2, upgrades
    funnel = dict(rows(page, "#funnel-data table"))
    assert int(funnel["已提交"]) > int(funnel["持有人已确认"]) > 0
    reasons = {r[1]: int(r[2]) for r in rows(page, "#reasons-data table")}
    assert reasons["HOLDER_DECLINED"] >= 2 and reasons["STAFF_REJECTED"] == 1
    assert sum(int(n) for _, n in rows(page, "#cancels-data table")) == 2
    main_page(page, "demo-staff-dashboard")
    page.goto(console.url + "/staff/review")
    expect(page.locator("tr[data-application]")).to_have_count(1)
    expect(page.locator("tr[data-application]")).to_contain_text("云栖茶园企业店")
    page.goto(console.url + "/staff/waves")
    expect(page.locator("tr[data-wave]")).to_have_count(2)
    for wave in page.locator("tr[data-wave]").all():
        expect(wave).to_contain_text("完成")
    main_page(page, "demo-staff-waves")
