"""The upgrade verbs at the service level (guanhao.upgrades.service): submit, accept, decline, approve,
staff_reject, withdraw, the expiry of unanswered confirmations, eligibility and subject_quotas (SPEC R-03,
R-04, R-10, R-15..R-20, R-30..R-33, R-40, R-41)."""

import pytest
from sqlalchemy import event, func, select

from guanhao import errors, pii
from guanhao.audit.models import AuditEntry
from guanhao.db import session_scope
from guanhao.events import service as events
from guanhao.policy import get_policy
from guanhao.sandbox import sms
from guanhao.subjects.models import Account, Subject
from guanhao.upgrades import facts, quotas
from guanhao.upgrades import service as upgrades
from guanhao.upgrades.models import Application, Consent, OfficialAccount, Review, State
from tests import make
from tests.factories import person


def used(session, subject_id: str, now) -> dict[str, int]:
    subject = session.get_one(Subject, subject_id)
    return {t: q["used"] for t, q in upgrades.subject_quotas(session, subject, get_policy(), now=now).items()}


def operator_places(session, holder: dict, now) -> int:
    return facts.operator_used(session, pii.Person(**holder).id_hash, now=now, excluding_application=None)


def with_policy(policy, **sections):
    return policy.model_copy(
        update={name: getattr(policy, name).model_copy(update=fields) for name, fields in sections.items()}
    )


# ---------------------------------------------------------------- submit


def test_r10_r15_r33_r41_a_submitted_application_holds_its_slot_and_its_operators_place(session, now, policy):
    holder = person()
    shop = make.ready_shop(session, now=now, holder=holder)
    app = make.submit(session, shop, now=now)
    assert (app.status, app.account_type, app.attempt, app.origin) == (State.SUBMITTED, "main", 1, "manual")
    assert app.confirmation_expires_at == now + policy.confirmation_ttl
    assert used(session, shop.subject_id, now) == {"main": 1, "vertical": 0, "dedicated": 0}
    assert operator_places(session, holder, now) == 1
    [consent] = upgrades.consents(session, app.id)
    assert (consent.party, consent.decision, consent.agreement_version) == (
        "merchant",
        "agreed",
        policy.confirmation.agreement_version,
    )
    # the holder is asked by SMS, with the link only they receive.
    [text] = [m.text for m in sms.messages_for(session, holder["phone"])]
    assert upgrades.confirmation_url(make.PUBLIC_URL, make.token(app)) in text


def test_r61_a_submit_announces_the_application_and_asks_the_holder(now):
    with session_scope() as session:
        shop = make.ready_shop(session, now=now)
        app = make.submit(session, shop, now=now)
        token = make.token(app)
    with session_scope() as session:
        outbox = events.events_after(session, after_seq=None, limit=10)
    assert [e.type for e in outbox] == ["upgrade.submitted", "upgrade.confirmation_requested"]
    assert outbox[1].data["confirmation_url"].endswith(token) and "confirmation_url" not in outbox[0].data


def test_r63_without_the_merchants_agreement_nothing_is_submitted(session, now, policy):
    shop = make.ready_shop(session, now=now)
    with pytest.raises(errors.TermsNotAccepted):
        upgrades.submit(
            session, shop.id, policy, account_type=None, operator=None, agree_terms=False,
            actor=make.MERCHANT, now=now, public_url=make.PUBLIC_URL,
        )  # fmt: skip
    assert session.scalar(select(func.count()).select_from(Application)) == 0
    assert used(session, shop.subject_id, now)["main"] == 0


def test_r04_a_refused_submit_names_every_failed_check(session, now):
    shop = make.ready_shop(
        session,
        now=now,
        shop_fields={"shop_type": "personal", "status": "suspended"},
        account_fields={"real_name_verified": False},
    )
    with pytest.raises(errors.NotEligible) as refused:
        make.submit(session, shop, now=now)
    assert [r.code for r in refused.value.reasons] == [
        "SHOP_TYPE_NOT_ELIGIBLE",
        "SHOP_NOT_ACTIVE",
        "ACCOUNT_NOT_VERIFIED",
    ]
    assert all(r.fix is not None for r in refused.value.reasons)
    assert session.scalar(select(func.count()).select_from(Application)) == 0


def test_r19_one_application_in_progress_per_shop(session, now):
    shop = make.ready_shop(session, now=now)
    make.submit(session, shop, now=now)
    with pytest.raises(errors.ApplicationInProgress):
        make.submit(session, shop, now=now)
    assert session.scalar(select(func.count()).select_from(Application)) == 1


def test_r32_no_type_chosen_falls_back_and_a_chosen_full_type_is_refused(session, now):
    subject = make.subject(session, now=now, subject_type="individual_business")  # 1 main, 1 vertical, 1 dedicated
    first, second, third = (make.ready_shop(session, now=now, subject_id=subject.id) for _ in range(3))
    assert make.submit(session, first, now=now).account_type == "main"
    with pytest.raises(errors.TypeQuotaExhausted):
        make.submit(session, second, now=now, account_type="main")
    assert make.submit(session, second, now=now).account_type == "vertical"
    assert make.submit(session, third, now=now, account_type="dedicated").account_type == "dedicated"
    fourth = make.ready_shop(session, now=now, subject_id=subject.id)
    with pytest.raises(errors.QuotaExhausted):
        make.submit(session, fourth, now=now)
    assert used(session, subject.id, now) == {"main": 1, "vertical": 1, "dedicated": 1}


def test_r31_a_cross_border_subject_cannot_choose_vertical(session, now):
    subject = make.subject(session, now=now, cross_border=True)
    shop = make.ready_shop(session, now=now, subject_id=subject.id)
    with pytest.raises(errors.VerticalNotAvailable):
        make.submit(session, shop, now=now, account_type="vertical")


def test_r40_a_named_operator_holds_the_place_instead_of_the_holder(session, now):
    holder = person()
    shop = make.ready_shop(session, now=now, holder=holder)
    named = make.operator()
    app = make.submit(session, shop, now=now, named=named)
    assert (app.operator_id_hash, app.operator_is_holder) == (named.id_hash, False)
    assert operator_places(session, holder, now) == 0
    assert facts.operator_used(session, named.id_hash, now=now, excluding_application=None) == 1


def test_r41_a_person_at_capacity_cannot_be_named_again(session, now, policy):
    policy = with_policy(policy, operators={"capacity": 2})
    holder = person()
    shops = [make.ready_shop(session, now=now, holder=holder) for _ in range(3)]
    make.upgraded(session, shops[0], now=now, policy=policy)
    make.submit(session, shops[1], now=now, policy=policy)  # in progress: holds a place too
    with pytest.raises(errors.OperatorLimitReached):
        make.submit(session, shops[2], now=now, policy=policy)
    # Someone else may run the third account.
    assert make.submit(session, shops[2], now=now, policy=policy, named=make.operator()).status == State.SUBMITTED


# ---------------------------------------------------------------- the holder answers, the review


def test_r15_r16_the_holders_acceptance_upgrades_the_account(session, now, policy):
    holder = person()
    shop = make.ready_shop(session, now=now, holder=holder, account_fields={"login_phone": "13800001111"})
    app = make.submit(session, shop, now=now)
    later = now + policy.confirmation_ttl / 2
    accepted = upgrades.accept(session, make.token(app), policy, now=later)
    assert (accepted.status, accepted.confirmed_at, accepted.finished_at) == (State.SUCCEEDED, later, later)
    record = session.get_one(OfficialAccount, shop.official_account_id)
    assert (record.origin, record.account_type, record.upgraded_at) == ("manual", "main", later)
    assert record.cancel_deadline is None  # a manual upgrade cannot be cancelled (policy)
    assert record.operator_id_hash == pii.Person(**holder).id_hash
    assert pii.vault().decrypt(record.login_phone_before_enc, context="login_phone") == "13800001111"
    assert [(c.party, c.decision) for c in upgrades.consents(session, app.id)] == [
        ("merchant", "agreed"),
        ("holder", "accepted"),
    ]


def test_r16_the_review_does_not_count_the_applications_own_reservations(session, now, policy):
    """One main slot, one operator place: the application holds both, and its review still passes."""
    policy = with_policy(policy, operators={"capacity": 1})
    subject = make.subject(session, now=now, subject_type="individual_business")
    shop = make.ready_shop(session, now=now, subject_id=subject.id)
    app = make.submit(session, shop, now=now, policy=policy, account_type="main")
    assert upgrades.accept(session, make.token(app), policy, now=now).status == State.SUCCEEDED


def test_r16_a_check_failing_at_review_rejects_with_every_failed_reason(session, now, policy):
    shop = make.ready_shop(session, now=now)
    app = make.submit(session, shop, now=now)
    account = session.get_one(Account, shop.official_account_id)
    account.status, account.violations_90d = "banned", 3
    done = upgrades.accept(session, make.token(app), policy, now=now)
    assert done.status == State.REJECTED
    assert [r["code"] for r in done.reasons] == ["ACCOUNT_NOT_NORMAL", "ACCOUNT_HAS_VIOLATIONS"]
    assert used(session, shop.subject_id, now)["main"] == 0


def test_r15_the_holder_declines_and_the_slot_and_place_go_back(session, now, policy):
    holder = person()
    shop = make.ready_shop(session, now=now, holder=holder)
    app = make.submit(session, shop, now=now)
    done = upgrades.decline(session, make.token(app), policy, now=now)
    assert (done.status, done.reasons) == (State.REJECTED, [{"code": "HOLDER_DECLINED"}])
    assert used(session, shop.subject_id, now)["main"] == 0 and operator_places(session, holder, now) == 0
    assert [c.decision for c in upgrades.consents(session, app.id)] == ["agreed", "declined"]


def test_r15_from_the_deadline_on_an_answer_is_refused_as_expired(session, now, policy):
    shop = make.ready_shop(session, now=now)
    app = make.submit(session, shop, now=now)
    deadline = app.confirmation_expires_at
    for answer in (upgrades.accept, upgrades.decline):
        with pytest.raises(errors.ConfirmationExpired):
            answer(session, make.token(app), policy, now=deadline)
    assert session.scalar(select(func.count()).select_from(Consent)) == 1


def test_r20_a_closed_confirmation_cannot_be_answered_again(session, now, policy):
    shop = make.ready_shop(session, now=now)
    app = make.submit(session, shop, now=now)
    upgrades.decline(session, make.token(app), policy, now=now)
    with pytest.raises(errors.InvalidTransition):
        upgrades.accept(session, make.token(app), policy, now=now)
    assert session.get_one(Application, app.seq).status == State.REJECTED
    with pytest.raises(errors.NotFound):
        upgrades.accept(session, "no-such-token", policy, now=now)


# ---------------------------------------------------------------- staff review


def big_account(session, now, policy):
    shop = make.ready_shop(session, now=now, account_fields={"followers": policy.review.staff_review_min_followers})
    app = make.upgraded(session, shop, now=now, policy=policy)
    assert (app.status, app.staff_review) == (State.REVIEWING, Review.WAITING)
    assert upgrades.review_queue(session, after_seq=None, limit=10) == [app]
    return shop, app


def test_r16_a_big_account_waits_for_staff_who_approve(session, now, policy):
    shop, app = big_account(session, now, policy)
    assert upgrades.official_account(session, shop.id) is None
    done = upgrades.approve(session, app.id, policy, actor=make.STAFF, now=now, note="核对无误")
    assert (done.status, done.staff_review) == (State.SUCCEEDED, Review.APPROVED)
    assert upgrades.official_account(session, shop.id) is not None
    assert upgrades.review_queue(session, after_seq=None, limit=10) == []


def test_r16_staff_reject_with_a_reason_the_merchant_reads(session, now, policy):
    shop, app = big_account(session, now, policy)
    done = upgrades.staff_reject(session, app.id, reason="资料不符", actor=make.STAFF, now=now)
    assert (done.status, done.staff_review) == (State.REJECTED, Review.REJECTED)
    assert done.reasons == [{"code": "STAFF_REJECTED", "text": "资料不符"}]
    assert used(session, shop.subject_id, now)["main"] == 0


def test_r16_a_staff_approval_rechecks_and_rejects_what_now_fails(session, now, policy):
    shop, app = big_account(session, now, policy)
    session.get_one(Account, shop.official_account_id).real_name_verified = False
    done = upgrades.approve(session, app.id, policy, actor=make.STAFF, now=now)
    assert (done.status, done.staff_review) == (State.REJECTED, Review.REJECTED)
    assert done.reasons == [{"code": "ACCOUNT_NOT_VERIFIED"}]
    assert upgrades.official_account(session, shop.id) is None


def test_r16_r20_only_an_application_waiting_for_staff_can_be_approved_or_rejected(session, now, policy):
    shop = make.ready_shop(session, now=now)
    app = make.submit(session, shop, now=now)
    with pytest.raises(errors.InvalidTransition):
        upgrades.approve(session, app.id, policy, actor=make.STAFF, now=now)
    with pytest.raises(errors.InvalidTransition):
        upgrades.staff_reject(session, app.id, reason="x", actor=make.STAFF, now=now)
    assert app.status == State.SUBMITTED and app.staff_review is None


# ---------------------------------------------------------------- withdraw, apply again


def test_r18_withdrawn_then_applied_again_counts_the_attempt(session, now):
    shop = make.ready_shop(session, now=now)
    first = make.submit(session, shop, now=now)
    assert upgrades.withdraw(session, first.id, actor=make.MERCHANT, now=now).status == State.WITHDRAWN
    assert used(session, shop.subject_id, now)["main"] == 0
    second = make.submit(session, shop, now=now)
    assert second.attempt == 2
    assert upgrades.accept(session, make.token(second), get_policy(), now=now).status == State.SUCCEEDED
    # A reviewing or finished application cannot be withdrawn.
    with pytest.raises(errors.InvalidTransition):
        upgrades.withdraw(session, second.id, actor=make.MERCHANT, now=now)


def test_r18_after_a_success_no_new_application_for_the_account(session, now):
    shop = make.ready_shop(session, now=now)
    make.upgraded(session, shop, now=now)
    with pytest.raises(errors.AlreadyUpgraded):
        make.submit(session, shop, now=now)


# ---------------------------------------------------------------- expiry as a fact of time


def test_r15_the_sweep_records_lapsed_applications_at_their_deadline(now, policy):
    with session_scope() as session:
        holder = person()
        lapsing = make.submit(session, make.ready_shop(session, now=now, holder=holder), now=now)
        later = now + policy.confirmation_ttl / 2
        fresh = make.submit(session, make.ready_shop(session, now=later), now=later)
    sweep_at = lapsing.confirmation_expires_at + policy.confirmation_ttl / 4
    with session_scope() as session:
        assert upgrades.expire_confirmations(session, now=sweep_at) == 1
        assert upgrades.expire_confirmations(session, now=sweep_at) == 0
    with session_scope() as session:
        expired = upgrades.get_application(session, lapsing.id)
        assert (expired.status, expired.reasons) == (State.EXPIRED, [{"code": "CONFIRMATION_EXPIRED"}])
        assert expired.finished_at == lapsing.confirmation_expires_at  # it ended at its deadline
        assert upgrades.get_application(session, fresh.id).status == State.SUBMITTED
        assert operator_places(session, holder, sweep_at) == 0
        trail = session.scalars(select(AuditEntry).where(AuditEntry.target_id == lapsing.id)).all()
        assert [(a.action, a.actor) for a in trail][-1] == ("upgrade.expired", upgrades.SWEEP_ACTOR)


def test_r15_a_new_application_replaces_a_lapsed_one_in_the_same_transaction(session, now, policy):
    shop = make.ready_shop(session, now=now)
    stale = make.submit(session, shop, now=now)
    later = stale.confirmation_expires_at
    assert upgrades.active_application(session, shop.id, now=later) is None
    fresh = make.submit(session, shop, now=later)
    assert (fresh.attempt, fresh.account_type) == (2, "main")
    assert stale.status == State.EXPIRED
    assert quotas.held(session, quotas.quota_pool(shop.subject_id, "main")) == 1


def test_r15_expire_lapsed_records_only_the_lapsed_holders_of_the_pools_it_meets(session, now, policy):
    holder = person()
    lapsing = make.submit(session, make.ready_shop(session, now=now, holder=holder), now=now)
    other = make.submit(session, make.ready_shop(session, now=now), now=now)
    at = lapsing.confirmation_expires_at
    _, expired = upgrades.lock_pools(session, [quotas.operator_pool(pii.Person(**holder).id_hash)], shop_ids=[], now=at)
    assert (lapsing.status, other.status, expired) == (State.EXPIRED, State.SUBMITTED, 1)


def test_r15_recording_an_expiry_writes_the_application_row_once(session, now, policy):
    """One UPDATE of the row, its end time in it: a second UPDATE in the same transaction makes PostgreSQL check
    the row's foreign keys again (KEY SHARE on the shop), a wait behind a wave chunk holding that shop, which had
    closed a deadlock with the chunk waiting for this application (found by the soak)."""
    lapsing = make.submit(session, make.ready_shop(session, now=now), now=now)
    at = lapsing.confirmation_expires_at + policy.confirmation_ttl
    updates: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE UPGRADE_APPLICATIONS"):
            updates.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", count)
    try:
        upgrades.expire_lapsed(session, shop_ids=[lapsing.shop_id], now=at)
        session.flush()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(updates) == 1, updates
    assert (lapsing.status, lapsing.finished_at) == (State.EXPIRED, lapsing.confirmation_expires_at)


# ---------------------------------------------------------------- what the merchant reads


def test_r04_eligibility_lists_every_check_and_the_type_an_application_gets(session, now, policy):
    shop = make.ready_shop(session, now=now)
    checks, resolved = upgrades.eligibility(session, shop, policy, now=now, account_type=None)
    assert all(c.passed for c in checks) and resolved == "main"
    assert len(checks) == 11
    make.submit(session, shop, now=now)
    checks, _ = upgrades.eligibility(session, shop, policy, now=now, account_type="vertical")
    assert [c.code for c in checks if not c.passed] == ["APPLICATION_IN_PROGRESS"]


def test_r30_r33_subject_quotas_count_totals_and_reservations(session, now, policy):
    subject = make.subject(session, now=now)
    shop = make.ready_shop(session, now=now, subject_id=subject.id, account_fields={"followers": 400_000})
    make.submit(session, shop, now=now, account_type="dedicated")
    assert upgrades.subject_quotas(session, subject, policy, now=now) == {
        "main": {"total": 1, "used": 0},
        "vertical": {"total": 2, "used": 0},
        "dedicated": {"total": 3, "used": 1},
    }
    # the follower bonus once the subject's bound accounts reach a million together.
    make.ready_shop(session, now=now, subject_id=subject.id, account_fields={"followers": 600_000})
    totals = {t: q["total"] for t, q in upgrades.subject_quotas(session, subject, policy, now=now).items()}
    assert totals == {"main": 1, "vertical": 3, "dedicated": 4}
