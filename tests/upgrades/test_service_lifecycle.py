"""The application's state machine as data (guanhao.upgrades.lifecycle): the transition table and its
refusals (R-20), expiry as a fact of time (R-15) and the progress steps (R-17)."""

import pytest
from sqlalchemy import select, update

from guanhao import errors
from guanhao.upgrades import lifecycle
from guanhao.upgrades import service as upgrades
from guanhao.upgrades.models import TRANSITIONS, Application, Review, State
from tests import make


def stored_status(session, app) -> str:
    return session.scalar(select(Application.status).where(Application.id == app.id))


def queued(session) -> tuple[int, int]:
    return len(session.queued.get("audit", [])), len(session.queued.get("outbox", []))


def test_r20_a_transition_outside_the_table_is_refused_and_changes_nothing(session, now):
    app = make.submit(session, make.ready_shop(session, now=now), now=now)
    refused = 0
    for current in State:
        if current == State.EXPIRED:
            continue  # an application reads expired by time alone: the next test
        session.execute(update(Application).where(Application.id == app.id).values(status=current.value))
        for to in State:
            before = queued(session)
            if to in TRANSITIONS[current]:
                savepoint = session.begin_nested()
                lifecycle.transition(session, app, to, actor="test", now=now)
                assert stored_status(session, app) == to
                savepoint.rollback()
                continue
            with pytest.raises(errors.InvalidTransition) as error:
                lifecycle.transition(session, app, to, actor="test", now=now)
            refused += 1
            assert f"{current.value} cannot become {to.value}" in str(error.value)
            assert stored_status(session, app) == current
            assert queued(session) == before, "a refused transition writes no audit row and emits no event"
    assert refused == 6 * 7 - 7  # every pair from these six states but the diagram's seven arrows


def test_r20_every_ended_state_is_final(session, now):
    assert all(not TRANSITIONS[s] for s in (State.REJECTED, State.EXPIRED, State.WITHDRAWN, State.CANCELLED))
    assert TRANSITIONS[State.SUCCEEDED] == {State.CANCELLED}


def test_r15_a_lapsed_application_is_expired_for_every_transition_but_its_expiry(session, now, policy):
    app = make.submit(session, make.ready_shop(session, now=now), now=now)
    deadline = app.confirmation_expires_at
    for to in (State.REVIEWING, State.WITHDRAWN, State.REJECTED):
        with pytest.raises(errors.InvalidTransition) as error:
            lifecycle.transition(session, app, to, actor="test", now=deadline)
        assert "expired cannot become" in str(error.value)
    later = deadline + policy.confirmation_ttl
    lifecycle.expire(session, app, actor="test", now=later)
    assert (stored_status(session, app), app.finished_at) == (State.EXPIRED, deadline)


def test_r15_status_at_turns_expired_at_the_deadline_not_before(session, now):
    app = make.submit(session, make.ready_shop(session, now=now), now=now)
    deadline = app.confirmation_expires_at
    assert lifecycle.status_at(app, deadline - (deadline - now) / 1000) == State.SUBMITTED
    assert lifecycle.status_at(app, deadline) == State.EXPIRED
    assert upgrades.reasons_at(app, deadline) == [{"code": "CONFIRMATION_EXPIRED"}]
    assert upgrades.reasons_at(app, now) == []


def steps(app, at) -> list[tuple]:
    return [(s["step"], s["state"], s["at"]) for s in lifecycle.steps(app, at)]


def test_r17_the_steps_of_a_lapsed_application_whether_or_not_the_sweep_ran(session, now, policy):
    app = make.submit(session, make.ready_shop(session, now=now), now=now)
    deadline = app.confirmation_expires_at
    waiting = steps(app, now)
    assert waiting == [
        ("submitted", "done", now),
        ("holder_confirmation", "current", None),
        ("review", "pending", None),
        ("result", "pending", None),
    ]
    assert lifecycle.current_step(lifecycle.steps(app, now)) == "holder_confirmation"
    lapsed = [
        ("submitted", "done", now),
        ("holder_confirmation", "failed", deadline),
        ("review", "skipped", None),
        ("result", "failed", deadline),
    ]
    assert steps(app, deadline) == lapsed
    assert lifecycle.current_step(lifecycle.steps(app, deadline)) == "result"
    upgrades.expire_confirmations(session, now=deadline + policy.confirmation_ttl)
    assert steps(app, deadline + policy.confirmation_ttl * 2) == lapsed


def test_r17_the_steps_of_an_accepted_and_of_a_declined_application(session, now, policy):
    accepted = make.upgraded(session, make.ready_shop(session, now=now), now=now)
    assert [s[1] for s in steps(accepted, now)] == ["done", "done", "done", "done"]
    app = make.submit(session, make.ready_shop(session, now=now), now=now)
    declined = upgrades.decline(session, make.token(app), policy, now=now)
    assert [s[1] for s in steps(declined, now)] == ["done", "failed", "skipped", "failed"]


def test_r16_the_staff_review_step_moves_only_as_its_table_says(session, now, policy):
    app = make.submit(session, make.ready_shop(session, now=now), now=now)
    with pytest.raises(errors.InvalidTransition):  # not reviewing
        lifecycle.review_step(session, app, Review.WAITING, actor="test", now=now, detail={})
    lifecycle.transition(session, app, State.REVIEWING, actor="test", now=now)
    with pytest.raises(errors.InvalidTransition):  # approved before it waited
        lifecycle.review_step(session, app, Review.APPROVED, actor="test", now=now, detail={})
    lifecycle.review_step(session, app, Review.WAITING, actor="test", now=now, detail={})
    lifecycle.review_step(session, app, Review.REJECTED, actor="test", now=now, detail={})
    with pytest.raises(errors.InvalidTransition):  # decided once
        lifecycle.review_step(session, app, Review.APPROVED, actor="test", now=now, detail={})
    assert app.staff_review == Review.REJECTED
