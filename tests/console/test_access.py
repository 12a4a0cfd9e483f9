"""Who sees what in the consoles, and what protects their forms (issue 10, R-62): another subject's shop is the same
404 as a missing one, forms without the CSRF token or from another origin are refused, every page works without
JavaScript, the language follows the switch (else Accept-Language), and the holder's links that no longer take an
answer say so."""

import datetime as dt
import re

from playwright.sync_api import expect

from tests.console.conftest import PASSWORD, PHONE, main_page, shoot
from tests.console.test_merchant import _merchant, _open_shop, _through_the_wizard
from tests.factories import person


def test_r62_another_subjects_shop_is_the_same_404_page_as_a_missing_one(console, page):
    api = console.api
    _, theirs, _ = api.ready_shop()
    _merchant(console, page, {})
    response = page.goto(f"{console.url}/shops/{theirs}")
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("未找到")
    text = page.locator("main").inner_text().replace(theirs, "X")
    missing = page.goto(f"{console.url}/shops/no-such-shop")
    assert missing.status == 404
    assert page.locator("main").inner_text().replace("no-such-shop", "X") == text
    main_page(page, "not-found")
    for path in ("/upgrade", "/cancel", "/operator", "/ownership-record", "/ownership-record.json"):
        assert page.goto(f"{console.url}/shops/{theirs}{path}").status == 404, path
    # and a change posted at it is refused without touching it
    page.goto(f"{console.url}/shops")
    csrf = page.locator("input[name=csrf_token]").first.input_value()
    r = page.request.post(f"{console.url}/shops/{theirs}/upgrade", form={"csrf_token": csrf, "agree_terms": "1"})
    assert r.status == 404
    assert api.official_account(theirs)["upgrade_status"] == "not_upgraded"


def test_csrf_a_form_without_the_token_or_from_another_origin_is_refused(console, page):
    subject_id, (shop_id,) = _merchant(console, page, {})
    page.goto(f"{console.url}/shops")
    csrf = page.locator("input[name=csrf_token]").first.input_value()
    url = f"{console.url}/shops/{shop_id}/upgrade"
    r = page.request.post(url, form={"agree_terms": "1"})
    assert r.status == 403
    assert "表单已失效" in r.text()
    r = page.request.post(url, form={"csrf_token": "x" * 43, "agree_terms": "1"})
    assert r.status == 403
    r = page.request.post(
        url, form={"csrf_token": csrf, "agree_terms": "1"}, headers={"Origin": "https://evil.example"}
    )
    assert r.status == 403
    assert console.api.official_account(shop_id)["upgrade_status"] == "not_upgraded"
    # the token as a header (what htmx sends) is accepted like the field
    r = page.request.post(url, form={"agree_terms": "1"}, headers={"X-CSRF-Token": csrf}, max_redirects=0)
    assert r.status == 303
    assert console.api.official_account(shop_id)["upgrade_status"] == "in_progress"
    # the login form is protected before sign-in too (double-submit cookie)
    r = page.request.post(f"{console.url}/login", form={"username": "x", "password": "y"})
    assert r.status == 403


def test_sign_out_ends_the_session_on_the_server(console, page):
    _merchant(console, page, {})
    cookie = next(c for c in page.context.cookies() if c["name"] == "gh_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.get_by_role("button", name="退出登录").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("抖店后台")
    page.context.add_cookies([cookie])  # the old cookie, replayed
    page.goto(f"{console.url}/shops")
    expect(page).to_have_url(re.compile(r"/\?next=/shops$"))


def test_logins_are_rate_limited(console, page):
    subject_id = console.api.subject()
    username = console.merchant_user(subject_id)
    page.goto(console.url + "/")
    for _ in range(5):
        page.locator("#f-username").fill(username)
        page.locator("#f-password").fill("wrong-password")
        page.get_by_test_id("login").click()
        expect(page.locator(".semi-banner-danger")).to_contain_text("用户名或密码错误")
    page.locator("#f-username").fill(username)
    page.locator("#f-password").fill(PASSWORD)
    with page.expect_response(re.compile(r"/login$")) as answer:
        page.get_by_test_id("login").click()
    assert answer.value.status == 429
    expect(page.locator(".semi-banner-danger")).to_contain_text("登录尝试过多")


def test_the_language_switch_and_accept_language(console, browser):
    subject_id, shop_id, _ = console.api.ready_shop()
    username = console.merchant_user(subject_id)
    english = browser.new_context(locale="en-US", extra_http_headers={"Accept-Language": "en-US,en;q=0.9"})
    try:
        page = english.new_page()
        page.goto(console.url + "/")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.get_by_role("heading", level=1)).to_have_text("Douyin Shop console")
        page.get_by_role("link", name="中文").click()
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        console.login(page, username)
        expect(page.get_by_role("heading", level=1)).to_have_text("店铺官方账号")
        page.get_by_role("link", name="English").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Shop official accounts")
        expect(page).to_have_url(re.compile(r"/shops$"))
        page.goto(f"{console.url}/shops/{shop_id}")
        expect(page.locator("#account")).to_contain_text("Not upgraded")
        expect(page.locator("#faq")).to_contain_text("Why should I upgrade the official account?")
        main_page(page, "official-english")
    finally:
        english.close()


def test_every_step_works_without_javascript(console, browser):
    api = console.api
    subject_id = api.subject()
    _, shop_id, _ = api.ready_shop(subject_id)
    _, upgraded, _ = api.ready_shop(subject_id)
    api.upgrade(upgraded)
    username = console.merchant_user(subject_id)
    context = browser.new_context(java_script_enabled=False, locale="zh-CN")
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        console.login(page, username)
        # the wizard: plain links and forms, post/redirect/get
        page.goto(f"{console.url}/shops/{shop_id}")
        _through_the_wizard(page)
        expect(page).to_have_url(re.compile(rf"/shops/{shop_id}/applications/app_"))
        expect(page.locator("#toasts")).to_contain_text("已提交升级申请")
        expect(page.locator("#application-live")).to_have_attribute("data-status", "submitted")
        # 更换运营人 without a dialog: the link is the same form as a page
        _open_shop(console, page, upgraded)
        page.get_by_role("link", name="更换运营人").click()
        expect(page).to_have_url(re.compile(r"/operator$"))
        someone = person(name="孙七")
        page.locator("#f-name").fill(someone["name"])
        page.locator("#f-id_number").fill(someone["id_number"])
        page.locator("#f-phone").fill(someone["phone"])
        page.get_by_test_id("get-code").click()
        expect(page.locator("#operator-form")).to_contain_text("验证码已发送")
        page.locator("#f-code").fill(console.latest_sms_code(someone["phone"]))
        page.get_by_test_id("confirm-change").click()
        expect(page).to_have_url(re.compile(rf"/shops/{upgraded}$"))
        expect(page.locator("#toasts")).to_contain_text("运营人已更换")
        expect(page.locator("#account")).to_contain_text("孙*")
        shoot(page, "official-no-javascript")  # axe-core itself needs JavaScript: the same page is checked elsewhere
    finally:
        context.close()


def test_r15_the_holders_expired_answered_and_unknown_links(console, browser):
    api = console.api
    _, shop_id, _ = api.ready_shop()
    _, answered_shop, _ = api.ready_shop()
    expiring = api.submit(shop_id).json()["application_id"]
    answered = api.submit(answered_shop).json()["application_id"]
    assert api.accept(answered).status_code == 200
    phone = browser.new_context(viewport=PHONE, is_mobile=True, locale="zh-CN")
    try:
        page = phone.new_page()
        page.goto(console.holder_url(answered))
        expect(page.locator("[data-state=accepted]")).to_contain_text("您已确认升级")
        api.set_clock(api.now() + dt.timedelta(hours=169))
        response = page.goto(console.holder_url(expiring))
        assert response.status == 200
        expect(page.locator("[data-state=expired]")).to_contain_text("链接已过期")
        main_page(page, "holder-expired", phone_first=True)
        response = page.goto(f"{console.url}/confirm/{'x' * 43}")
        assert response.status == 404
        expect(page.locator("[data-state=unknown]")).to_contain_text("链接无效")
        main_page(page, "holder-unknown", phone_first=True)
    finally:
        phone.close()


def test_one_login_for_both_roles_staff_land_on_the_staff_console(console, page):
    subject_id, shop_id, _ = console.api.ready_shop()
    console.login(page, console.staff_user(), home="/staff")
    expect(page.get_by_role("heading", level=1)).to_have_text("数据看板")
    # the merchant console is not theirs
    assert page.goto(f"{console.url}/shops/{shop_id}").status == 404
    assert page.goto(f"{console.url}/shops").status == 404
