"""Reads behind the staff console at the service level: every check run again for a big account waiting for staff
(`recheck_all`, what `approve` decides on, R-16) and the history of waves (`waves.recent`, R-11)."""

import datetime as dt

from guanhao.db import session_scope
from guanhao.subjects import service as subjects
from guanhao.subjects.schemas import ShopIn
from guanhao.upgrades import service as upgrades
from guanhao.upgrades import waves
from tests import make


def test_r16_staff_see_every_check_run_again_and_approve_decides_on_the_same(session, now, policy):
    shop = make.ready_shop(session, now=now, account_fields={"followers": 2_000_000})
    app = make.upgraded(session, shop, now=now)
    assert app.awaiting_staff
    checks = upgrades.recheck_all(session, app, policy, now=now)
    assert len(checks) == 11 and all(c.passed for c in checks)  # its own slot and place are not counted
    assert upgrades.recheck(session, app, policy, now=now) == []
    # the shop is suspended meanwhile: the check fails now, and approving rejects with that reason
    subjects.put_shop(
        session,
        shop.id,
        ShopIn(subject_id=shop.subject_id, name=shop.name, shop_type=shop.shop_type, status="suspended",
               experience_score=shop.experience_score),
        actor=make.PLATFORM,
        now=now,
    )  # fmt: skip
    failed = [c.code for c in upgrades.recheck_all(session, app, policy, now=now) if not c.passed]
    assert failed == ["SHOP_NOT_ACTIVE"]
    decided = upgrades.approve(session, app.id, policy, actor=make.STAFF, now=now)
    assert (decided.status, [r["code"] for r in decided.reasons]) == ("rejected", failed)


def test_r11_waves_newest_first_optionally_of_one_state(now, policy):
    with session_scope() as session:
        first = waves.start(session, limit=0, min_score=None, policy=policy, actor=make.STAFF, now=now).id
        second = waves.start(session, limit=5, min_score=None, policy=policy, actor=make.STAFF, now=now).id
        waves.cancel(session, second, actor=make.STAFF, now=now)
        later = now + dt.timedelta(seconds=1)
        third = waves.start(session, limit=5, min_score=None, policy=policy, actor=make.STAFF, now=later).id
    with session_scope() as session:
        ids = [w.id for w in waves.recent(session, limit=10)]
        assert set(ids) == {first, second, third} and ids.index(third) < ids.index(first)
        assert [w.id for w in waves.recent(session, limit=10, status="cancelled")] == [second]
        assert len(waves.recent(session, limit=2)) == 2
