"""Demo data for `make run`: subjects, shops and accounts in every state of the upgrade flow."""

import datetime as dt

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from guanhao import clock
from guanhao.auth import service as auth
from guanhao.auth import users
from guanhao.db import session_scope
from guanhao.pii import id_check_char
from guanhao.policy import get_policy
from guanhao.settings import get_settings
from guanhao.subjects import service as subjects
from guanhao.subjects.models import Subject
from guanhao.subjects.schemas import AccountIn, BindingIn, ShopIn, SubjectIn
from guanhao.upgrades import service as upgrades
from guanhao.upgrades import waves

ACTOR = "demo-data"


def _id(n: int) -> str:
    first17 = f"33010619880512{n:03d}"
    return first17 + id_check_char(first17)


def _person(n: int, name: str) -> dict:
    return {"name": name, "id_number": _id(n), "phone": f"1390571{n:04d}"}


# (shop_id, shop name, subject, shop_type, status, score, account followers, verified, violations, scenario)
SHOPS = [
    ("shop-1001", "云栖茶叶官方旗舰店", "subj-hz-tea", "official_flagship", "active", 4.9, 86_000, True, 0, "eligible"),
    ("shop-1002", "云栖茶具专卖店", "subj-hz-tea", "specialty", "active", 4.7, 23_000, True, 0, "submitted"),
    ("shop-1003", "云栖茶点专营店", "subj-hz-tea", "franchise", "active", 4.5, 15_000, True, 0, "succeeded"),
    ("shop-1004", "云栖茶园企业店", "subj-hz-tea", "enterprise", "active", 4.2, 1_350_000, True, 0, "staff_review"),
    ("shop-2001", "老街小吃个体店", "subj-laojie", "individual", "active", 4.6, 5_200, True, 0, "declined"),
    ("shop-2002", "老街小吃二店", "subj-laojie", "individual", "active", 4.4, 3_100, True, 0, "expired"),
    ("shop-3001", "环球美妆跨境旗舰店", "subj-global", "flagship", "active", 4.8, 240_000, True, 0, "withdrawn"),
    ("shop-4001", "小李的个人店", "subj-li", "personal", "active", 4.9, 900, True, 0, "ineligible"),
    ("shop-4002", "整改中的旗舰店", "subj-global", "flagship", "suspended", 3.9, 7_000, False, 2, "ineligible"),
    ("shop-5001", "深家居官方旗舰店", "subj-sz-home", "official_flagship", "active", 5.0, 310_000, True, 0, "auto"),
    ("shop-5002", "深家居厨具专营店", "subj-sz-home", "franchise", "active", 5.0, 42_000, True, 0, "auto_cancelled"),
]
# Only the two shops above score this high: the demo wave upgrades them and nothing else (the history's auto shops
# score higher, and were upgraded, or cancelled, days before).
DEMO_WAVE_MIN_SCORE = 4.95

# A week of history for the staff console's charts (数据看板): (shop_id, name, shop_type, days ago, what happened,
# followers). Manual upgrades on several days, declines, a big account rejected by staff, and (in sandbox mode,
# where the service clock can be set) an earlier wave with one of its upgrades cancelled two days later.
HISTORY_SUBJECT = ("subj-bj-food", "北京稻香食品有限公司")
HISTORY = [
    ("shop-6001", "稻香糕点旗舰店", "flagship", 6, "upgraded", 52_000),
    ("shop-6002", "稻香月饼专卖店", "specialty", 5, "upgraded", 31_000),
    ("shop-6003", "稻香点心专营店", "franchise", 4, "upgraded", 12_000),
    ("shop-6004", "稻香熟食专营店", "franchise", 3, "declined", 8_000),
    ("shop-6005", "稻香茶点专卖店", "specialty", 2, "upgraded", 21_000),
    ("shop-6006", "稻香官方旗舰店", "official_flagship", 2, "staff_rejected", 1_600_000),
    ("shop-6007", "稻香糖果专营店", "franchise", 1, "upgraded", 9_500),
    ("shop-6008", "稻香炒货专营店", "franchise", 1, "declined", 4_200),
    ("shop-6009", "稻香速冻专营店", "franchise", 3, "auto", 33_000),
    ("shop-6010", "稻香礼盒专卖店", "specialty", 3, "auto_cancelled", 18_000),
]
HISTORY_WAVE_MIN_SCORE = 4.97
STAFF_REJECTION = "营业执照信息与账号主体不一致，请更新资质后重新升级"

SUBJECTS = {
    "subj-hz-tea": ("杭州云栖茶业有限公司", "enterprise", False),
    "subj-laojie": ("西安老街小吃店", "individual_business", False),
    "subj-global": ("Global Beauty Trading Ltd.", "enterprise", True),
    "subj-li": ("李小龙", "personal", False),
    "subj-sz-home": ("深圳深家居用品有限公司", "enterprise", False),
}

# Console logins (商家后台 at /), one per subject with shops in several states, and one platform staff member.
USERS = [
    ("yunqi", "yunqi-demo-1", "merchant", "subj-hz-tea"),
    ("laojie", "laojie-demo-1", "merchant", "subj-laojie"),
    ("shenjia", "shenjia-demo-1", "merchant", "subj-sz-home"),
    ("ops", "ops-demo-1", "staff", None),
]

HOLDERS = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄强", "周杰", "吴婷", "郑浩"]


def load(console: Console, *, reset: bool = False) -> None:
    policy = get_policy()
    public_url = get_settings().public_url
    with session_scope() as session:
        if session.get(Subject, "subj-hz-tea") is not None and not reset:
            console.print("demo data is loaded already (use --reset to load it again)")
            _print_access(console, session, public_url)
            return
    # The week before today first: its wave must not meet today's shops.
    history = _history(policy, public_url)
    with session_scope() as session:
        now = clock.now(session)
        for sid, (name, stype, cross) in SUBJECTS.items():
            subjects.put_subject(
                session,
                sid,
                SubjectIn(name=name, subject_type=stype, cross_border=cross, license_valid_until=dt.date(2030, 12, 31)),
                actor=ACTOR,
                now=now,
            )
        rows = []
        for n, (shop_id, name, sid, stype, status, score, followers, verified, violations, scenario) in enumerate(
            SHOPS, 1
        ):
            subjects.put_shop(
                session,
                shop_id,
                ShopIn(subject_id=sid, name=name, shop_type=stype, status=status, experience_score=score),
                actor=ACTOR,
                now=now,
            )
            account_id = f"dy-{shop_id.split('-')[1]}"
            subjects.put_account(
                session,
                account_id,
                AccountIn(
                    nickname=name.replace("店", "号"),
                    followers=followers,
                    status="normal" if verified else "restricted",
                    real_name_verified=verified,
                    violations_90d=violations,
                    login_phone=f"1380000{n:04d}",
                    holder=_person(n, HOLDERS[n - 1]),
                ),
                actor=ACTOR,
                now=now,
            )
            subjects.bind(session, shop_id, BindingIn(account_id=account_id), actor=ACTOR, now=now)
            rows.append(
                [
                    shop_id,
                    name,
                    sid,
                    scenario,
                    _play(session, scenario, shop_id, policy=policy, now=now, public_url=public_url),
                ]
            )
    rows += history
    _auto_upgrades(policy, rows)
    with session_scope() as session:
        for username, password, role, subject_id in USERS:
            users.create_user(
                session,
                username=username,
                password=password,
                role=role,
                subject_id=subject_id,
                actor=ACTOR,
                now=clock.now(session),
            )
    table = Table(title="demo shops (演示店铺)")
    for col in ("shop", "name", "subject", "scenario", "state"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    with session_scope() as session:
        _print_access(console, session, public_url)


def _auto_upgrades(policy, rows: list[list[str]]) -> None:
    """系统自动升级 for the 'auto' shops through a real wave, then one of them cancelled (取消升级)."""
    with session_scope() as session:
        wave = waves.start(
            session, limit=10, min_score=DEMO_WAVE_MIN_SCORE, policy=policy, actor="demo-data", now=clock.now(session)
        )
    waves.work(wave.id, policy)
    with session_scope() as session:
        upgrades.cancel(session, "shop-5002", policy, actor="merchant:demo", now=clock.now(session))
    for row in rows:
        if row[3] == "auto":
            row[4] = "succeeded (auto, cancellable 30 days)"
        elif row[3] == "auto_cancelled":
            row[4] = "cancelled (auto upgrade cancelled)"


def _history(policy, public_url: str) -> list[list[str]]:
    """The days before today (see HISTORY), each verb at its own time; the earlier wave only in sandbox mode."""
    rows = []
    with session_scope() as session:
        now = clock.now(session)
        sid, subject_name = HISTORY_SUBJECT
        licence = dt.date(2030, 12, 31)
        subjects.put_subject(
            session,
            sid,
            SubjectIn(name=subject_name, subject_type="enterprise", cross_border=False, license_valid_until=licence),
            actor=ACTOR,
            now=now - dt.timedelta(days=8),
        )
        for n, (shop_id, name, stype, days, scenario, followers) in enumerate(HISTORY, 40):
            before = now - dt.timedelta(days=8)
            score = HISTORY_WAVE_MIN_SCORE if scenario.startswith("auto") else 4.7
            shop = ShopIn(subject_id=sid, name=name, shop_type=stype, status="active", experience_score=score)
            subjects.put_shop(session, shop_id, shop, actor=ACTOR, now=before)
            account_id = f"dy-{shop_id.split('-')[1]}"
            holder = _person(n, "孙" + "一二三四五六七八九十"[n % 10])
            account = AccountIn(
                nickname=name.replace("店", "号"),
                followers=followers,
                status="normal",
                real_name_verified=True,
                violations_90d=0,
                login_phone=f"1380001{n:04d}",
                holder=holder,
            )
            subjects.put_account(session, account_id, account, actor=ACTOR, now=before)
            subjects.bind(session, shop_id, BindingIn(account_id=account_id), actor=ACTOR, now=before)
            state = "waiting for the earlier wave"
            if not scenario.startswith("auto"):
                state = _past(session, scenario, shop_id, policy=policy, at=now - dt.timedelta(days=days, hours=2),
                              public_url=public_url)  # fmt: skip
            rows.append([shop_id, name, sid, f"{scenario}, {days} days ago", state])
    if not get_settings().sandbox:
        return rows
    with session_scope() as session:
        now = clock.now(session)
        was_set = clock.sandbox_now(session) is not None
        earlier = now - dt.timedelta(days=3)
        clock.set_sandbox_now(session, earlier)
        wave = waves.start(
            session, limit=10, min_score=HISTORY_WAVE_MIN_SCORE, policy=policy, actor="staff:demo", now=earlier
        )
    waves.work(wave.id, policy)
    with session_scope() as session:
        upgrades.cancel(session, "shop-6010", policy, actor="merchant:demo", now=now - dt.timedelta(days=1))
        if was_set:
            clock.set_sandbox_now(session, now)
        else:
            session.delete(session.get_one(clock.SandboxClock, 1))
    for row in rows:
        if row[0] == "shop-6009":
            row[4] = "succeeded (auto, 3 days ago)"
        elif row[0] == "shop-6010":
            row[4] = "cancelled (auto upgrade 3 days ago, cancelled 1 day ago)"
    return rows


def _past(session, scenario: str, shop_id: str, *, policy, at: dt.datetime, public_url: str) -> str:
    app = upgrades.submit(
        session,
        shop_id,
        policy,
        account_type=None,
        operator=None,
        agree_terms=True,
        actor="merchant:demo",
        now=at,
        public_url=public_url,
    )
    token = upgrades.confirmation_token(app)
    assert token is not None
    answered = at + dt.timedelta(minutes=20)
    if scenario == "declined":
        upgrades.decline(session, token, policy, now=answered)
    else:
        upgrades.accept(session, token, policy, now=answered)
    if scenario == "staff_rejected":
        upgrades.staff_reject(
            session, app.id, reason=STAFF_REJECTION, actor="staff:demo", now=answered + dt.timedelta(hours=1)
        )
    session.refresh(app)
    return app.status


def _play(session, scenario: str, shop_id: str, *, policy, now: dt.datetime, public_url: str) -> str:
    if scenario in ("eligible", "ineligible"):
        return "not_upgraded"
    if scenario.startswith("auto"):
        return "waiting for the demo wave"
    started = now - dt.timedelta(days=8) if scenario == "expired" else now - dt.timedelta(hours=2)
    app = upgrades.submit(
        session,
        shop_id,
        policy,
        account_type=None,
        operator=None,
        agree_terms=True,
        actor="merchant:demo",
        now=started,
        public_url=public_url,
    )
    token = upgrades.confirmation_token(app)
    assert token is not None, "a submitted application always has a holder's token"
    later = started + dt.timedelta(minutes=30)
    if scenario in ("succeeded", "staff_review"):
        upgrades.accept(session, token, policy, now=later)
    elif scenario == "declined":
        upgrades.decline(session, token, policy, now=later)
    elif scenario == "withdrawn":
        upgrades.withdraw(session, app.id, actor="merchant:demo", now=later)
    elif scenario == "expired":
        upgrades.expire_confirmations(session, now=now)
    session.refresh(app)
    return app.status + (" (waiting for staff)" if app.awaiting_staff else "")


def _print_access(console: Console, session, public_url: str) -> None:
    now = clock.now(session)
    _, admin_token = auth.create_key(session, role="admin", subject_id=None, label="demo admin", actor="demo", now=now)
    _, merchant_token = auth.create_key(
        session, role="merchant", subject_id="subj-hz-tea", label="demo merchant", actor="demo", now=now
    )
    pending = session.scalar(
        select(upgrades.Application).where(
            upgrades.Application.shop_id == "shop-1002", upgrades.Application.status == "submitted"
        )
    )
    api = f"{public_url}/api/v1"
    console.print(
        f"\n[bold]Credentials (shown once; stored hashed)[/bold]\n"
        f"  admin token:    {admin_token}\n"
        f"  merchant token: {merchant_token}   (subject subj-hz-tea, 杭州云栖茶业)\n",
        soft_wrap=True,
    )
    console.print("[bold]Try[/bold]")
    lines = [
        f"curl -s {api}/shops/shop-1001/eligibility -H 'Authorization: Bearer {merchant_token}'",
        f"curl -s {api}/subjects/subj-hz-tea/quotas -H 'Authorization: Bearer {merchant_token}'",
        f"curl -s -X POST {api}/shops/shop-1001/upgrade-applications -H 'Authorization: Bearer {merchant_token}' "
        "-H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' -d '{\"agree_terms\": true}'",
        f"curl -s {api}/shops/shop-1003/official-account -H 'Authorization: Bearer {merchant_token}'",
        f"curl -s {api}/admin/review-queue -H 'Authorization: Bearer {admin_token}'",
    ]
    holder_page = None
    token = upgrades.confirmation_token(pending) if pending is not None else None
    if token:
        lines.append(f"curl -s -X POST {api}/confirmations/{token}/accept")
        holder_page = upgrades.confirmation_url(public_url, token)
    for line in lines:
        console.print(f"  {line}", soft_wrap=True, highlight=False, markup=False)
    console.print(f"\nOpenAPI: {api}/openapi.json   docs: {api}/docs\n", soft_wrap=True)
    console.print(f"[bold]Merchant console (商家后台)[/bold]: {public_url}/", soft_wrap=True)
    console.print(
        f"[bold]Staff console (平台运营后台)[/bold]: {public_url}/staff   sign in as ops / ops-demo-1", soft_wrap=True
    )
    for username, password, role, subject_id in USERS:
        who = f"merchant of {subject_id}" if role == "merchant" else "platform staff"
        console.print(f"  {username} / {password}   ({who})", soft_wrap=True, highlight=False, markup=False)
    console.print(
        "  yunqi sees 4 shops: one to upgrade now, one waiting for its holder, one upgraded, one waiting for staff;\n"
        "  laojie: a declined and an expired application (重新升级); shenjia: an auto upgrade to cancel and a cancelled one.",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    if holder_page is not None:
        console.print(f"  the holder's page of shop-1002 (phone-sized): {holder_page}\n", soft_wrap=True, markup=False)
