"""The bounded pools (guanhao.upgrades.quotas): a subject's account-type slots (R-30, R-33) and a person's
operator places (R-41), as counter rows the database holds. Races on them are in tests/concurrency."""

import pytest
from sqlalchemy import func, select

from guanhao.upgrades import quotas
from guanhao.upgrades.models import Slot
from tests import make

POOL = "operator:test-person"
OTHER = "operator:another-person"


@pytest.fixture
def apps(session, now):
    """Four applications (of four shops) to hold places in the test pools; each also holds its own places
    from submit, in pools these tests do not look at."""
    subject = make.subject(session, now=now)
    return [
        make.submit(session, make.ready_shop(session, now=now, subject_id=subject.id), now=now, named=make.operator())
        for _ in range(3)
    ] + [make.submit(session, make.ready_shop(session, now=now), now=now, named=make.operator())]


def reserve(session, app, pool, capacity, now) -> bool:
    return quotas.reserve(session, pool, capacity, application_id=app.id, account_id=app.account_id, now=now)


def test_r33_r41_reserve_takes_places_up_to_the_capacity_and_no_further(session, apps, now):
    assert [reserve(session, app, POOL, 2, now) for app in apps[:3]] == [True, True, False]
    assert quotas.held(session, POOL) == 2
    assert session.scalar(select(func.count()).select_from(Slot).where(Slot.pool == POOL)) == 2
    assert not reserve(session, apps[3], "quota:nobody:vertical", 0, now)  # a type with no slot at all


def test_r33_release_gives_back_what_an_application_holds_and_the_place_can_be_taken_again(session, apps, now):
    reserve(session, apps[0], POOL, 1, now)
    reserve(session, apps[0], OTHER, 1, now)
    assert not reserve(session, apps[1], POOL, 1, now)
    assert quotas.release(session, application_id=apps[0].id, pool_prefix=POOL) == 1
    assert (quotas.held(session, POOL), quotas.held(session, OTHER)) == (0, 1)
    assert reserve(session, apps[1], POOL, 1, now)
    # Without a prefix: everything, the places submit took included.
    assert quotas.release(session, application_id=apps[0].id) >= 2
    assert quotas.held(session, OTHER) == 0
    assert quotas.release(session, application_id=apps[0].id) == 0


def test_r33_a_lowered_capacity_blocks_new_places_until_enough_are_released(session, apps, now):
    """A later sync lowers the quota (followers fall, the subject turns cross-border): what is held is kept,
    nothing new is reserved while the pool holds as many as the new capacity or more."""
    assert all(reserve(session, app, POOL, 3, now) for app in apps[:3])
    assert not reserve(session, apps[3], POOL, 1, now)
    quotas.release(session, application_id=apps[0].id, pool_prefix=POOL)
    assert quotas.held(session, POOL) == 2
    assert not reserve(session, apps[3], POOL, 1, now)
    assert not reserve(session, apps[3], POOL, 2, now)
    quotas.release(session, application_id=apps[1].id, pool_prefix=POOL)
    assert not reserve(session, apps[3], POOL, 1, now)
    quotas.release(session, application_id=apps[2].id, pool_prefix=POOL)
    assert reserve(session, apps[3], POOL, 1, now)
    assert quotas.held(session, POOL) == 1


def test_r41_move_takes_a_place_with_the_new_person_and_frees_the_old_one(session, apps, now):
    app = apps[0]
    reserve(session, app, POOL, 5, now)
    reserve(session, apps[1], OTHER, 1, now)
    full = quotas.move(
        session, application_id=app.id, account_id=app.account_id, from_pool=POOL, to_pool=OTHER, capacity=1, now=now
    )
    assert not full
    assert (quotas.held(session, POOL), quotas.held(session, OTHER)) == (1, 1)
    moved = quotas.move(
        session, application_id=app.id, account_id=app.account_id, from_pool=POOL, to_pool=OTHER, capacity=2, now=now
    )
    assert moved
    assert (quotas.held(session, POOL), quotas.held(session, OTHER)) == (0, 2)
    assert sorted(quotas.holders(session, [OTHER])) == sorted([app.id, apps[1].id])


def test_r16_held_can_leave_out_one_applications_own_places(session, apps, now):
    reserve(session, apps[0], POOL, 5, now)
    reserve(session, apps[1], POOL, 5, now)
    assert quotas.held(session, POOL) == 2
    assert quotas.held(session, POOL, excluding_application=apps[0].id) == 1
    assert quotas.held(session, "operator:never-used") == 0


def test_lock_creates_the_pools_and_reports_what_each_holds(session, apps, now):
    reserve(session, apps[0], POOL, 5, now)
    assert quotas.lock(session, [OTHER, POOL, POOL]) == {OTHER: 0, POOL: 1}
    assert quotas.lock(session, []) == {}


def test_r30_the_type_slots_of_a_subject_count_each_submitted_application(session, apps, now):
    subject_id = apps[0].subject_id
    # An enterprise: one main, then two vertical slots before any dedicated one.
    assert quotas.held_by_type(session, subject_id) == {"main": 1, "vertical": 2, "dedicated": 0}
    quotas.release(session, application_id=apps[0].id)
    assert quotas.held_by_type(session, subject_id) == {"main": 0, "vertical": 2, "dedicated": 0}
