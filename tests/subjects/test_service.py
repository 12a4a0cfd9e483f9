"""Platform sync at the service level (guanhao.subjects.service): put_subject / put_shop / put_account, bind,
the NDJSON import, and the guards the upgrades package registers on them (R-21, R-24)."""

import datetime as dt

import pytest
from sqlalchemy import select

from guanhao import errors, pii
from guanhao.audit.models import AuditEntry
from guanhao.db import session_scope
from guanhao.subjects import service as subjects
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.subjects.schemas import ShopIn, SubjectIn
from guanhao.upgrades.models import Application, State
from tests import make
from tests.factories import person


def _actions(session, target_id: str) -> list[str]:
    return list(session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == target_id)))


def test_r60_a_subject_is_created_then_updated_and_each_sync_is_audited(now):
    body = SubjectIn(name="甲公司", subject_type="enterprise")
    with session_scope() as session:
        first, created = subjects.put_subject(session, "subj-a", body, actor=make.PLATFORM, now=now)
        assert created and first.name == "甲公司"
    later = now + dt.timedelta(hours=1)
    with session_scope() as session:
        renamed = SubjectIn(name="甲公司（新）", subject_type="individual_business", cross_border=True)
        again, created = subjects.put_subject(session, "subj-a", renamed, actor=make.PLATFORM, now=later)
        assert not created
    with session_scope() as session:
        stored = session.get_one(Subject, "subj-a")
        assert (stored.name, stored.subject_type, stored.cross_border) == ("甲公司（新）", "individual_business", True)
        assert (stored.created_at, stored.updated_at) == (now, later)
        assert _actions(session, "subj-a") == ["subject.created", "subject.updated"]


def test_r63_a_shop_of_an_unknown_subject_is_refused_and_nothing_is_written(session, now):
    body = ShopIn(subject_id="nobody", name="店", shop_type="flagship", status="active", experience_score=4.0)
    with pytest.raises(errors.ValidationFailed) as refused:
        subjects.put_shop(session, "shop-x", body, actor=make.PLATFORM, now=now)
    assert refused.value.extra["errors"][0]["field"] == "subject_id"
    assert session.get(Shop, "shop-x") is None


def test_r05_an_account_is_the_official_account_of_one_shop_only(session, now):
    first = make.ready_shop(session, now=now)
    other = make.shop(session, first.subject_id, now=now)
    with pytest.raises(errors.AccountAlreadyBound):
        make.bind(session, other.id, first.official_account_id, now=now)
    assert session.get_one(Shop, other.id).official_account_id is None
    assert session.get_one(Shop, first.id).official_account_id == first.official_account_id


def test_r05_binding_the_same_account_again_changes_nothing(now):
    with session_scope() as session:
        shop = make.ready_shop(session, now=now)
    with session_scope() as session:
        again = make.bind(session, shop.id, shop.official_account_id, now=now + dt.timedelta(minutes=1))
        assert again.updated_at == now
    with session_scope() as session:
        assert _actions(session, shop.id).count("shop.official_account_bound") == 1


def test_r63_binding_an_unknown_account_is_the_callers_mistake(session, now):
    shop = make.shop(session, make.subject(session, now=now).id, now=now)
    with pytest.raises(errors.ValidationFailed) as refused:
        make.bind(session, shop.id, "acct-unknown", now=now)
    assert refused.value.extra["errors"][0]["field"] == "account_id"
    with pytest.raises(errors.NotFound):
        make.bind(session, "shop-unknown", make.account(session, now=now).id, now=now)


def test_a_rebinding_before_any_application_moves_the_official_account(session, now):
    shop = make.ready_shop(session, now=now)
    newer = make.account(session, now=now)
    assert make.bind(session, shop.id, newer.id, now=now).official_account_id == newer.id


# ---------------------------------------------------------------- R-21, registered by the upgrades package


def test_r21_an_upgraded_shop_keeps_its_binding_and_its_subject(session, now, policy):
    shop = make.ready_shop(session, now=now)
    account_id, subject_id = shop.official_account_id, shop.subject_id
    assert make.upgraded(session, shop, now=now).status == State.SUCCEEDED
    with pytest.raises(errors.AlreadyUpgraded):
        make.bind(session, shop.id, make.account(session, now=now).id, now=now)
    elsewhere = make.subject(session, now=now)
    moved = ShopIn(subject_id=elsewhere.id, name="店", shop_type="flagship", status="active", experience_score=4.8)
    with pytest.raises(errors.AlreadyUpgraded):
        subjects.put_shop(session, shop.id, moved, actor=make.PLATFORM, now=now)
    kept = session.get_one(Shop, shop.id)
    session.expire(kept)
    assert (kept.official_account_id, kept.subject_id) == (account_id, subject_id)
    # Its other fields are the platform's to sync.
    renamed = ShopIn(
        subject_id=shop.subject_id, name="改名店", shop_type="flagship", status="active", experience_score=3
    )
    assert subjects.put_shop(session, shop.id, renamed, actor=make.PLATFORM, now=now)[0].name == "改名店"


def test_r21_a_shop_with_an_application_in_progress_keeps_its_binding(session, now):
    shop = make.ready_shop(session, now=now)
    make.submit(session, shop, now=now)
    with pytest.raises(errors.ApplicationInProgress):
        make.bind(session, shop.id, make.account(session, now=now).id, now=now)


def test_r15_r21_a_lapsed_application_no_longer_holds_the_shop_and_is_recorded_expired(session, now, policy):
    shop = make.ready_shop(session, now=now)
    app = make.submit(session, shop, now=now)
    later = now + policy.confirmation_ttl
    newer = make.account(session, now=later)
    assert make.bind(session, shop.id, newer.id, now=later).official_account_id == newer.id
    stored = session.scalar(select(Application).where(Application.id == app.id))
    assert (stored.status, stored.reasons) == (State.EXPIRED, [{"code": "CONFIRMATION_EXPIRED"}])


# ---------------------------------------------------------------- R-24, registered by the upgrades package


def test_r24_a_sync_of_an_upgraded_account_never_changes_its_login_phone_or_holder(session, now):
    holder = person()
    shop = make.ready_shop(session, now=now, holder=holder, account_fields={"login_phone": "13800001111"})
    make.upgraded(session, shop, now=now)
    account_id = shop.official_account_id
    for change in ({"login_phone": "13700002222"}, {"holder": person()}):
        body = make.account_body(**({"holder": holder, "login_phone": "13800001111"} | change))
        with pytest.raises(errors.ManagedBySubject):
            subjects.put_account(session, account_id, body, actor=make.PLATFORM, now=now)
    stored = session.get_one(Account, account_id)
    assert pii.vault().decrypt(stored.login_phone_enc, context="login_phone") == "13800001111"
    assert stored.holder_id_hash == pii.Person(**holder).id_hash
    # Everything else still follows the platform.
    body = make.account_body(holder=holder, login_phone="13800001111", followers=99, status="restricted")
    synced, _ = subjects.put_account(session, account_id, body, actor=make.PLATFORM, now=now)
    assert (synced.followers, synced.status) == (99, "restricted")


def test_r24_before_the_upgrade_the_platform_syncs_the_login_phone_and_holder(session, now):
    shop = make.ready_shop(session, now=now, account_fields={"login_phone": "13800001111"})
    newer = person()
    body = make.account_body(holder=newer, login_phone="13700002222")
    synced, created = subjects.put_account(session, shop.official_account_id, body, actor=make.PLATFORM, now=now)
    assert not created
    assert pii.vault().decrypt(synced.login_phone_enc, context="login_phone") == "13700002222"
    assert synced.holder_id_hash == pii.Person(**newer).id_hash


# ---------------------------------------------------------------- the NDJSON import


def test_r63_import_reports_each_bad_line_by_number_and_keeps_the_others(now):
    lines = [
        b'{"kind": "subject", "id": "subj-i", "name": "\xe5\x85\xac\xe5\x8f\xb8", "subject_type": "enterprise"}',
        b"not json",
        b"[1, 2]",
        b"",
        b'{"kind": "planet", "id": "p-1"}',
        b'{"kind": "shop", "id": "shop-i", "subject_id": "subj-i", "name": "s", "shop_type": "flagship",'
        b' "status": "active", "experience_score": 4.9}',
        b'{"kind": "shop", "id": "shop-j", "subject_id": "subj-missing", "name": "s", "shop_type": "flagship",'
        b' "status": "active", "experience_score": 4.9}',
        b'{"kind": "shop", "id": "bad id!", "subject_id": "subj-i", "name": "s", "shop_type": "flagship",'
        b' "status": "active", "experience_score": 4.9}',
        b'{"kind": "binding", "shop_id": "shop-i", "account_id": "acct-missing"}',
        b'{"kind": "subject", "id": "subj-k", "name": "k", "subject_type": "martian"}',
    ]
    with session_scope() as session:
        result = subjects.import_lines(session, enumerate(lines, start=1), actor=make.PLATFORM, now=now)
    assert result.accepted == 2
    assert [(n, e.code) for n, e in result.rejected] == [
        (2, "MALFORMED_BODY"),
        (3, "MALFORMED_BODY"),
        (5, "VALIDATION_ERROR"),
        (7, "VALIDATION_ERROR"),
        (8, "VALIDATION_ERROR"),
        (9, "VALIDATION_ERROR"),
        (10, "VALIDATION_ERROR"),
    ]
    with session_scope() as session:
        assert session.get(Subject, "subj-i") is not None and session.get(Shop, "shop-i") is not None
        assert session.get(Shop, "shop-j") is None and session.get(Subject, "subj-k") is None
        # A refused line leaves no audit row behind either: its savepoint took its rows with it.
        assert _actions(session, "shop-j") == [] and _actions(session, "subj-k") == []
        assert _actions(session, "shop-i") == ["shop.created"]


def test_r21_an_import_line_moving_an_upgraded_shop_is_refused_alone(now):
    with session_scope() as session:
        shop = make.ready_shop(session, now=now)
        make.upgraded(session, shop, now=now)
        other = make.subject(session, now=now)
    move = (
        f'{{"kind": "shop", "id": "{shop.id}", "subject_id": "{other.id}", "name": "s", "shop_type": "flagship",'
        f' "status": "active", "experience_score": 4.9}}'
    ).encode()
    fine = b'{"kind": "subject", "id": "subj-ok", "name": "ok", "subject_type": "enterprise"}'
    with session_scope() as session:
        result = subjects.import_lines(session, enumerate([move, fine], start=1), actor=make.PLATFORM, now=now)
    assert result.accepted == 1 and [(n, e.code) for n, e in result.rejected] == [(1, "ALREADY_UPGRADED")]
    with session_scope() as session:
        assert session.get_one(Shop, shop.id).subject_id == shop.subject_id
