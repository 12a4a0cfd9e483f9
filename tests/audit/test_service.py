"""The audit trail at the service level (guanhao.audit.service, SPEC R-20, R-60): `record` queues a row that
is written at the commit, in commit order, linked into its subject's hash chain; `verify` walks the chains
and names the first row that was edited, removed or moved."""

import datetime as dt
import itertools

import sqlalchemy as sa
from sqlalchemy import func, select

from guanhao.audit import service as audit
from guanhao.audit.models import AuditEntry
from guanhao.db import session_scope
from tests.audit.test_chain import trail_unlocked


def probe(session, target: str, *, subject_id: str | None, at: dt.datetime, **extra) -> None:
    audit.record(
        session,
        at=at,
        actor="test",
        action="probe",
        target_kind="probe",
        target_id=target,
        subject_id=subject_id,
        from_state="a",
        to_state="b",
        detail={"n": target, **extra},
    )


def trail(session) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))


def test_r60_a_row_is_written_at_the_commit_with_who_when_from_to_and_why(now):
    with session_scope() as session:
        probe(session, "t1", subject_id="subj-a", at=now, why="because")
        session.flush()
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0
    with session_scope() as session:
        [row] = trail(session)
        assert (row.actor, row.at, row.action, row.target_id, row.from_state, row.to_state) == (
            "test",
            now,
            "probe",
            "t1",
            "a",
            "b",
        )
        assert row.detail == {"n": "t1", "why": "because"}


def test_r60_each_subjects_rows_form_one_hash_chain_across_transactions(now):
    with session_scope() as session:
        probe(session, "a1", subject_id="subj-a", at=now)
        probe(session, "b1", subject_id="subj-b", at=now)
        probe(session, "x1", subject_id=None, at=now)
    with session_scope() as session:
        probe(session, "a2", subject_id="subj-a", at=now)
        audit.record_many(
            session,
            [
                {
                    "at": now,
                    "actor": "wave",
                    "action": "probe",
                    "target_kind": "probe",
                    "target_id": "a3",
                    "subject_id": "subj-a",
                }
            ],
        )
    with session_scope() as session:
        chain = audit.chain_rows(session, "subj-a")
        assert [r.target_id for r in chain] == ["a1", "a2", "a3"]
        assert chain[0].prev_hash == audit.GENESIS
        for previous, row in itertools.pairwise(chain):
            assert row.prev_hash == previous.row_hash
        for row in chain:
            assert row.row_hash == audit.row_hash(row.prev_hash, audit.as_row(row))
        assert [r.target_id for r in audit.chain_rows(session, None)] == ["x1"]
        assert audit.chain_rows(session, "subj-b")[0].prev_hash == audit.GENESIS
        result = audit.verify(session)
        assert (result.ok, result.rows, result.chains) == (True, 5, 3)


def seqs(session) -> dict[str, int]:
    return {r.target_id: r.seq for r in trail(session)}


def three_rows(now) -> dict[str, int]:
    with session_scope() as session:
        for target in ("r1", "r2", "r3"):
            probe(session, target, subject_id="subj-a", at=now)
    with session_scope() as session:
        return seqs(session)


def test_r60_an_edited_row_is_named_by_verify(engine, now):
    seq = three_rows(now)
    with trail_unlocked(engine) as conn:
        conn.execute(sa.text("UPDATE audit_log SET actor = 'someone else' WHERE seq = :s"), {"s": seq["r2"]})
    with session_scope() as session:
        broken = audit.verify(session).first_break
    assert (broken.seq, broken.chain) == (seq["r2"], "subj-a") and "edited" in broken.problem


def test_r60_a_removed_row_breaks_the_link_of_the_next(engine, now):
    seq = three_rows(now)
    with trail_unlocked(engine) as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE seq = :s"), {"s": seq["r2"]})
    with session_scope() as session:
        broken = audit.verify(session).first_break
    assert broken.seq == seq["r3"] and "removed or reordered" in broken.problem


def test_r60_a_row_moved_to_another_subject_is_caught(engine, now):
    seq = three_rows(now)
    with trail_unlocked(engine) as conn:
        conn.execute(sa.text("UPDATE audit_log SET subject_id = 'subj-z' WHERE seq = :s"), {"s": seq["r1"]})
    with session_scope() as session:
        broken = audit.verify(session).first_break
    assert broken.seq == seq["r1"] and "another chain" in broken.problem


def test_r60_a_rolled_back_unit_of_work_leaves_no_row(now):
    try:
        with session_scope() as session:
            probe(session, "never", subject_id="subj-a", at=now)
            raise RuntimeError("the change failed")
    except RuntimeError:
        pass
    with session_scope() as session:
        assert trail(session) == [] and audit.verify(session).rows == 0
