"""The staff console's 操作日志 at the service level (guanhao.audit.service.search, SPEC R-60): the trail newest first,
narrowed by actor (or a role's prefix), action (or a family's prefix), object, subject, shop and time."""

import datetime as dt

from guanhao.audit import service as audit
from guanhao.db import session_scope

HOUR = dt.timedelta(hours=1)


def _rows(now):
    with session_scope() as session:
        for i, (actor, action, target, subject, shop) in enumerate(
            [
                ("merchant:key_1", "upgrade.submitted", "app_1", "subj-1", "shop-1"),
                ("holder", "upgrade.reviewing", "app_1", "subj-1", "shop-1"),
                ("staff:usr_1", "upgrade.review.approved", "app_1", "subj-1", "shop-1"),
                ("staff:usr_2", "wave.started", "wave_1", None, None),
                ("merchant:key_2", "upgrade.submitted", "app_2", "subj-2", "shop-2"),
            ]
        ):
            audit.record(
                session, at=now + i * HOUR, actor=actor, action=action, target_kind="x", target_id=target,
                subject_id=subject, shop_id=shop,
            )  # fmt: skip


def search(**filters) -> list[str]:
    before = filters.pop("before_seq", None)
    limit = filters.pop("limit", 50)
    with session_scope() as session:
        return [
            f"{e.actor}|{e.action}"
            for e in audit.search(session, audit.Filters(**filters), before_seq=before, limit=limit)
        ]


def test_r60_the_trail_newest_first_narrowed_by_every_filter(now):
    _rows(now)
    everything = search()
    assert everything[0] == "merchant:key_2|upgrade.submitted" and len(everything) == 5
    assert search(actor="staff:") == ["staff:usr_2|wave.started", "staff:usr_1|upgrade.review.approved"]
    assert search(actor="staff:usr_1") == ["staff:usr_1|upgrade.review.approved"]
    assert search(action="upgrade.submitted") == [
        "merchant:key_2|upgrade.submitted",
        "merchant:key_1|upgrade.submitted",
    ]
    assert len(search(action="upgrade.")) == 4
    assert search(target_id="wave_1") == ["staff:usr_2|wave.started"]
    assert len(search(shop_id="shop-1")) == 3
    assert search(subject_id="subj-2") == ["merchant:key_2|upgrade.submitted"]
    assert search(since=now + HOUR, until=now + 3 * HOUR) == [
        "staff:usr_1|upgrade.review.approved",
        "holder|upgrade.reviewing",
    ]
    assert search(actor="staff:", action="wave.") == ["staff:usr_2|wave.started"]
    assert search(actor="nobody") == []


def test_r60_pages_go_back_by_sequence(now):
    _rows(now)
    with session_scope() as session:
        first = audit.search(session, audit.Filters(), before_seq=None, limit=2)
        second = audit.search(session, audit.Filters(), before_seq=first[-1].seq, limit=2)
        assert [e.seq for e in first + second] == sorted((e.seq for e in first + second), reverse=True)
        assert len({e.seq for e in first + second}) == 4
        assert audit.actions(session) == sorted(
            {"upgrade.submitted", "upgrade.reviewing", "upgrade.review.approved", "wave.started"}
        )
