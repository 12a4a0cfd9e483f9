"""The audit trail: `record` (and `record_many`); rows are never changed afterwards.

Rows are queued in the session and written just before commit, under the commit-order lock, so
each subject's rows form a hash chain in commit order: row_hash = SHA-256 over the previous
row_hash of the same chain and the row's own canonical content. `verify` walks the chains and
names the first row whose content or link does not match.
"""

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY

from guanhao.audit.models import AuditEntry
from guanhao.db import Session, bulk_insert

GENESIS = "0" * 64
NO_SUBJECT = "-"
_QUEUE = "audit"


def record(
    session: Session,
    *,
    at: dt.datetime,
    actor: str,
    action: str,
    target_kind: str,
    target_id: str,
    subject_id: str | None = None,
    shop_id: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: dict | None = None,
) -> None:
    """R-20, R-60: one row of the append-only trail (who, when, what, from, to, why), queued now and written
    at the commit, in commit order, into its subject's hash chain."""
    session.queue(
        _QUEUE,
        [
            {
                "at": at,
                "actor": actor,
                "action": action,
                "target_kind": target_kind,
                "target_id": target_id,
                "subject_id": subject_id,
                "shop_id": shop_id,
                "from_state": from_state,
                "to_state": to_state,
                "detail": detail or {},
            }
        ],
    )


def record_many(session: Session, rows: list[dict]) -> None:
    """Bulk form of `record` (waves; R-60): dicts with the same keyword names."""
    defaults: dict[str, Any] = {"subject_id": None, "shop_id": None, "from_state": None, "to_state": None, "detail": {}}
    session.queue(_QUEUE, ({**defaults, **row} for row in rows))


# json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")), its encoder made once, not a row.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def canonical(row: dict) -> bytes:
    at = row["at"].astimezone(dt.UTC).isoformat(timespec="microseconds")
    content = {
        "at": at,
        "actor": row["actor"],
        "action": row["action"],
        "target_kind": row["target_kind"],
        "target_id": row["target_id"],
        "subject_id": row["subject_id"],
        "shop_id": row["shop_id"],
        "from": row["from_state"],
        "to": row["to_state"],
        "detail": row["detail"],
    }
    return _CANONICAL.encode(content).encode()


def row_hash(prev_hash: str, row: dict) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(row)).hexdigest()


def chain_of(subject_id: str | None) -> str:
    return subject_id or NO_SUBJECT


@Session.writes_at_commit(_QUEUE)
def _write_trail(session: Session, pending: list[dict]) -> None:
    """R-60: links each queued row to the head of its subject's chain; runs under the commit-order lock."""
    chains = sorted({chain_of(r["subject_id"]) for r in pending})
    heads = _heads(session, chains)
    for row in pending:
        chain = chain_of(row["subject_id"])
        prev = heads.get(chain, GENESIS)
        row["chain"], row["prev_hash"] = chain, prev
        row["row_hash"] = heads[chain] = row_hash(prev, row)
    bulk_insert(session, AuditEntry, pending)


def _heads(session: Session, chains: list[str]) -> dict[str, str]:
    """The last row_hash of each chain. One index probe per chain ((chain, seq), newest first), whatever the
    planner believes about the table: a GROUP BY over `chain IN (…)` was planned as a scan of the whole
    trail once its statistics lagged behind, every commit of a wave chunk reading every row written so far."""
    heads: dict[str, str] = {}
    postgres = session.get_bind().dialect.name == "postgresql"
    for start in range(0, len(chains), 500):
        part = chains[start : start + 500]
        if not postgres:  # SQLite: no statistics to lag, and no column list on a VALUES alias
            last = (
                select(AuditEntry.chain, func.max(AuditEntry.seq).label("seq"))
                .where(AuditEntry.chain.in_(part))
                .group_by(AuditEntry.chain)
                .subquery()
            )
            heads.update(
                session.execute(
                    select(AuditEntry.chain, AuditEntry.row_hash).join(last, AuditEntry.seq == last.c.seq)
                ).all()
            )
            continue
        wanted = (
            func.unnest(bindparam(None, part, type_=ARRAY(String())))
            .table_valued("chain")
            .render_derived(name="wanted")
        )
        latest = (
            select(AuditEntry.row_hash)
            .where(AuditEntry.chain == wanted.c.chain)
            .order_by(AuditEntry.seq.desc())
            .limit(1)
            .scalar_subquery()
        )
        heads.update(
            (chain, head) for chain, head in session.execute(select(wanted.c.chain, latest)) if head is not None
        )
    return heads


def entries(session: Session, *, target_id: str | None, after_seq: int | None, limit: int) -> list[AuditEntry]:
    stmt = select(AuditEntry).order_by(AuditEntry.seq).limit(limit)
    if target_id is not None:
        stmt = stmt.where(AuditEntry.target_id == target_id)
    if after_seq is not None:
        stmt = stmt.where(AuditEntry.seq > after_seq)
    return list(session.scalars(stmt))


def as_row(entry: AuditEntry) -> dict:
    return {
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "target_kind": entry.target_kind,
        "target_id": entry.target_id,
        "subject_id": entry.subject_id,
        "shop_id": entry.shop_id,
        "from_state": entry.from_state,
        "to_state": entry.to_state,
        "detail": entry.detail,
    }


@dataclass(frozen=True)
class Break:
    seq: int
    chain: str
    problem: str


@dataclass(frozen=True)
class Verification:
    rows: int
    chains: int
    first_break: Break | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def verify(session: Session, *, progress=None) -> Verification:
    """R-60: recomputes every chain in seq order; reports the first row that does not match (edited, removed,
    reordered or moved to another chain)."""
    heads: dict[str, str] = {}
    count = 0
    for entry in _stream(session):
        count += 1
        if progress is not None and count % 10_000 == 0:
            progress(count)
        expected_prev = heads.get(entry.chain, GENESIS)
        if entry.chain != chain_of(entry.subject_id):
            return Verification(count, len(heads), Break(entry.seq, entry.chain, "row moved to another chain"))
        if entry.prev_hash != expected_prev:
            return Verification(
                count,
                len(heads),
                Break(entry.seq, entry.chain, "link to the previous row broken (row removed or reordered)"),
            )
        if row_hash(expected_prev, as_row(entry)) != entry.row_hash:
            return Verification(
                count, len(heads), Break(entry.seq, entry.chain, "content does not match its hash (row edited)")
            )
        heads[entry.chain] = entry.row_hash
    return Verification(count, len(heads), None)


def _stream(session: Session) -> Iterator[AuditEntry]:
    last = 0
    while True:
        batch = list(
            session.scalars(select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(5000))
        )
        if not batch:
            return
        yield from batch
        last = batch[-1].seq
        session.expunge_all()


def chain_rows(session: Session, subject_id: str) -> list[AuditEntry]:
    return list(
        session.scalars(select(AuditEntry).where(AuditEntry.chain == chain_of(subject_id)).order_by(AuditEntry.seq))
    )


def for_shop(session: Session, *, subject_id: str, shop_id: str, limit: int) -> list[AuditEntry]:
    """A shop's rows, newest first (the merchant console's 操作记录); found through the subject's index."""
    stmt = (
        select(AuditEntry)
        .where(AuditEntry.subject_id == subject_id, AuditEntry.shop_id == shop_id)
        .order_by(AuditEntry.seq.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class Filters:
    """What the staff console's 操作日志 narrows the trail to; None means any."""

    actor: str | None = None
    action: str | None = None
    target_id: str | None = None
    subject_id: str | None = None
    shop_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def search(session: Session, filters: Filters, *, before_seq: int | None, limit: int) -> list[AuditEntry]:
    """R-60: the trail newest first, narrowed by who (an actor, or every actor of a role given as `staff:`),
    what (an action, or a family given as `upgrade.`), which object, subject or shop, and when [since, until)."""
    stmt = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
    for column, value, family in ((AuditEntry.actor, filters.actor, ":"), (AuditEntry.action, filters.action, ".")):
        if value:
            stmt = stmt.where(column.startswith(value) if value.endswith(family) else column == value)
    for exact, wanted in (
        (AuditEntry.target_id == filters.target_id, filters.target_id),
        (AuditEntry.subject_id == filters.subject_id, filters.subject_id),
        (AuditEntry.shop_id == filters.shop_id, filters.shop_id),
    ):
        if wanted:
            stmt = stmt.where(exact)
    if filters.since is not None:
        stmt = stmt.where(AuditEntry.at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditEntry.at < filters.until)
    if before_seq is not None:
        stmt = stmt.where(AuditEntry.seq < before_seq)
    return list(session.scalars(stmt))


def actions(session: Session) -> list[str]:
    """Every action the trail holds, for the filter's choices."""
    return list(session.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action)))
