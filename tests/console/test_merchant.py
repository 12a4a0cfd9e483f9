"""The merchant console (issue 10), end to end in Chromium against a live server: the journeys a merchant takes,
each page checked by axe-core and photographed at desktop and phone width."""

import datetime as dt
import json
import re

from playwright.sync_api import expect

from tests.console.conftest import PHONE, main_page, shoot
from tests.factories import person, phone

WAIT = 15_000  # the pages poll every 2 s


def _merchant(console, page, *shop_fields, account_fields=None):
    """A subject with ready shops (one per entry of `shop_fields`), its merchant signed in."""
    api = console.api
    subject_id = api.subject()
    shops = [api.ready_shop(subject_id, shop_fields=f or None, account_fields=account_fields)[1] for f in shop_fields]
    console.login(page, console.merchant_user(subject_id))
    return subject_id, shops


def _through_the_wizard(page) -> None:
    """From the shop page: every step with its defaults (the holder operates, 自动 type), agreeing at the end."""
    page.get_by_test_id("upgrade").click()
    for step in ("账号类型", "运营人", "确认协议"):
        page.get_by_test_id("next").click()
        expect(page.locator("li.step-process")).to_contain_text(step)
    page.get_by_test_id("agree").check()
    page.get_by_test_id("submit").click()


def _open_shop(console, page, shop_id: str) -> None:
    page.goto(f"{console.url}/shops/{shop_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("店铺官方账号")


def test_login_lists_the_subjects_shops_with_their_states(console, page):
    api = console.api
    subject_id, shop_id, _ = api.ready_shop()
    _, upgraded_shop, _ = api.ready_shop(subject_id)
    api.upgrade(upgraded_shop)
    _, other_subjects_shop, _ = api.ready_shop()
    username = console.merchant_user(subject_id)
    page.goto(console.url + "/")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.get_by_role("heading", level=1)).to_have_text("抖店后台")
    main_page(page, "login")
    console.login(page, username)
    expect(page.locator("tr[data-shop]")).to_have_count(2)  # only the subject's own shops
    expect(page.locator(f"tr[data-shop='{other_subjects_shop}']")).to_have_count(0)
    expect(page.locator(f"tr[data-shop='{upgraded_shop}']")).to_contain_text("已升级")
    expect(page.locator(f"tr[data-shop='{shop_id}']")).to_contain_text("未升级")
    main_page(page, "shops")
    page.locator(f"tr[data-shop='{upgraded_shop}'] a").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("店铺官方账号")
    expect(page.locator("#account")).to_contain_text("商家主动升级")
    # a manual upgrade cannot be cancelled; the button says why instead of failing later
    expect(page.get_by_test_id("cancel")).to_be_disabled()
    expect(page.locator("#cancel-reason")).to_have_text("商家主动升级不支持取消")
    main_page(page, "official-upgraded")


def test_r10_r15_manual_upgrade_through_the_wizard_and_the_holders_phone(console, page, browser):
    _, (shop_id,) = _merchant(console, page, {})
    _open_shop(console, page, shop_id)
    expect(page.locator(".semi-banner-warning")).to_contain_text("官方账号待升级")
    main_page(page, "official-not-upgraded")
    page.get_by_test_id("upgrade").click()

    # 1 资质检查: every check listed, all met
    expect(page.locator("ul.checks li")).to_have_count(11)
    expect(page.locator("ul.checks")).not_to_contain_text("未满足")
    main_page(page, "wizard-checks")
    page.get_by_test_id("next").click()

    # 2 选择账号类型: quota left per type, 自动 by default
    expect(page.locator("input[name=account_type][value='']")).to_be_checked()
    expect(page.locator("#type")).to_contain_text("剩余 1 个（共 1 个）")
    main_page(page, "wizard-type")
    page.get_by_test_id("next").click()

    # 3 运营人: the holder by default; another person's fields are validated before going on
    expect(page.locator("input[name=operator][value=holder]")).to_be_checked()
    page.locator("input[name=operator][value=other]").check()
    page.locator("#f-name").fill("李四")
    page.locator("#f-id_number").fill("110105199003070000")
    page.locator("#f-phone").fill("13912345678")
    page.get_by_test_id("next").click()
    expect(page.locator("#f-id_number-error")).to_have_text("请输入有效的 18 位身份证号")
    main_page(page, "wizard-operator")
    page.locator("input[name=operator][value=holder]").check()
    page.get_by_test_id("next").click()

    # 4 确认协议: submitting without agreeing is refused by the service (TERMS_NOT_ACCEPTED) — the box is required
    expect(page.get_by_test_id("agree")).not_to_be_checked()
    main_page(page, "wizard-confirm")
    page.get_by_test_id("agree").check()
    page.get_by_test_id("submit").click()

    # waiting for the holder, polled
    live = page.locator("#application-live")
    expect(live).to_have_attribute("data-status", "submitted")
    expect(page.locator("#toasts")).to_contain_text("已提交升级申请")
    main_page(page, "application-waiting")
    application_id = page.url.rsplit("/", 1)[1]

    holder = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="zh-CN")
    try:
        phone_page = holder.new_page()
        phone_page.goto(console.holder_url(application_id))
        expect(phone_page.get_by_role("heading", level=1)).to_have_text("官方账号升级确认")
        expect(phone_page.locator("main")).to_contain_text("示例旗舰店")
        expect(phone_page.locator("main")).to_contain_text("2025-09-30")  # the agreement's version
        main_page(phone_page, "holder-confirm", phone_first=True)
        phone_page.get_by_test_id("agree").check()
        phone_page.get_by_test_id("accept").click()
        expect(phone_page.locator("[data-state=accepted]")).to_contain_text("您已确认升级")
        shoot(phone_page, "holder-accepted", phone_first=True)
    finally:
        holder.close()

    expect(live).to_have_attribute("data-status", "succeeded", timeout=WAIT)
    expect(live).to_contain_text("升级成功")
    main_page(page, "application-succeeded")
    _open_shop(console, page, shop_id)
    expect(page.locator("#account")).to_contain_text("已升级")
    expect(page.locator("#trail")).to_contain_text("账号持有人已确认")


def test_r18_declined_then_upgrade_again(console, page, browser):
    subject_id, (shop_id,) = _merchant(console, page, {})
    api = console.api
    application_id = api.submit(shop_id, api.merchant(subject_id)).json()["application_id"]
    holder = browser.new_context(viewport=PHONE, is_mobile=True, locale="zh-CN")
    try:
        phone_page = holder.new_page()
        phone_page.goto(console.holder_url(application_id))
        phone_page.get_by_test_id("decline").click()
        expect(phone_page.locator("[data-state=declined]")).to_contain_text("您已拒绝升级")
    finally:
        holder.close()
    _open_shop(console, page, shop_id)
    banner = page.locator(".semi-banner-danger")
    expect(banner).to_contain_text("升级失败")
    expect(banner).to_contain_text("拒绝了升级")
    main_page(page, "official-failed")
    _through_the_wizard(page)
    expect(page.locator("#application-live")).to_have_attribute("data-status", "submitted")
    _open_shop(console, page, shop_id)
    expect(page.locator("#history tbody tr")).to_have_count(2)
    expect(page.locator("#progress")).to_contain_text("第 2 次申请")


def test_r12_r13_cancel_an_auto_upgrade_and_no_cancel_after_30_days(console, page):
    api = console.api
    _, (shop_id, later_shop) = _merchant(console, page, {}, {})
    assert api.wave(10)["upgraded"] == 2
    _open_shop(console, page, shop_id)
    expect(page.locator(".semi-banner-info")).to_contain_text("平台已为你自动升级")
    expect(page.locator(".semi-banner-info")).to_contain_text("剩余 30 天")
    expect(page.locator("#account")).to_contain_text("100 条/天")
    page.get_by_test_id("cancel").click()
    dialog = page.locator("#cancel-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("投稿上限恢复为 75 条/天")
    main_page(page, "cancel-dialog")
    dialog.get_by_test_id("confirm-cancel").click()
    expect(page.locator("#toasts")).to_contain_text("已取消升级")
    expect(page.locator("#account")).to_contain_text("已取消")
    expect(page.locator("#account")).to_contain_text("75 条/天")

    api.set_clock(api.now() + dt.timedelta(days=31))
    _open_shop(console, page, later_shop)
    expect(page.get_by_test_id("cancel")).to_be_disabled()
    expect(page.locator("#cancel-reason")).to_have_text("已超过30天，不再支持取消")
    main_page(page, "official-cancel-closed")


def test_r24_r42_change_operator_and_rebind_the_login_phone_with_sms_codes(console, page):
    api = console.api
    _, (shop_id,) = _merchant(console, page, {})
    api.upgrade(shop_id)
    _open_shop(console, page, shop_id)

    new_operator = person(name="赵六")
    page.get_by_role("link", name="更换运营人").click()
    dialog = page.locator("#operator-dialog")
    expect(dialog).to_be_visible()
    dialog.locator("#f-name").fill(new_operator["name"])
    dialog.locator("#f-id_number").fill(new_operator["id_number"])
    dialog.locator("#f-phone").fill(new_operator["phone"])
    dialog.get_by_test_id("get-code").click()
    masked = new_operator["phone"][:3] + "****" + new_operator["phone"][-4:]
    expect(dialog).to_contain_text(f"验证码已发送至 {masked}")
    expect(dialog.get_by_test_id("get-code")).to_be_disabled()  # the 60 s resend countdown
    expect(dialog.get_by_test_id("get-code")).to_contain_text("秒后重新获取")
    main_page(page, "operator-dialog")
    dialog.locator("#f-code").fill("000000" if console.latest_sms_code(new_operator["phone"]) != "000000" else "111111")
    dialog.get_by_test_id("confirm-change").click()
    expect(dialog).to_contain_text("验证码错误")
    dialog.locator("#f-code").fill(console.latest_sms_code(new_operator["phone"]))
    dialog.get_by_test_id("confirm-change").click()
    expect(page.locator("#toasts")).to_contain_text("运营人已更换")
    expect(page.locator("#account")).to_contain_text("赵*")

    new_phone = phone()
    page.get_by_role("link", name="换绑").click()
    dialog = page.locator("#phone-dialog")
    dialog.locator("#f-new_phone").fill(new_phone)
    dialog.get_by_test_id("get-code").click()
    expect(dialog.get_by_test_id("get-code")).to_be_disabled()
    main_page(page, "phone-dialog")
    dialog.locator("#f-code").fill(console.latest_sms_code(new_phone))
    dialog.get_by_test_id("confirm-change").click()
    expect(page.locator("#toasts")).to_contain_text("登录手机号已换绑")
    expect(page.locator("#account")).to_contain_text(new_phone[:3] + "****" + new_phone[-4:])
    expect(page.locator("#trail")).to_contain_text("运营人已更换")


def test_batch_upgrade_of_several_shops_each_its_own_application(console, page):
    api = console.api
    subject_id, shops = _merchant(console, page, {}, {}, {})
    personal = api.ready_shop(subject_id, shop_fields={"shop_type": "personal", "name": "个人小店"})[1]
    page.goto(console.url + "/shops")
    for shop_id in [*shops, personal]:
        page.locator(f"tr[data-shop='{shop_id}'] input[name=shop_id]").check()
    page.locator("input[name=agree_terms]").check()
    page.get_by_test_id("batch-upgrade").click()
    expect(page.locator("#toasts")).to_contain_text("已提交 3 家，未通过 1 家")
    expect(page.locator(f"tr[data-shop='{personal}']")).to_contain_text("未提交")
    for shop_id in shops:
        expect(page.locator(f"tr[data-shop='{shop_id}']")).to_contain_text("升级中")
    main_page(page, "batch")
    application_id = api.client.get(f"/api/v1/shops/{shops[0]}/upgrade-applications", headers=api.admin).json()[
        "items"
    ][0]["application_id"]
    assert api.accept(application_id).status_code == 200
    expect(page.locator(f"tr[data-shop='{shops[0]}']")).to_contain_text("已升级", timeout=WAIT)
    expect(page.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "1")


def test_r16_a_big_account_waits_for_staff_then_is_approved_through_the_api(console, page):
    api = console.api
    subject_id, (shop_id,) = _merchant(console, page, {}, account_fields={"followers": 2_000_000})
    application = api.upgrade(shop_id)
    assert application["awaiting_staff_review"]
    _open_shop(console, page, shop_id)
    expect(page.locator(".semi-banner-info")).to_contain_text("平台审核中")
    main_page(page, "official-staff-review")
    r = api.client.post(
        f"/api/v1/admin/upgrade-applications/{application['application_id']}/approve", headers=api.admin
    )
    assert r.status_code == 200, r.text
    expect(page.locator(".semi-banner-success")).to_contain_text("已升级", timeout=WAIT)


def test_notifications_from_the_event_stream(console, page):
    api = console.api
    subject_id, (declined_shop, upgraded_shop, auto_shop) = _merchant(console, page, {}, {}, {})
    merchant = api.merchant(subject_id)
    assert api.decline(api.submit(declined_shop, merchant).json()["application_id"]).status_code == 200
    api.upgrade(upgraded_shop)
    assert api.wave(10)["upgraded"] == 2  # the auto shop, and the declined one (declining is no opt-out, R-11)
    api.set_clock(api.now() + dt.timedelta(days=28))
    page.goto(console.url + "/shops")
    expect(page.locator("#side-nav .badge")).to_be_visible()
    page.get_by_role("link", name=re.compile("站内信")).click()
    notices = page.locator("#notices")
    expect(notices).to_contain_text("平台已为你自动升级")
    expect(notices).to_contain_text("账号持有人已确认")
    expect(notices).to_contain_text("账号持有人已拒绝")
    expect(notices).to_contain_text("升级成功")
    expect(notices).to_contain_text("取消升级即将截止")
    main_page(page, "notifications")
    page.goto(console.url + "/shops")
    expect(page.locator("#side-nav .badge")).to_have_count(0)


def test_r60_ownership_record_as_json_and_printable_page(console, page):
    api = console.api
    _, (shop_id,) = _merchant(console, page, {})
    api.upgrade(shop_id)
    _open_shop(console, page, shop_id)
    with page.expect_download() as download:
        page.get_by_role("link", name="下载（JSON）").first.click()

    record = json.loads(download.value.path().read_text(encoding="utf-8"))
    expected = api.client.get(f"/api/v1/shops/{shop_id}/official-account/ownership-record", headers=api.admin).json()
    same = {k: v for k, v in record.items() if k not in ("generated_at", "digest")}
    assert same == {k: v for k, v in expected.items() if k not in ("generated_at", "digest")}
    page.get_by_role("link", name="升级凭证").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("升级凭证")
    expect(page.locator("main")).to_contain_text(re.compile(r"[0-9a-f]{64}"))
    main_page(page, "ownership-record")
