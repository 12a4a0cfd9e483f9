"""The set-based import (guanhao.subjects.bulk) at the service level: each batch decides every line as the
line-at-a-time import does — same accepted lines, same refusals by number and code, same rows, same audit rows —
with the rule guards in place (R-05 one shop per account, R-21 an upgraded shop stays, R-24 an upgraded
account's holder and login phone stay, R-63 a bad line alone)."""

import json
import random

import pytest
from sqlalchemy import select

from guanhao import pii
from guanhao.audit.models import AuditEntry
from guanhao.db import session_scope
from guanhao.subjects import bulk
from guanhao.subjects import service as subjects
from guanhao.subjects.models import Account, Shop, Subject
from tests import make
from tests.factories import person, phone


def _line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _subject(sid: str, name: str = "杭州示例科技有限公司") -> dict:
    return {"kind": "subject", "id": sid, "name": name, "subject_type": "enterprise"}


def _shop(shop_id: str, subject_id: str, score: float = 4.8) -> dict:
    return {
        "kind": "shop",
        "id": shop_id,
        "subject_id": subject_id,
        "name": "示例旗舰店",
        "shop_type": "flagship",
        "status": "active",
        "experience_score": score,
    }


def _account(account_id: str, *, holder: dict, login_phone: str, followers: int = 100) -> dict:
    return {
        "kind": "account",
        "id": account_id,
        "nickname": "示例号",
        "followers": followers,
        "status": "normal",
        "real_name_verified": True,
        "login_phone": login_phone,
        "holder": holder,
    }


def _binding(shop_id: str, account_id: str) -> dict:
    return {"kind": "binding", "shop_id": shop_id, "account_id": account_id}


@pytest.fixture
def world(now):
    """An upgraded shop (its account upgraded too), a shop with an application in progress, a plain bound shop,
    a free account and two subjects: what the guards look at."""
    with session_scope() as session:
        up = make.ready_shop(session, now=now)
        make.upgraded(session, up, now=now)
        pending = make.ready_shop(session, now=now)
        make.submit(session, pending, now=now)
        plain = make.ready_shop(session, now=now)
        free = make.account(session, now=now)
        other = make.subject(session, now=now)
        up_account = session.get_one(Account, up.official_account_id)
        holder = pii.open_person(
            up_account.holder_name_enc, up_account.holder_id_number_enc, up_account.holder_phone_enc, context="person"
        )
        up_phone = pii.vault().decrypt(up_account.login_phone_enc, context="login_phone")
        return {
            "up": up.id,
            "up_subject": up.subject_id,
            "up_account": up.official_account_id,
            "up_holder": {"name": holder.name, "id_number": holder.id_number, "phone": holder.phone},
            "up_phone": up_phone,
            "pending": pending.id,
            "pending_account": pending.official_account_id,
            "plain": plain.id,
            "plain_account": plain.official_account_id,
            "plain_subject": plain.subject_id,
            "free": free.id,
            "other": other.id,
        }


def _snapshot(session, now) -> dict:
    """Rows and queued audit rows of the sync tables, without what differs by nature (nonces, seq)."""
    session.flush()

    def rows(model, columns):
        return sorted(tuple(getattr(r, c) for c in columns) for r in session.scalars(select(model)))

    accounts = [
        (
            a.id,
            a.nickname,
            a.followers,
            a.holder_id_hash,
            pii.vault().decrypt(a.login_phone_enc, context="login_phone"),
            pii.vault().decrypt(a.holder_name_enc, context="person"),
        )
        for a in session.scalars(select(Account).order_by(Account.id))
    ]
    queued = [
        (r["action"], r["target_id"], r["subject_id"], r["from_state"], r["to_state"], json.dumps(r["detail"]))
        for r in session.queued.get("audit", [])
    ]
    return {
        "subjects": rows(Subject, ("id", "name", "subject_type", "updated_at")),
        "shops": rows(Shop, ("id", "subject_id", "official_account_id", "experience_score", "updated_at")),
        "accounts": accounts,
        "audit": queued,
    }


def _both_ways(lines: list[bytes], now) -> tuple:
    """The lines through the line-at-a-time import (rolled back) and through the batch (committed)."""
    numbered = list(enumerate(lines, start=1))
    with session_scope() as session:
        one = subjects.import_lines(session, numbered, actor=make.PLATFORM, now=now)
        one_state = _snapshot(session, now)
        session.rollback()
    with session_scope() as session:
        many = bulk.import_lines(session, numbered, actor=make.PLATFORM, now=now)
        many_state = _snapshot(session, now)
    return one, one_state, many, many_state


def _decided(result) -> tuple:
    return result.accepted, dict(result.by_kind), [(n, e.code) for n, e in result.rejected]


def test_r05_r21_r24_r63_a_batch_decides_each_line_as_the_single_sync_does(world, now):
    w = world
    new_holder = person()
    lines = [
        _line(_subject("s-new")),
        _line(_shop("p-new", "s-new")),
        _line(_shop("p-early", "s-later")),  # the subject comes later in the batch: unknown yet
        _line(_subject("s-later")),
        _line(_account("a-new", holder=new_holder, login_phone=phone())),
        _line(_binding("p-new", "a-new")),
        _line(_binding("p-new", "a-new")),  # the same binding again: nothing to do, accepted
        _line(_binding("p-new", w["free"])),  # rebinding a shop of this batch: a-new is free again
        _line(_binding("p-early", "a-new")),  # p-early was refused: not found
        _line(_shop("p-new2", "s-later")),
        _line(_binding("p-new2", "a-new")),  # a-new was let go two lines ago
        _line(_binding("p-new2", w["plain_account"])),  # another shop's official account
        _line(_shop(w["up"], w["other"])),  # moving an upgraded shop
        _line(_shop(w["pending"], w["other"])),  # moving a shop with an application in progress
        _line(_binding(w["up"], "a-new")),  # rebinding an upgraded shop
        _line(_account("a-3", holder=person(), login_phone=phone())),
        _line(_binding(w["plain"], "a-3")),  # a plain shop may be rebound, letting go of its account
        _line(_binding("p-new2", w["plain_account"])),  # which is free now
        _line(_account(w["up_account"], holder=new_holder, login_phone=w["up_phone"])),  # holder kept
        _line(_account(w["up_account"], holder=w["up_holder"], login_phone=phone())),  # login phone kept
        _line(_account(w["up_account"], holder=w["up_holder"], login_phone=w["up_phone"], followers=9)),  # fine
        _line(_account(w["free"], holder=new_holder, login_phone=phone(), followers=7)),  # not upgraded: fine
        b"{not json",
        b'{"kind": "binding", "shop_id": "p-new", "account_id": "bad id!"}',
        _line(_binding("p-missing", "a-new")),
        _line(_binding("p-new", "a-missing")),
        b"",
        None,
        _line(_subject("s-new", name="改名")),  # the second sync of a subject of this batch: updated
    ]
    one, one_state, many, many_state = _both_ways(lines, now)
    assert _decided(many) == _decided(one)
    assert many_state == one_state
    codes = dict(_decided(many)[2])
    assert codes[3] == "VALIDATION_ERROR" and codes[9] == "NOT_FOUND"
    assert codes[12] == "ACCOUNT_ALREADY_BOUND"
    assert (
        codes[13] == "ALREADY_UPGRADED" and codes[14] == "APPLICATION_IN_PROGRESS" and codes[15] == "ALREADY_UPGRADED"
    )
    assert codes[19] == "MANAGED_BY_SUBJECT" and codes[20] == "MANAGED_BY_SUBJECT"
    assert not {11, 16, 17, 18, 21, 22} & set(codes)
    assert codes[23] == "MALFORMED_BODY" and codes[28] == "PAYLOAD_TOO_LARGE"
    with session_scope() as session:
        assert session.get_one(Shop, w["up"]).subject_id == w["up_subject"]
        assert session.get_one(Shop, "p-new2").official_account_id == w["plain_account"]
        assert session.get_one(Shop, w["plain"]).official_account_id == "a-3"
        assert session.get_one(Subject, "s-new").name == "改名"
        actions = list(session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == "s-new")))
        assert actions == ["subject.created", "subject.updated"]


@pytest.mark.parametrize("seed", range(6))
def test_r05_r21_r24_random_batches_decide_as_the_single_sync_does(world, now, seed):
    """Random lines over a few ids — creations, updates, moves, (re)bindings, refusals — in one batch."""
    w = world
    rng = random.Random(seed)
    subject_ids = ["s-1", "s-2", w["other"], w["up_subject"], "s-none"]
    shop_ids = ["p-1", "p-2", "p-3", w["up"], w["pending"], w["plain"]]
    account_ids = ["a-1", "a-2", w["free"], w["plain_account"], w["up_account"], "a-none"]
    holders = [person(), person(), w["up_holder"]]
    phones = [phone(), w["up_phone"]]
    lines = []
    for _ in range(60):
        kind = rng.choice(["subject", "shop", "shop", "account", "binding", "binding", "binding"])
        if kind == "subject":
            lines.append(_line(_subject(rng.choice(subject_ids[:3]), name=rng.choice(["甲", "乙"]))))
        elif kind == "shop":
            lines.append(_line(_shop(rng.choice(shop_ids), rng.choice(subject_ids), score=rng.choice([3.0, 4.9]))))
        elif kind == "account":
            acct = rng.choice(account_ids[:-1])
            lines.append(_line(_account(acct, holder=rng.choice(holders), login_phone=rng.choice(phones))))
        else:
            lines.append(_line(_binding(rng.choice(shop_ids), rng.choice(account_ids))))
    one, one_state, many, many_state = _both_ways(lines, now)
    assert _decided(many) == _decided(one)
    assert many_state == one_state


def test_r63_a_batch_that_meets_a_concurrent_writer_is_done_again_a_line_at_a_time(now, monkeypatch):
    """A subject inserted by another writer after the batch read its rows: the batch's INSERT fails on the
    primary key, its savepoint goes, and the lines are applied one by one (the subject updated, not doubled)."""
    with session_scope() as session:
        make.subject(session, now=now, subject_id="s-raced")
    real = bulk._Batch._existing

    def blind(self, model, ids):
        return {} if model is Subject else real(self, model, ids)

    monkeypatch.setattr(bulk._Batch, "_existing", blind)
    lines = [_line(_subject(f"s-{n}")) for n in range(30)] + [_line(_subject("s-raced", name="后来")), b"[]"]
    with session_scope() as session:
        result = bulk.import_lines(session, list(enumerate(lines, start=1)), actor=make.PLATFORM, now=now)
    assert (result.accepted, [(n, e.code) for n, e in result.rejected]) == (31, [(32, "MALFORMED_BODY")])
    with session_scope() as session:
        assert session.get_one(Subject, "s-raced").name == "后来"
        actions = list(session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == "s-raced")))
        assert actions == ["subject.created", "subject.updated"]
        assert len(list(session.scalars(select(Subject.id)))) == 31
