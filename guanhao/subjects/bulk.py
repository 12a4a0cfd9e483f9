"""The NDJSON import, set-based: a batch of lines in a few statements instead of a few statements a line.

Each line of a batch is parsed and validated alone (`service.parse_line`, the single sync's schemas and text
rules); the rows the batch names are read in one query per table; then the lines are applied in order
against that picture, each with the single sync's own rule functions — the registered guards (R-21, R-24),
the binding's uniqueness (R-05), the unknown-reference and not-found refusals (R-63) — and the same column
values (PII sealed with its blind index, R-50) and audit rows (R-60). New rows go in with `bulk_insert`
(COPY on PostgreSQL), existing rows through the ORM's batched UPDATEs, the audit rows at commit with the
rest of the session's queue. A line refused by a rule is reported by its number; the others land.

The database still holds what it held: the unique binding (R-05) and the foreign keys. Should a concurrent
writer get there first (a row inserted or bound between the read and the write), the batch is rolled back to
its savepoint and done again a line at a time (`service.apply_lines`), where each line stands alone.
"""

import datetime as dt
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from guanhao import errors
from guanhao.db import Session, among, bulk_insert
from guanhao.subjects import service
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.subjects.service import ImportResult, Line


@dataclass
class Parsed:
    """A batch's lines parsed and validated, before any database work: the good lines in order, the bad ones
    with the error that refuses each (R-63). Built apart from the session, so it can be done ahead, in another
    thread, while the batch before is written."""

    lines: list[Line] = field(default_factory=list)
    rejected: list[tuple[int, errors.DomainError]] = field(default_factory=list)
    last: int = 0  # the number of the batch's last line, blank or not

    def after(self, done: int) -> "Parsed":
        """The lines past `done` (a resumed file whose first lines another import committed meanwhile)."""
        return Parsed(
            [ln for ln in self.lines if ln.number > done], [(n, e) for n, e in self.rejected if n > done], self.last
        )


def parse(lines: Iterable[tuple[int, bytes | None]]) -> Parsed:
    """R-63: each line parsed and validated alone (the single sync's schemas and text rules); blank lines skipped."""
    parsed = Parsed()
    for number, raw in lines:
        parsed.last = number
        if raw is not None and not raw.strip():
            continue
        try:
            parsed.lines.append(service.parse_line(number, raw))
        except errors.DomainError as exc:
            parsed.rejected.append((number, exc))
    return parsed


def parse_ahead(batches: Iterator[list[tuple[int, bytes | None]]]) -> Iterator[Parsed]:
    """The batches parsed in a thread of their own, one batch ahead of the caller: the next batch is read and
    validated while the caller writes the one before (the database's wait releases the GIL). In order; at most
    two batches held at once; an error of the reader is raised here, where the batch it broke would have been."""
    ahead: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(parse(batch)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            offer(_Failed(exc))
            return
        offer(None)

    worker = threading.Thread(target=produce, name="import-parse", daemon=True)
    worker.start()
    try:
        while (item := ahead.get()) is not None:
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join()


@dataclass
class _Failed:
    exc: BaseException


def import_lines(
    session: Session, lines: Iterable[tuple[int, bytes | None]], *, actor: str, now: dt.datetime
) -> ImportResult:
    """R-63: a batch of (line number, line) pairs — a line is None when it was too long to hold — imported
    set-based; every bad line is reported by its number, in line order, and never stops the others. The caller
    commits (one transaction a batch)."""
    return import_parsed(session, parse(lines), actor=actor, now=now)


def import_parsed(session: Session, parsed: Parsed, *, actor: str, now: dt.datetime) -> ImportResult:
    """R-63: a parsed batch applied set-based; its refused lines, parsing's and the rules', in line order."""
    result = ImportResult()
    result.rejected.extend(parsed.rejected)
    if parsed.lines:
        try:
            with session.begin_nested():
                applied = _Batch(session, parsed.lines, actor=actor, now=now).run()
        except IntegrityError:
            # A concurrent writer took a row between our read and our write: one line at a time, each alone.
            applied = service.apply_lines(session, parsed.lines, actor=actor, now=now)
        result.add(applied)
    result.rejected.sort(key=lambda pair: pair[0])
    return result


class _Batch:
    """The batch's picture of the rows it names, as the lines change them, and the writes it makes of it."""

    def __init__(self, session: Session, lines: list[Line], *, actor: str, now: dt.datetime):
        self.session, self.lines, self.actor, self.now = session, lines, actor, now
        self.result = ImportResult()
        subject_ids = {ln.object_id for ln in lines if ln.kind == "subject"}
        subject_ids |= {ln.body.subject_id for ln in lines if ln.kind == "shop"}
        shop_ids = {ln.object_id for ln in lines if ln.kind in ("shop", "binding")}
        account_ids = {ln.object_id for ln in lines if ln.kind == "account"}
        bound_ids = {ln.body.account_id for ln in lines if ln.kind == "binding"}
        # The rows that exist, locked as the single sync locks them (FOR UPDATE on PostgreSQL).
        self.subjects: dict[str, Subject] = self._existing(Subject, subject_ids)
        self.shops: dict[str, Shop] = self._existing(Shop, shop_ids)
        self.accounts: dict[str, Account] = self._existing(Account, account_ids | bound_ids)
        # which shop each account named by a binding is the official account of, as the lines go.
        self.bound_to: dict[str, str] = {}
        if bound_ids:
            stmt = select(Shop.official_account_id, Shop.id).where(among(session, Shop.official_account_id, bound_ids))
            self.bound_to = {a: shop_id for a, shop_id in session.execute(stmt) if a is not None}
        for shop in self.shops.values():
            if shop.official_account_id is not None:
                self.bound_to[shop.official_account_id] = shop.id
        # Rows this batch creates, and the final values of the existing shops it changes.
        self.new_subjects: dict[str, dict] = {}
        self.new_shops: dict[str, dict] = {}
        self.new_accounts: dict[str, dict] = {}
        self.shop_changes: dict[str, dict] = {}

    def _existing(self, model: Any, ids: set[str]) -> dict:
        if not ids:
            return {}
        stmt = select(model).where(among(self.session, model.id, ids)).with_for_update()
        return {row.id: row for row in self.session.scalars(stmt)}

    def run(self) -> ImportResult:
        with self.session.no_autoflush:
            for line in self.lines:
                try:
                    getattr(self, "_" + line.kind)(line)
                    self.result.took(line.kind)
                except errors.DomainError as exc:
                    self.result.rejected.append((line.number, exc))
        self._write()
        return self.result

    # ------------------------------------------------------------ the lines, in order

    def _subject(self, line: Line) -> None:
        values = service.subject_values(line.body, self.now)
        existing = self.subjects.get(line.object_id)
        created = existing is None and line.object_id not in self.new_subjects
        if existing is not None:
            for name, value in values.items():
                setattr(existing, name, value)
        elif created:
            self.new_subjects[line.object_id] = {"id": line.object_id, "created_at": self.now, **values}
        else:
            self.new_subjects[line.object_id].update(values)
        service.record_subject(self.session, line.object_id, line.body, created=created, actor=self.actor, now=self.now)

    def _shop(self, line: Line) -> None:
        body = line.body
        if body.subject_id not in self.subjects and body.subject_id not in self.new_subjects:
            raise service.unknown_subject(body.subject_id)
        values = service.shop_values(body, self.now)
        existing = self.shops.get(line.object_id)
        created = existing is None and line.object_id not in self.new_shops
        if existing is not None:
            if self.shop_changes.get(line.object_id, {}).get("subject_id", existing.subject_id) != body.subject_id:
                # SPEC R-21: the upgrade keeps the subject behind the account; never move a shop under one.
                self._guarded(lambda: service.guard_moves(self.session, existing, self.now))
            self.shop_changes.setdefault(line.object_id, {}).update(values)
        elif created:
            self.new_shops[line.object_id] = {
                "id": line.object_id,
                "official_account_id": None,
                "created_at": self.now,
                **values,
            }
        else:
            # Created by an earlier line of this batch: no upgrade can hold it yet, nothing for the guards.
            self.new_shops[line.object_id].update(values)
        service.record_shop(self.session, line.object_id, body, created=created, actor=self.actor, now=self.now)

    def _account(self, line: Line) -> None:
        existing = self.accounts.get(line.object_id)
        created = existing is None and line.object_id not in self.new_accounts
        if existing is not None:
            self._guarded(lambda: service.guard_account(self.session, existing, line.body))
        values = service.account_values(line.body, self.now)
        if existing is not None:
            for name, value in values.items():
                setattr(existing, name, value)
        elif created:
            self.new_accounts[line.object_id] = {"id": line.object_id, "created_at": self.now, **values}
        else:
            self.new_accounts[line.object_id].update(values)
        service.record_account(self.session, line.object_id, line.body, created=created, actor=self.actor, now=self.now)

    def _binding(self, line: Line) -> None:
        shop_id, account_id = line.object_id, line.body.account_id
        existing = self.shops.get(shop_id)
        if existing is not None:
            state = {
                "subject_id": existing.subject_id,
                "official_account_id": existing.official_account_id,
                **self.shop_changes.get(shop_id, {}),
            }
        elif shop_id in self.new_shops:
            state = self.new_shops[shop_id]
        else:
            raise service.shop_not_found(shop_id)
        if account_id not in self.accounts and account_id not in self.new_accounts:
            raise service.unknown_account(account_id)
        previous = state["official_account_id"]
        if previous == account_id:
            return
        if existing is not None:
            self._guarded(lambda: service.guard_moves(self.session, existing, self.now))
        if account_id in self.bound_to:
            raise service.account_taken(account_id)
        if previous is not None:
            del self.bound_to[previous]
        self.bound_to[account_id] = shop_id
        change = {"official_account_id": account_id, "updated_at": self.now}
        if existing is not None:
            self.shop_changes.setdefault(shop_id, {}).update(change)
        else:
            state.update(change)
        service.record_binding(
            self.session, shop_id, state["subject_id"], previous, account_id, actor=self.actor, now=self.now
        )

    def _guarded(self, check) -> None:
        """A registered guard, in a savepoint of its own as in the single sync: what it wrote before refusing
        (lapsed applications it expired) goes with the refused line."""
        with self.session.begin_nested():
            check()

    # ------------------------------------------------------------ the writes

    def _write(self) -> None:
        session = self.session
        session.flush()  # existing subjects and accounts, and whatever the guards wrote
        bulk_insert(session, Subject, list(self.new_subjects.values()))
        bulk_insert(session, Account, list(self.new_accounts.values()))
        # R-05 holds at every statement: the existing shops whose binding changes let go of theirs first.
        releasing = [
            shop
            for shop_id, change in self.shop_changes.items()
            if (shop := self.shops[shop_id]).official_account_id is not None
            and change.get("official_account_id", shop.official_account_id) != shop.official_account_id
        ]
        for shop in releasing:
            shop.official_account_id = None
        session.flush()
        for shop_id, change in self.shop_changes.items():
            for name, value in change.items():
                setattr(self.shops[shop_id], name, value)
        session.flush()
        bulk_insert(session, Shop, list(self.new_shops.values()))
