"""The staff console's operations (issue 11) in Chromium against a live server: auto-upgrade waves from the dry run
to done with live progress, a stopped wave, the audit trail filtered, verified and exported, a shop looked up across
subjects, and the policy, API keys and webhook pages. Every page is checked by axe-core and photographed."""

import csv
import io
import re

import pytest
from playwright.sync_api import expect

from guanhao import clock
from guanhao.db import session_scope
from guanhao.policy import get_policy
from guanhao.upgrades import waves
from tests.console.conftest import main_page
from tests.console.test_staff import _staff, _waiting_for_staff
from tests.factories import person

HIGH = {"experience_score": 4.9}


def _started_elsewhere(limit: int) -> str:
    """A wave started (`waves.start`) whose work no process has taken up yet: what its row says is all there is."""
    with session_scope() as session:
        wave = waves.start(
            session, limit=limit, min_score=None, policy=get_policy(), actor="staff:elsewhere", now=clock.now(session)
        )
        return wave.id


def test_r11_a_wave_from_the_dry_run_to_done(console, page):
    api = console.api
    subject_id = api.subject()
    upgradable = [api.ready_shop(subject_id, shop_fields=HIGH)[1] for _ in range(2)]
    api.ready_shop(shop_fields=HIGH, account_fields={"followers": 2_000_000})  # waits for staff: skipped
    api.ready_shop(shop_fields=HIGH | {"shop_type": "personal"})  # never eligible: skipped
    api.ready_shop(shop_fields={"experience_score": 4.0})  # below the minimum: not a candidate
    _staff(console, page)
    page.locator("#side-nav").get_by_role("link", name="自动升级批次").click()
    expect(page.locator("#history")).to_contain_text("暂无批次")
    main_page(page, "staff-waves")

    # the dry run writes nothing and counts the skips by reason
    page.locator("#f-limit").fill("10")
    page.get_by_test_id("dry-run").click()
    expect(page.locator("#dry-run")).to_contain_text("预演：将升级 2 家店铺")
    expect(page.locator("#dry-run")).to_contain_text("扫描 4 家，跳过 2 家")
    expect(page.locator("tr[data-reason='NEEDS_STAFF_REVIEW']")).to_contain_text("1")
    expect(page.locator("tr[data-reason='SHOP_TYPE_NOT_ELIGIBLE']")).to_contain_text("1")
    assert all(api.official_account(s)["upgrade_status"] == "not_upgraded" for s in upgradable)
    main_page(page, "staff-waves-dry-run")

    # start: the wave page follows the wave's row until it is done
    page.get_by_test_id("start-wave").click()
    expect(page).to_have_url(re.compile(r"/staff/waves/wave_[0-9a-f]+$"))
    live = page.locator("#wave-live")
    expect(live).to_have_attribute("data-status", "done")
    expect(live.locator("[data-figure=upgraded] dd")).to_have_text("2")
    expect(live.locator("[data-figure=skipped] dd")).to_have_text("2")
    expect(live.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "2")
    expect(live).not_to_have_attribute("hx-get", re.compile(".*"))  # done: no more polling
    expect(page.get_by_test_id("stop")).to_have_count(0)
    main_page(page, "staff-wave-done")
    assert all(api.official_account(s)["origin"] == "auto" for s in upgradable)
    page.locator("#side-nav").get_by_role("link", name="自动升级批次").click()
    expect(page.locator("tr[data-wave]")).to_have_count(1)
    expect(page.locator("tr[data-wave]")).to_contain_text("完成")


@pytest.mark.no_worker
def test_r11_live_progress_by_polling_while_a_worker_works(console, page):
    api = console.api
    subject_id = api.subject()
    for _ in range(3):
        api.ready_shop(subject_id, shop_fields=HIGH)
    wave_id = _started_elsewhere(limit=3)
    _staff(console, page)
    page.goto(f"{console.url}/staff/waves/{wave_id}")
    live = page.locator("#wave-live")
    expect(live).to_have_attribute("data-status", "running")
    expect(live).to_have_attribute("hx-get", f"/staff/waves/{wave_id}/live")
    expect(live.locator("[data-figure=scanned] dd")).to_have_text("0")
    main_page(page, "staff-wave-running")
    seen = []

    def after_each_chunk(wave):
        # the page, polling every second, shows each chunk's committed figures
        expect(live.locator("[data-figure=upgraded] dd")).to_have_text(str(wave.upgraded))
        seen.append(wave.upgraded)

    waves.work(wave_id, get_policy(), chunk=1, progress=after_each_chunk)
    assert seen == [1, 2, 3]
    expect(live).to_have_attribute("data-status", "done")
    expect(live.locator(".semi-tag")).to_have_text("完成")


@pytest.mark.no_worker
def test_r11_a_wave_is_stopped_after_a_confirmation(console, page):
    api = console.api
    api.ready_shop(shop_fields=HIGH)
    wave_id = _started_elsewhere(limit=5)
    _staff(console, page)
    page.goto(f"{console.url}/staff/waves/{wave_id}")
    page.get_by_test_id("stop").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("终止批次")
    main_page(page, "staff-wave-stop")
    page.get_by_test_id("confirm-stop").click()
    expect(page.locator("#toasts")).to_contain_text("批次已终止")
    live = page.locator("#wave-live")
    expect(live).to_have_attribute("data-status", "cancelled")
    expect(live.locator(".semi-tag")).to_have_text("已终止")
    expect(page.get_by_test_id("stop")).to_have_count(0)
    # a worker that comes later finds it stopped and does nothing
    assert waves.work(wave_id, get_policy()).upgraded == 0
    trail = [(a["action"], a["actor"].split(":")[0]) for a in api.audit(wave_id)]
    assert trail == [("wave.started", "staff"), ("wave.cancelled", "staff")]


def test_r60_the_trail_filtered_its_chains_verified_and_exported(console, page, tmp_path):
    api = console.api
    holder = person()
    _, shop_id, _ = api.ready_shop(holder=holder)
    application = api.upgrade(shop_id)
    _, other_shop, _ = api.ready_shop()
    api.upgrade(other_shop)
    _staff(console, page)
    page.locator("#side-nav").get_by_role("link", name="操作日志").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("操作日志")

    page.locator("#f-shop_id").fill(shop_id)
    page.get_by_test_id("filter").click()
    entries = page.locator("#entries tr[data-seq]")
    expect(page.locator("#entries a.hint", has_text=other_shop)).to_have_count(0)
    expect(entries.first).to_be_visible()
    shops = page.locator("#entries tr[data-seq] a.hint").all_text_contents()
    assert shops and set(shops) == {shop_id}
    page.locator("#f-action").select_option("upgrade.succeeded")
    page.get_by_test_id("filter").click()
    expect(entries).to_have_count(1)
    expect(entries).to_contain_text(application["application_id"])
    expect(entries).to_contain_text("升级成功")
    main_page(page, "staff-audit")

    page.get_by_test_id("verify").click()
    expect(page.locator("#verification .semi-banner-success")).to_contain_text("操作日志完整")
    expect(entries).to_have_count(1)  # the filters stay

    page.locator("#f-action").select_option("")
    page.get_by_test_id("filter").click()
    expect(page.get_by_test_id("export")).to_have_attribute("href", f"/staff/audit.csv?shop_id={shop_id}")
    expect(entries).not_to_have_count(1)
    with page.expect_download() as download:
        page.get_by_test_id("export").click()
    path = tmp_path / "audit.csv"
    download.value.save_as(path)
    text = path.read_text(encoding="utf-8-sig")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0][:6] == ["序号", "时间（北京时间）", "操作人", "角色", "动作", "动作代码"]
    assert len(table) - 1 == entries.count()
    assert {row[9] for row in table[1:]} == {shop_id}
    assert "upgrade.succeeded" in {row[5] for row in table[1:]}
    # the holder (the operator) appears masked, never in clear
    for clear in (holder["phone"], holder["id_number"], holder["name"]):
        assert clear not in text
    assert re.search(r"1[3-9]\d\*{4}\d{4}", text)


def test_r62_a_shop_is_looked_up_across_subjects(console, page):
    api = console.api
    one = api.subject(name="杭州查询甲有限公司")
    two = api.subject(name="深圳查询乙有限公司")
    _, first, _ = api.ready_shop(one, shop_fields={"name": "查询测试茶叶店"})
    _, second, _ = api.ready_shop(two, shop_fields={"name": "查询测试茶具店"})
    api.upgrade(second)
    _staff(console, page)
    page.locator("#side-nav").get_by_role("link", name="店铺查询").click()
    page.get_by_test_id("query").fill("查询测试")
    page.get_by_test_id("search").click()
    expect(page.locator("tr[data-shop]")).to_have_count(2)
    expect(page.locator(f"tr[data-shop='{first}']")).to_contain_text("杭州查询甲有限公司")
    expect(page.locator(f"tr[data-shop='{first}']")).to_contain_text("未升级")
    expect(page.locator(f"tr[data-shop='{second}']")).to_contain_text("深圳查询乙有限公司")
    expect(page.locator(f"tr[data-shop='{second}']")).to_contain_text("已升级")
    main_page(page, "staff-shops")
    page.locator(f"tr[data-shop='{second}'] a").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("查询测试茶具店")
    expect(page.locator("#account")).to_contain_text("已升级")
    expect(page.locator("#account")).to_contain_text("商家主动升级")
    expect(page.locator("#applications tr[data-application]")).to_have_count(1)
    expect(page.locator("#trail tr[data-action='upgrade.succeeded']")).to_have_count(1)
    assert re.search(r"1[3-9]\d\*{4}\d{4}", page.locator("#account").inner_text())
    main_page(page, "staff-shop")
    page.goto(f"{console.url}/staff/shops?q={two}")  # by the subject's id
    expect(page.locator("tr[data-shop]")).to_have_count(1)
    page.goto(f"{console.url}/staff/shops?q=没有这个店")
    expect(page.locator("#results")).to_contain_text("没有与“没有这个店”匹配的店铺")


def test_the_policy_api_keys_and_webhook_health(console, page):
    api = console.api
    subject_id = api.subject()
    r = api.client.post("/api/v1/admin/webhook-endpoints", json={"url": "http://127.0.0.1:9/hooks"}, headers=api.admin)
    assert r.status_code == 201, r.text
    endpoint_id = r.json()["endpoint_id"]
    _staff(console, page)
    page.locator("#side-nav").get_by_role("link", name="当前策略").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("当前策略")
    expect(page.locator("main")).to_contain_text("staff_review_min_followers")
    expect(page.locator("main")).to_contain_text("1000000")
    main_page(page, "staff-policy")

    page.locator("#side-nav").get_by_role("link", name="API 密钥与回调").click()
    expect(page.locator(f"tr[data-endpoint='{endpoint_id}']")).to_contain_text("正常")
    page.locator("#f-role").select_option("merchant")
    page.locator("#f-subject_id").fill(subject_id)
    page.locator("#f-label").fill("ERP 对接")
    page.get_by_test_id("create-key").click()
    token = page.locator("#new-token").inner_text().strip()
    assert token.startswith("gh_mch_")
    r = api.client.get(f"/api/v1/subjects/{subject_id}/quotas", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    row = page.locator("tr[data-key]", has_text="ERP 对接")
    expect(row).to_contain_text("有效")
    main_page(page, "staff-integrations")
    row.get_by_role("button", name="吊销").click()
    expect(page.locator("#toasts")).to_contain_text("已吊销")
    expect(page.locator("tr[data-key]", has_text="ERP 对接")).to_contain_text("已于")
    r = api.client.get(f"/api/v1/subjects/{subject_id}/quotas", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_a_merchant_key_for_an_unknown_subject_is_refused_on_the_page(console, page):
    _staff(console, page)
    page.goto(f"{console.url}/staff/integrations")
    page.locator("#f-role").select_option("merchant")
    page.locator("#f-subject_id").fill("no-such-subject")
    with page.expect_response(re.compile(r"/staff/api-keys$")) as answer:
        page.get_by_test_id("create-key").click()
    assert answer.value.status == 404
    expect(page.locator(".semi-banner-danger")).to_be_visible()
    expect(page.locator("#new-token")).to_have_count(0)


def test_the_review_queue_links_the_shop_page(console, page):
    _, shop_id, application = _waiting_for_staff(console.api)
    _staff(console, page)
    page.goto(f"{console.url}/staff/shops/{shop_id}")
    page.locator(f"#applications a[href='/staff/review/{application}']").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("审核申请")
