"""Operator changes (更换运营人, R-42, R-41, R-40) and login-phone rebinds (登录手机号换绑, R-24) at the service
level (guanhao.operators.service): request, verify, the pending change's state machine and its audit rows,
a newer request superseding an older one, a cancel superseding what is pending (R-13), the expiry sweep."""

import datetime as dt

import pytest
from sqlalchemy import select

from guanhao import errors, pii
from guanhao.audit.models import AuditEntry
from guanhao.db import session_scope
from guanhao.events import service as events
from guanhao.operators import service as operators
from guanhao.operators.models import ChangeState, Kind, PendingChange
from guanhao.sandbox import sms
from guanhao.subjects.models import Account, Shop
from guanhao.upgrades import facts, quotas
from guanhao.upgrades import service as upgrades
from guanhao.upgrades.models import OfficialAccount
from tests import make
from tests.factories import person


def code_for(session, phone: str) -> str:
    """The latest code sent to `phone` (a holder's phone also gets confirmation links, without a code)."""
    return next(m.code for m in sms.messages_for(session, phone) if m.code is not None)


def places(session, who: pii.Person, now) -> int:
    return facts.operator_used(session, who.id_hash, now=now, excluding_application=None)


def change_operator(session, shop, who: pii.Person, policy, now):
    change = operators.request_operator_change(session, shop.id, who, policy, actor=make.MERCHANT, now=now)
    return operators.verify(
        session, shop.id, change.id, code_for(session, who.phone), Kind.OPERATOR, policy, actor=make.MERCHANT, now=now
    )


@pytest.fixture
def upgraded(session, now):
    shop = make.ready_shop(session, now=now, account_fields={"login_phone": "13800001111"})
    make.upgraded(session, shop, now=now)
    return shop


def test_r42_r41_a_verified_code_replaces_the_operator_and_moves_the_place(session, upgraded, now, policy):
    record = session.get_one(OfficialAccount, upgraded.official_account_id)
    holder_pool = quotas.operator_pool(record.operator_id_hash)
    new = make.operator()
    change = operators.request_operator_change(session, upgraded.id, new, policy, actor=make.MERCHANT, now=now)
    assert change.status == ChangeState.PENDING and change.expires_at == now + dt.timedelta(
        seconds=policy.sms.code_ttl_seconds
    )
    # Nothing changes until the code comes back.
    assert record.operator_id_hash != new.id_hash and places(session, new, now) == 0
    done = operators.verify(
        session, upgraded.id, change.id, code_for(session, new.phone), "operator", policy, actor=make.MERCHANT, now=now
    )
    assert done.error is None and done.change.status == ChangeState.VERIFIED
    assert (record.operator_id_hash, record.operator_since) == (new.id_hash, now)
    assert operators.operator_view(record) == new.masked()
    assert places(session, new, now) == 1 and quotas.held(session, holder_pool) == 0


def test_r24_a_verified_code_rebinds_the_login_phone(session, upgraded, now, policy):
    change = operators.request_phone_rebind(session, upgraded.id, "13700002222", policy, actor=make.MERCHANT, now=now)
    code = code_for(session, "13700002222")
    account = session.get_one(Account, upgraded.official_account_id)
    assert pii.vault().decrypt(account.login_phone_enc, context="login_phone") == "13800001111"
    done = operators.verify(session, upgraded.id, change.id, code, "login_phone", policy, actor=make.MERCHANT, now=now)
    assert done.error is None
    assert pii.vault().decrypt(account.login_phone_enc, context="login_phone") == "13700002222"


def test_r24_r42_only_an_upgraded_account_has_changes_to_make(session, now, policy):
    shop = make.ready_shop(session, now=now)
    with pytest.raises(errors.NotUpgraded):
        operators.request_operator_change(session, shop.id, make.operator(), policy, actor=make.MERCHANT, now=now)
    with pytest.raises(errors.NotUpgraded):
        operators.request_phone_rebind(session, shop.id, "13700002222", policy, actor=make.MERCHANT, now=now)


def test_r42_wrong_codes_are_counted_and_the_change_fails_at_the_last_try(session, upgraded, now, policy):
    new = make.operator()
    change = operators.request_operator_change(session, upgraded.id, new, policy, actor=make.MERCHANT, now=now)
    right = code_for(session, new.phone)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    for left in range(policy.sms.max_attempts - 1, 0, -1):
        outcome = operators.verify(session, upgraded.id, change.id, wrong, "operator", policy, actor="m", now=now)
        assert isinstance(outcome.error, errors.CodeInvalid) and f"{left} tries left" in str(outcome.error)
    last = operators.verify(session, upgraded.id, change.id, wrong, "operator", policy, actor="m", now=now)
    assert isinstance(last.error, errors.TooManyAttempts) and change.status == ChangeState.FAILED
    with pytest.raises(errors.TooManyAttempts):
        operators.verify(session, upgraded.id, change.id, right, "operator", policy, actor="m", now=now)
    assert session.get_one(OfficialAccount, upgraded.official_account_id).operator_id_hash != new.id_hash


def test_r42_a_code_expires(session, upgraded, now, policy):
    new = make.operator()
    change = operators.request_operator_change(session, upgraded.id, new, policy, actor=make.MERCHANT, now=now)
    code = code_for(session, new.phone)
    late = operators.verify(session, upgraded.id, change.id, code, "operator", policy, actor="m", now=change.expires_at)
    assert isinstance(late.error, errors.CodeExpired) and change.status == ChangeState.EXPIRED
    with pytest.raises(errors.CodeExpired):
        operators.verify(session, upgraded.id, change.id, code, "operator", policy, actor="m", now=change.expires_at)


def test_r42_a_newer_request_supersedes_the_older_code_after_the_cooldown(session, upgraded, now, policy):
    first_person, second_person = make.operator(), make.operator()
    first = operators.request_operator_change(session, upgraded.id, first_person, policy, actor="m", now=now)
    soon = now + dt.timedelta(seconds=1)
    with pytest.raises(errors.TooManyAttempts) as refused:
        operators.request_operator_change(session, upgraded.id, second_person, policy, actor="m", now=soon)
    assert refused.value.retry_after == policy.sms.resend_cooldown_seconds - 1
    after = now + dt.timedelta(seconds=policy.sms.resend_cooldown_seconds)
    second = operators.request_operator_change(session, upgraded.id, second_person, policy, actor="m", now=after)
    assert (first.status, second.status) == (ChangeState.SUPERSEDED, ChangeState.PENDING)
    with pytest.raises(errors.CodeExpired):
        operators.verify(
            session,
            upgraded.id,
            first.id,
            code_for(session, first_person.phone),
            "operator",
            policy,
            actor="m",
            now=after,
        )
    # A change of the other kind is not superseded by it.
    rebind = operators.request_phone_rebind(session, upgraded.id, "13700002222", policy, actor="m", now=after)
    assert (second.status, rebind.status) == (ChangeState.PENDING, ChangeState.PENDING)


def test_r41_a_person_at_the_limit_is_refused_at_the_request(session, upgraded, now, policy):
    busy = person()
    for _ in range(policy.operators.capacity):
        make.upgraded(session, make.ready_shop(session, now=now, holder=busy), now=now)
    with pytest.raises(errors.OperatorLimitReached):
        operators.request_operator_change(session, upgraded.id, pii.Person(**busy), policy, actor="m", now=now)
    assert session.scalars(select(PendingChange)).all() == []


def test_r41_a_person_who_filled_up_meanwhile_is_refused_at_the_verify(session, upgraded, now, policy):
    busy = person()
    who = pii.Person(**busy)
    for _ in range(policy.operators.capacity - 1):
        make.upgraded(session, make.ready_shop(session, now=now, holder=busy), now=now)
    change = operators.request_operator_change(session, upgraded.id, who, policy, actor="m", now=now)
    make.upgraded(session, make.ready_shop(session, now=now, holder=busy), now=now)
    with pytest.raises(errors.OperatorLimitReached):
        operators.verify(
            session, upgraded.id, change.id, code_for(session, who.phone), "operator", policy, actor="m", now=now
        )
    assert places(session, who, now) == policy.operators.capacity


def test_r40_naming_the_current_operator_again_takes_no_second_place(session, upgraded, now, policy):
    record = session.get_one(OfficialAccount, upgraded.official_account_id)
    current = pii.open_person(
        record.operator_name_enc, record.operator_id_number_enc, record.operator_phone_enc, context="person"
    )
    current = pii.Person(name=current.name, id_number=current.id_number, phone="13600003333")
    assert change_operator(session, upgraded, current, policy, now).error is None
    assert places(session, current, now) == 1
    assert operators.operator_view(record)["phone"] == "136****3333"


def test_r60_each_step_of_a_change_is_in_the_trail_and_the_verified_change_is_announced(now, policy):
    with session_scope() as session:
        shop = make.ready_shop(session, now=now)
        make.upgraded(session, shop, now=now)
    after = now + dt.timedelta(seconds=policy.sms.resend_cooldown_seconds)
    with session_scope() as session:
        first = operators.request_operator_change(session, shop.id, make.operator(), policy, actor="m", now=now)
        change_operator(session, shop, make.operator(), policy, after)
    with session_scope() as session:
        trail = session.scalars(
            select(AuditEntry).where(AuditEntry.target_id == shop.official_account_id).order_by(AuditEntry.seq)
        ).all()
        steps = [(a.action, a.from_state, a.to_state) for a in trail if a.action.startswith("operator.")]
        assert steps == [
            ("operator.change_requested", None, "pending"),
            ("operator.change_superseded", "pending", "superseded"),
            ("operator.change_requested", None, "pending"),
            ("operator.changed", None, None),
            ("operator.change_verified", "pending", "verified"),
        ]
        assert trail[[a.action for a in trail].index("operator.change_superseded")].detail["change_id"] == first.id
        announced = [e.type for e in events.events_after(session, after_seq=None, limit=50)]
        assert announced.count("operator.changed") == 1


def test_r20_a_finished_change_cannot_move_again(session, upgraded, now, policy):
    done = change_operator(session, upgraded, make.operator(), policy, now).change
    with pytest.raises(errors.InvalidTransition):
        operators.verify(session, upgraded.id, done.id, "000000", "operator", policy, actor="m", now=now)
    with pytest.raises(errors.InvalidTransition):
        operators._transition(session, done, ChangeState.EXPIRED, actor="m", now=now)
    assert done.status == ChangeState.VERIFIED
    with pytest.raises(errors.NotFound):
        operators.verify(session, upgraded.id, done.id, "000000", "login_phone", policy, actor="m", now=now)


def test_r13_a_cancel_supersedes_pending_codes_even_once_the_account_is_upgraded_again(now, policy):
    with session_scope() as session:
        shop = make.ready_shop(session, now=now)
    make.auto_upgraded([shop.id], now=now)
    new = make.operator()
    with session_scope() as session:
        change = operators.request_operator_change(session, shop.id, new, policy, actor="m", now=now)
        code = code_for(session, new.phone)
        upgrades.cancel(session, shop.id, policy, actor="m", now=now)
        make.upgraded(session, session.get_one(Shop, shop.id), now=now)
    with session_scope() as session:
        with pytest.raises(errors.CodeExpired):
            operators.verify(session, shop.id, change.id, code, "operator", policy, actor="m", now=now)
        assert session.get_one(PendingChange, change.id).status == ChangeState.SUPERSEDED
        assert session.get_one(OfficialAccount, shop.official_account_id).operator_id_hash != new.id_hash


def test_r60_the_sweep_records_expired_codes_and_leaves_live_ones(now, policy):
    with session_scope() as session:
        old, fresh = make.ready_shop(session, now=now), make.ready_shop(session, now=now)
        make.upgraded(session, old, now=now)
        make.upgraded(session, fresh, now=now)
        lapsing = operators.request_phone_rebind(session, old.id, "13700002222", policy, actor="m", now=now)
        live = operators.request_phone_rebind(
            session, fresh.id, "13700003333", policy, actor="m", now=now + dt.timedelta(minutes=4)
        )
    with session_scope() as session:
        assert operators.expire_pending(session, now=lapsing.expires_at) == 1
        assert operators.expire_pending(session, now=lapsing.expires_at) == 0
    with session_scope() as session:
        assert session.get_one(PendingChange, lapsing.id).status == ChangeState.EXPIRED
        assert session.get_one(PendingChange, live.id).status == ChangeState.PENDING
        [row] = session.scalars(select(AuditEntry).where(AuditEntry.action == "login_phone.change_expired")).all()
        assert (row.actor, row.detail["change_id"]) == (operators.SWEEP_ACTOR, lapsing.id)
