"""The official account after the upgrade at the service level: cancel, can_cancel and cancel_refusal
(R-12, R-13), and official_view, the one answer the API and the consoles read (R-12, R-14, R-23)."""

import datetime as dt

import pytest
from sqlalchemy import select

from guanhao import errors, pii
from guanhao.audit.models import AuditEntry
from guanhao.db import session_scope
from guanhao.operators import service as operators
from guanhao.operators.models import ChangeState, PendingChange
from guanhao.sandbox import sms
from guanhao.subjects import service as subjects
from guanhao.subjects.models import Account, Shop
from guanhao.upgrades import facts, quotas
from guanhao.upgrades import service as upgrades
from guanhao.upgrades.models import OfficialAccount, State
from tests import make
from tests.factories import person


def with_policy(policy, **sections):
    return policy.model_copy(
        update={name: getattr(policy, name).model_copy(update=fields) for name, fields in sections.items()}
    )


def record(origin: str, upgraded_at: dt.datetime, deadline: dt.datetime | None) -> OfficialAccount:
    return OfficialAccount(origin=origin, upgraded_at=upgraded_at, cancel_deadline=deadline)


# ---------------------------------------------------------------- who may cancel, until when


def test_r12_an_auto_upgrade_can_be_cancelled_until_its_deadline_and_not_at_it(now, policy):
    auto = record("auto", now, now + policy.cancel_window)
    assert upgrades.cancel_refusal(auto, policy, now=now) is None
    assert upgrades.can_cancel(auto, policy, now=now + policy.cancel_window - dt.timedelta(seconds=1))
    for at in (now + policy.cancel_window, now + policy.cancel_window * 10):
        assert isinstance(upgrades.cancel_refusal(auto, policy, now=at), errors.CancelWindowClosed)
        assert not upgrades.can_cancel(auto, policy, now=at)


def test_r12_a_manual_upgrade_cannot_be_cancelled_unless_the_policy_allows_it(now, policy):
    manual = record("manual", now, None)
    assert isinstance(upgrades.cancel_refusal(manual, policy, now=now), errors.CancelNotAllowed)
    allowing = with_policy(policy, cancel={"allow_manual": True})
    assert upgrades.can_cancel(record("manual", now, now + policy.cancel_window), allowing, now=now)
    assert not upgrades.can_cancel(None, policy, now=now)


# ---------------------------------------------------------------- what a cancel restores


def test_r12_r13_a_cancel_restores_the_account_exactly_as_before(now, policy):
    holder = person()
    with session_scope() as session:
        shop = make.ready_shop(session, now=now, holder=holder, account_fields={"login_phone": "13800001111"})
    make.auto_upgraded([shop.id], now=now)
    later = now + dt.timedelta(days=1)
    with session_scope() as session:
        # The subject rebinds the login phone, and asks for a new operator (never confirmed).
        change = operators.request_phone_rebind(session, shop.id, "13700002222", policy, actor=make.MERCHANT, now=later)
        [code] = [m.code for m in sms.messages_for(session, "13700002222")]
        operators.verify(session, shop.id, change.id, code, "login_phone", policy, actor=make.MERCHANT, now=later)
        pending = operators.request_operator_change(
            session, shop.id, make.operator(), policy, actor=make.MERCHANT, now=later
        )
    holder_pool = quotas.operator_pool(pii.Person(**holder).id_hash)
    with session_scope() as session:
        assert quotas.held(session, holder_pool) == 1
        app = upgrades.cancel(session, shop.id, policy, actor=make.MERCHANT, now=later)
        assert app.status == State.CANCELLED
    with session_scope() as session:
        account = session.get_one(Account, shop.official_account_id)
        assert pii.vault().decrypt(account.login_phone_enc, context="login_phone") == "13800001111"
        assert upgrades.official_account(session, shop.id) is None
        assert quotas.held_by_type(session, shop.subject_id) == {"main": 0, "vertical": 0, "dedicated": 0}
        assert quotas.held(session, holder_pool) == 0
        view = upgrades.official_view(session, session.get_one(Shop, shop.id), policy, now=later)
        assert (view.upgrade_status, view.operator, view.daily_post_limit) == ("not_upgraded", None, 75)
        # the code sent for the cancelled upgrade dies with it.
        assert session.get_one(PendingChange, pending.id).status == ChangeState.SUPERSEDED
        trail = session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == shop.official_account_id))
        assert "official_account.cancelled" in list(trail)


def test_r12_a_cancel_after_the_window_is_refused_and_changes_nothing(now, policy):
    with session_scope() as session:
        shop = make.ready_shop(session, now=now)
    make.auto_upgraded([shop.id], now=now)
    with session_scope() as session:
        with pytest.raises(errors.CancelWindowClosed):
            upgrades.cancel(session, shop.id, policy, actor=make.MERCHANT, now=now + policy.cancel_window)
        assert upgrades.official_account(session, shop.id) is not None
        assert quotas.held_by_type(session, shop.subject_id)["main"] == 1


def test_r12_a_manual_upgrade_is_refused_and_a_shop_never_upgraded_is_not_upgraded(session, now, policy):
    shop = make.ready_shop(session, now=now)
    with pytest.raises(errors.NotUpgraded):
        upgrades.cancel(session, shop.id, policy, actor=make.MERCHANT, now=now)
    make.upgraded(session, shop, now=now)
    with pytest.raises(errors.CancelNotAllowed):
        upgrades.cancel(session, shop.id, policy, actor=make.MERCHANT, now=now)
    assert upgrades.official_account(session, shop.id) is not None


def test_r13_r18_after_a_cancel_the_shop_may_apply_again_by_hand(now, policy):
    with session_scope() as session:
        shop = make.ready_shop(session, now=now)
    make.auto_upgraded([shop.id], now=now)
    with session_scope() as session:
        upgrades.cancel(session, shop.id, policy, actor=make.MERCHANT, now=now)
        again = make.upgraded(session, session.get_one(Shop, shop.id), now=now)
        assert (again.status, again.attempt, again.origin) == (State.SUCCEEDED, 2, "manual")


# ---------------------------------------------------------------- official_view


def test_r23_the_view_follows_the_upgrade_not_upgraded_in_progress_upgraded(session, now, policy):
    holder = person(name="李四")
    shop = make.ready_shop(session, now=now, holder=holder, account_fields={"login_phone": "13800001111"})
    view = upgrades.official_view(session, shop, policy, now=now)
    assert (view.upgrade_status, view.daily_post_limit, view.operator, view.can_cancel) == (
        "not_upgraded",
        75,
        None,
        False,
    )
    assert view.login_phone == "138****1111"
    app = make.submit(session, shop, now=now)
    view = upgrades.official_view(session, shop, policy, now=now)
    assert (view.upgrade_status, view.active) == ("in_progress", app)
    # a lapsed application is no longer in progress.
    assert upgrades.official_view(session, shop, policy, now=app.confirmation_expires_at).upgrade_status == (
        "not_upgraded"
    )
    upgrades.accept(session, make.token(app), policy, now=now)
    view = upgrades.official_view(session, shop, policy, now=now)
    assert (view.upgrade_status, view.daily_post_limit, view.can_cancel) == ("upgraded", 100, False)
    assert view.operator == pii.Person(**holder).masked() and view.operator["name"] == "李*"


def test_r12_the_view_says_an_auto_upgrade_can_be_cancelled_within_its_window(now, policy):
    with session_scope() as session:
        shop = make.ready_shop(session, now=now)
    make.auto_upgraded([shop.id], now=now)
    with session_scope() as session:
        shop = session.get_one(Shop, shop.id)
        assert upgrades.official_view(session, shop, policy, now=now).can_cancel
        assert not upgrades.official_view(session, shop, policy, now=now + policy.cancel_window).can_cancel


def test_r14_after_the_upgrade_deadline_only_an_upgraded_account_sells_as_official(session, now, policy):
    deadline = now + dt.timedelta(days=10)
    policy = policy.model_copy(update={"upgrade_deadline": deadline})
    waiting = make.ready_shop(session, now=now)
    done = make.ready_shop(session, now=now)
    make.upgraded(session, done, now=now, policy=policy)
    unbound = make.shop(session, waiting.subject_id, now=now)
    before = deadline - dt.timedelta(seconds=1)
    assert upgrades.official_view(session, waiting, policy, now=before).can_sell_as_official
    assert not upgrades.official_view(session, waiting, policy, now=deadline).can_sell_as_official
    assert upgrades.official_view(session, done, policy, now=deadline).can_sell_as_official
    assert not upgrades.official_view(session, unbound, policy, now=before).can_sell_as_official
    assert upgrades.official_view(session, waiting, policy, now=now).upgrade_deadline == deadline


def test_r41_a_cancel_gives_the_operators_place_back_for_another_account(now, policy):
    policy = with_policy(policy, operators={"capacity": 1})
    holder = person()
    with session_scope() as session:
        first = make.ready_shop(session, now=now, holder=holder)
    make.auto_upgraded([first.id], now=now, policy=policy)
    with session_scope() as session:
        second = make.ready_shop(session, now=now, holder=holder)
        assert facts.operator_used(session, pii.Person(**holder).id_hash, now=now, excluding_application=None) == 1
        with pytest.raises(errors.OperatorLimitReached):
            make.submit(session, second, now=now, policy=policy)
    with session_scope() as session:
        upgrades.cancel(session, first.id, policy, actor=make.MERCHANT, now=now)
        assert make.submit(session, session.get_one(Shop, second.id), now=now, policy=policy).status == "submitted"


def test_r34_the_type_never_changes_after_success(session, now, policy):
    """A chosen type stays through a sync that would give the subject more slots, an operator change and a
    phone rebind; no new application can ask for another."""
    holder = person()
    shop = make.ready_shop(session, now=now, holder=holder, account_fields={"login_phone": "13800001111"})
    make.upgraded(session, shop, now=now, account_type="dedicated")
    body = make.account_body(holder=holder, login_phone="13800001111", followers=5_000_000)
    subjects.put_account(session, shop.official_account_id, body, actor=make.PLATFORM, now=now)
    change = operators.request_phone_rebind(session, shop.id, "13700002222", policy, actor=make.MERCHANT, now=now)
    [code] = [m.code for m in sms.messages_for(session, "13700002222")]
    operators.verify(session, shop.id, change.id, code, "login_phone", policy, actor=make.MERCHANT, now=now)
    with pytest.raises(errors.AlreadyUpgraded):
        make.submit(session, shop, now=now, account_type="main")
    assert session.get_one(OfficialAccount, shop.official_account_id).account_type == "dedicated"
    assert quotas.held_by_type(session, shop.subject_id) == {"main": 0, "vertical": 0, "dedicated": 1}
