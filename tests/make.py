"""Service-level factories: subjects, shops and accounts put through the subjects service (no HTTP), and
applications walked through the upgrade verbs, all with the caller's session and `now`.

    shop = make.ready_shop(session, now=now)
    app = make.upgraded(session, shop, now=now)
"""

import datetime as dt

from guanhao import clock, pii
from guanhao.db import Session, session_scope
from guanhao.policy import Policy, get_policy
from guanhao.subjects import service as subjects
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.subjects.schemas import AccountIn, BindingIn, ShopIn, SubjectIn
from guanhao.upgrades import service as upgrades
from guanhao.upgrades import waves
from guanhao.upgrades.models import Application
from tests.factories import ids, person, phone

PLATFORM = "admin:platform-sync"
MERCHANT = "merchant:key_test"
STAFF = "admin:key_staff"
PUBLIC_URL = "http://testserver"


def subject(session: Session, *, now: dt.datetime, subject_id: str | None = None, **fields) -> Subject:
    body = {
        "name": "杭州示例科技有限公司",
        "subject_type": "enterprise",
        "cross_border": False,
        "license_valid_until": None,
    } | fields
    made, _ = subjects.put_subject(
        session, subject_id or ids("subj"), SubjectIn.model_validate(body), actor=PLATFORM, now=now
    )
    return made


def shop(session: Session, subject_id: str, *, now: dt.datetime, shop_id: str | None = None, **fields) -> Shop:
    body = {
        "subject_id": subject_id,
        "name": "示例旗舰店",
        "shop_type": "flagship",
        "status": "active",
        "experience_score": 4.8,
    } | fields
    made, _ = subjects.put_shop(session, shop_id or ids("shop"), ShopIn.model_validate(body), actor=PLATFORM, now=now)
    return made


def account_body(*, holder: dict | None = None, **fields) -> AccountIn:
    body = {
        "nickname": "示例官方号",
        "followers": 12000,
        "status": "normal",
        "real_name_verified": True,
        "violations_90d": 0,
        "login_phone": phone(),
        "holder": holder or person(),
    } | fields
    return AccountIn.model_validate(body)


def account(
    session: Session, *, now: dt.datetime, account_id: str | None = None, holder: dict | None = None, **fields
) -> Account:
    made, _ = subjects.put_account(
        session, account_id or ids("acct"), account_body(holder=holder, **fields), actor=PLATFORM, now=now
    )
    return made


def bind(session: Session, shop_id: str, account_id: str, *, now: dt.datetime) -> Shop:
    return subjects.bind(session, shop_id, BindingIn(account_id=account_id), actor=PLATFORM, now=now)


def ready_shop(
    session: Session,
    *,
    now: dt.datetime,
    subject_id: str | None = None,
    holder: dict | None = None,
    shop_fields: dict | None = None,
    account_fields: dict | None = None,
) -> Shop:
    """A shop that passes every check, its official account bound (`shop.official_account_id`)."""
    subject_id = subject_id or subject(session, now=now).id
    made = shop(session, subject_id, now=now, **(shop_fields or {}))
    acct = account(session, now=now, holder=holder, **(account_fields or {}))
    return bind(session, made.id, acct.id, now=now)


def operator(seq: int | None = None) -> pii.Person:
    p = person(seq)
    return pii.Person(name=p["name"], id_number=p["id_number"], phone=p["phone"])


def submit(
    session: Session,
    shop: Shop,
    *,
    now: dt.datetime,
    policy: Policy | None = None,
    account_type: str | None = None,
    named: pii.Person | None = None,
) -> Application:
    return upgrades.submit(
        session,
        shop.id,
        policy or get_policy(),
        account_type=account_type,
        operator=named,
        agree_terms=True,
        actor=MERCHANT,
        now=now,
        public_url=PUBLIC_URL,
    )


def token(app: Application) -> str:
    found = upgrades.confirmation_token(app)
    assert found is not None
    return found


def upgraded(
    session: Session, shop: Shop, *, now: dt.datetime, policy: Policy | None = None, **submit_args
) -> Application:
    """Submitted and accepted by the holder: succeeded (or waiting for staff, by the policy)."""
    policy = policy or get_policy()
    app = submit(session, shop, now=now, policy=policy, **submit_args)
    return upgrades.accept(session, token(app), policy, now=now)


def auto_upgraded(shop_ids: list[str], *, now: dt.datetime, policy: Policy | None = None) -> waves.Wave:
    """Committed shops upgraded by a wave at `now` (the sandbox clock is set to it: a wave's worker reads it).
    The wave takes every candidate in the database, so pass the shops you expect it to take."""
    policy = policy or get_policy()
    with session_scope() as session:
        clock.set_sandbox_now(session, now)
        wave = waves.start(session, limit=len(shop_ids), min_score=None, policy=policy, actor=STAFF, now=now)
    done = waves.work(wave.id, policy)
    assert done.upgraded == len(shop_ids), (done.upgraded, done.skip_reasons)
    return done
