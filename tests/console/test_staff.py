"""The staff console (issue 11), end to end in Chromium against a live server: sign-in (staff only), the review
queue with the checks run again before deciding, the dashboard's charts from known numbers, the language switch
and CSRF. Every page is checked by axe-core and photographed at desktop and phone width."""

import datetime as dt
import re

from playwright.sync_api import expect

from tests.console.conftest import PASSWORD, main_page

BIG = {"followers": 2_000_000}


def _staff(console, page) -> None:
    console.login(page, console.staff_user(), home="/staff")


def _waiting_for_staff(api, subject_id=None) -> tuple[str, str, str]:
    """A big account's application waiting for staff (R-16): (subject_id, shop_id, application_id)."""
    subject_id, shop_id, _ = api.ready_shop(subject_id, account_fields=BIG)
    application = api.upgrade(shop_id)
    assert application["status"] == "reviewing", application
    return subject_id, shop_id, application["application_id"]


def rows(page, selector: str) -> list[list[str]]:
    """A data table's rows as text (also when its <details> is closed)."""
    return page.locator(selector).evaluate(
        "t => [...t.querySelectorAll('tbody tr')].map(r => [...r.children].map(c => c.textContent.trim()))"
    )


def test_staff_sign_in_and_a_merchant_is_refused_at_the_staff_console(console, page):
    api = console.api
    subject_id = api.subject()
    merchant = console.merchant_user(subject_id)
    page.goto(console.url + "/staff")
    expect(page).to_have_url(re.compile(r"/\?next=/staff$"))
    main_page(page, "staff-login")
    page.locator("#f-username").fill(merchant)
    page.locator("#f-password").fill(PASSWORD)
    with page.expect_response(re.compile(r"/login$")) as answer:
        page.get_by_test_id("login").click()
    assert answer.value.status == 403
    expect(page.locator(".semi-banner-danger")).to_contain_text("此入口仅限平台运营人员登录")
    assert not [c for c in page.context.cookies() if c["name"] == "gh_session"]
    # signed in as a merchant (at the merchant console), the staff pages are still refused, as on the API (403)
    console.login(page, merchant)
    for path in ("/staff", "/staff/review", "/staff/waves", "/staff/audit", "/staff/audit.csv", "/staff/shops"):
        assert page.goto(console.url + path).status == 403, path
    expect(page.get_by_role("heading", level=1)).to_have_text("无权执行此操作")
    page.get_by_role("button", name="退出登录").click()
    # staff sign in and land on the dashboard
    _staff(console, page)
    expect(page.get_by_role("heading", level=1)).to_have_text("数据看板")
    nav = page.locator("#side-nav")
    for item in ("数据看板", "审核队列", "自动升级批次", "操作日志", "店铺查询", "当前策略", "API 密钥与回调"):
        expect(nav).to_contain_text(item)


def test_r16_approve_and_reject_from_the_queue_with_the_checks_run_again(console, page):
    api = console.api
    subject_id = api.subject()
    _, approved_shop, approved = _waiting_for_staff(api, subject_id)
    _, rejected_shop, rejected = _waiting_for_staff(api)
    changed_subject, changed_shop, changed = _waiting_for_staff(api)
    _staff(console, page)
    page.locator("#side-nav").get_by_role("link", name="审核队列").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("审核队列")
    expect(page.locator("tr[data-application]")).to_have_count(3)
    main_page(page, "staff-review-queue")

    # every check passes now: approving upgrades the account
    page.locator(f"tr[data-application='{approved}']").get_by_test_id("open-review").click()
    expect(page.locator("#recheck .semi-banner-success")).to_contain_text("重新校验：全部条件满足")
    expect(page.locator("#recheck li[data-check]")).to_have_count(11)
    expect(page.locator("#consents")).to_contain_text("协议版本")
    main_page(page, "staff-review-detail")
    page.get_by_test_id("approve").click()
    expect(page.locator("#toasts")).to_contain_text("已通过：账号已升级")
    expect(page.locator("tr[data-application]")).to_have_count(2)
    assert api.official_account(approved_shop)["upgrade_status"] == "upgraded"

    # a reason is required to reject; the merchant reads it as STAFF_REJECTED
    page.goto(f"{console.url}/staff/review/{rejected}")
    with page.expect_response(re.compile(r"/reject$")) as answer:
        page.get_by_test_id("reject").click()
    assert answer.value.status == 422
    expect(page.locator("#f-reason-error")).to_have_text("请填写驳回原因，商家会看到该原因")
    assert api.application(rejected)["status"] == "reviewing"
    main_page(page, "staff-review-reason-required")
    page.locator("#f-reason").fill("营业执照信息与账号主体不一致")
    page.get_by_test_id("reject").click()
    expect(page.locator("#toasts")).to_contain_text("已驳回")
    after = api.application(rejected)
    assert after["status"] == "rejected"
    assert [(r["code"], r["message"]) for r in after["reasons"]] == [("STAFF_REJECTED", "营业执照信息与账号主体不一致")]
    assert api.official_account(rejected_shop)["upgrade_status"] == "not_upgraded"

    # the world changed since the holder confirmed: the page says so before deciding, and approving rejects
    api.shop(changed_subject, changed_shop, status="suspended")
    page.goto(f"{console.url}/staff/review/{changed}")
    expect(page.locator("#recheck .semi-banner-danger")).to_contain_text("当前有 1 项条件未满足")
    expect(page.locator("#recheck li[data-check='SHOP_NOT_ACTIVE']")).to_contain_text("未满足")
    page.get_by_test_id("approve").click()
    expect(page.locator("#toasts")).to_contain_text("重新校验未通过")
    assert [r["code"] for r in api.application(changed)["reasons"]] == ["SHOP_NOT_ACTIVE"]
    expect(page.locator("tr[data-application]")).to_have_count(0)
    expect(page.locator("#queue")).to_contain_text("暂无待审核的申请")


def test_the_dashboard_draws_its_charts_from_known_numbers(console, page):
    api = console.api
    low = {"experience_score": 4.0}  # below the waves' minimum: only the auto shop is a wave's candidate
    subject_id = api.subject()
    _, upgraded, _ = api.ready_shop(subject_id, shop_fields=low)
    _, declined, _ = api.ready_shop(subject_id, shop_fields=low)
    _, waiting, _ = api.ready_shop(subject_id, shop_fields=low)
    _, auto, _ = api.ready_shop(subject_id, shop_fields={"experience_score": 4.9})
    today = dt.datetime(2026, 5, 20, 2, 0, tzinfo=dt.UTC)  # 10:00 in Beijing
    api.set_clock(today - dt.timedelta(days=2))
    api.upgrade(upgraded)  # 05-18: one manual upgrade
    api.set_clock(today - dt.timedelta(days=1))
    r = api.submit(declined)
    assert api.decline(r.json()["application_id"]).status_code == 200  # 05-19: the holder declined
    api.set_clock(today)
    assert api.wave(5)["upgraded"] == 1  # 05-20: one auto upgrade…
    r = api.client.post(f"/api/v1/shops/{auto}/official-account/cancel-upgrade", headers=api.admin)
    assert r.status_code == 200, r.text  # …cancelled the same day
    assert api.submit(waiting).status_code == 201  # and one waiting for its holder

    _staff(console, page)
    page.goto(console.url + "/staff?days=7")
    kpis = page.locator("#kpis")
    expect(kpis.locator("[data-kpi=upgraded] dd")).to_have_text("1")
    expect(kpis.locator("[data-kpi=in-progress] dd")).to_have_text("1")
    expect(kpis.locator("[data-kpi=waiting] dd")).to_have_text("3")
    expect(kpis.locator("[data-kpi=cancelled] dd")).to_have_text("1")
    expect(kpis.locator("[data-kpi=cancel-rate] dd")).to_have_text("50.0%")
    for chart in ("upgrades", "funnel", "reasons", "cancels"):
        svg = page.locator(f"#{chart}-svg")
        expect(svg).to_have_attribute("role", "img")
        assert svg.locator("rect").count() >= 1, chart
    upgrades = {row[0]: row[1:] for row in rows(page, "#upgrades-data table")}
    assert len(upgrades) == 7
    assert upgrades["2026-05-18"] == ["1", "0", "1"]
    assert upgrades["2026-05-19"] == ["0", "0", "0"]
    assert upgrades["2026-05-20"] == ["0", "1", "1"]
    assert rows(page, "#funnel-data table") == [["已提交", "3"], ["持有人已确认", "1"], ["升级成功", "1"]]
    assert rows(page, "#reasons-data table") == [["账号实名人拒绝了升级", "HOLDER_DECLINED", "1"]]
    cancels = dict(r for r in rows(page, "#cancels-data table"))
    assert cancels["2026-05-20"] == "1" and sum(map(int, cancels.values())) == 1
    page.locator("#upgrades-data summary").click()
    expect(page.locator("#upgrades-data table")).to_be_visible()
    main_page(page, "staff-dashboard")
    # a window of one day: only today's figures
    page.goto(console.url + "/staff?days=1")
    assert [r[0] for r in rows(page, "#upgrades-data table")] == ["2026-05-20"]
    expect(page.locator("#chart-reasons")).to_contain_text("该时间范围内没有被驳回的申请")


def test_the_staff_console_speaks_english_when_switched(console, page):
    _staff(console, page)
    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect(page.locator("#side-nav")).to_contain_text("Review queue")
    expect(page.locator("#kpis")).to_contain_text("Waiting to upgrade")
    page.locator("#side-nav").get_by_role("link", name="Auto-upgrade waves").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Auto-upgrade waves")
    expect(page.locator("#new-wave")).to_contain_text("New wave: dry run first")
    main_page(page, "staff-waves-english")
    page.get_by_role("link", name="中文").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("自动升级批次")


def test_csrf_staff_forms_without_the_token_or_from_another_origin_are_refused(console, page):
    api = console.api
    _, _, application = _waiting_for_staff(api)
    _staff(console, page)
    page.goto(f"{console.url}/staff/review/{application}")
    csrf = page.locator("input[name=csrf_token]").first.input_value()
    url = f"{console.url}/staff/review/{application}/reject"
    assert page.request.post(url, form={"reason": "x"}).status == 403
    assert page.request.post(url, form={"reason": "x", "csrf_token": "y" * 43}).status == 403
    r = page.request.post(url, form={"reason": "x", "csrf_token": csrf}, headers={"Origin": "https://evil.example"})
    assert r.status == 403
    assert page.request.post(f"{console.url}/staff/waves", form={"limit": "5"}).status == 403
    assert api.application(application)["status"] == "reviewing"
    page.goto(f"{console.url}/staff/waves")
    expect(page.locator("#history")).to_contain_text("暂无批次")
    # the token as a header (what htmx sends) is accepted like the field
    r = page.request.post(
        f"{console.url}/staff/review/{application}/approve", headers={"X-CSRF-Token": csrf}, max_redirects=0
    )
    assert r.status == 303
    assert api.application(application)["status"] == "succeeded"
