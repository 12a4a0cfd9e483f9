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
# Only the two shops above score this high: the demo wave upgrades them and nothing else.
DEMO_WAVE_MIN_SCORE = 4.95

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
