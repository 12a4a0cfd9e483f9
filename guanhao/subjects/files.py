"""An NDJSON file imported from the command line (`guanhao import FILE`), resumable.

The file is known by the SHA-256 of its content. Each batch is imported set-based (guanhao.subjects.bulk) and,
in the same transaction, the file's row records the last line committed, the counts, and the batch's refused
lines: after a crash the import starts again after the last committed line, so each line lands exactly once
(R-63), and the summary at the end covers the whole file.
"""

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from sqlalchemy import select

from guanhao import bodies, clock
from guanhao.db import Session, bulk_insert, session_scope
from guanhao.subjects import bulk
from guanhao.subjects.models import ImportFile, ImportRejection
from guanhao.subjects.service import ImportResult

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Fingerprint:
    file_hash: str
    lines: int
    size: int


def fingerprint(path: Path) -> Fingerprint:
    """The file's SHA-256 and its number of lines (a last line without a newline counts), in one pass."""
    digest = hashlib.sha256()
    lines = size = 0
    last = b"\n"
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            lines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
    return Fingerprint(digest.hexdigest(), lines + (last != b"\n"), size)


@dataclass
class Progress:
    """Where a file's import stands: what `guanhao import` shows as it goes and sums up at the end."""

    file_hash: str
    total_lines: int
    lines_done: int = 0
    accepted: int = 0
    rejected: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    resumed_from: int = 0
    finished: bool = False
    already_done: bool = False


def state_of(session: Session, file_hash: str) -> ImportFile | None:
    return session.get(ImportFile, file_hash)


def rejections(session: Session, file_hash: str) -> Iterator[ImportRejection]:
    """The file's refused lines in line order, read a page at a time."""
    after = 0
    while True:
        page = list(
            session.scalars(
                select(ImportRejection)
                .where(ImportRejection.file_hash == file_hash, ImportRejection.line > after)
                .order_by(ImportRejection.line)
                .limit(1000)
            )
        )
        yield from page
        if len(page) < 1000:
            return
        after = page[-1].line
        session.expunge_all()


def import_file(
    path: Path,
    *,
    actor: str,
    batch_lines: int,
    max_line: int,
    restart: bool = False,
    lang: str = "zh_CN",
    on_batch: Callable[[Progress], None] | None = None,
) -> Progress:
    """R-63: imports the file a batch at a time, each batch one transaction with the file's progress; resumes
    after the last committed line when the file (same content) was imported before and did not finish.
    `restart` imports a file again from its first line. `on_batch` is told the progress after each commit."""
    print_ = fingerprint(path)
    with session_scope() as session:
        now = clock.now(session)
        known = state_of(session, print_.file_hash)
        if known is not None and restart:
            session.delete(known)
            session.flush()
            known = None
        if known is None:
            known = ImportFile(
                file_hash=print_.file_hash,
                path=str(path),
                lines_done=0,
                accepted=0,
                by_kind={},
                rejected=0,
                started_at=now,
                updated_at=now,
            )
            session.add(known)
        progress = Progress(
            file_hash=print_.file_hash,
            total_lines=print_.lines,
            lines_done=known.lines_done,
            accepted=known.accepted,
            rejected=known.rejected,
            by_kind=dict(known.by_kind),
            resumed_from=known.lines_done,
            finished=known.finished_at is not None,
            already_done=known.finished_at is not None,
        )
    if progress.finished:
        return progress
    with path.open("rb") as f:
        lines = bodies.ndjson_file_lines(iter(lambda: f.read(CHUNK), b""), max_line=max_line)
        pending = (pair for pair in lines if pair[0] > progress.resumed_from)
        batches = iter(lambda: list(islice(pending, batch_lines)), [])
        # The next batch is read and validated in a thread while this one is written (bulk.parse_ahead).
        for parsed in bulk.parse_ahead(batches):
            _commit_batch(progress, parsed, actor=actor, lang=lang)
            if on_batch is not None:
                on_batch(progress)
    with session_scope() as session:
        row = session.get_one(ImportFile, progress.file_hash, with_for_update=True)
        row.finished_at = row.updated_at = clock.now(session)
        progress.finished = True
    return progress


def _commit_batch(progress: Progress, parsed: bulk.Parsed, *, actor: str, lang: str) -> None:
    with session_scope() as session:
        now = clock.now(session)
        # The file's row first: a second `guanhao import` of the same file waits here instead of importing twice.
        row = session.get_one(ImportFile, progress.file_hash, with_for_update=True)
        if parsed.last <= row.lines_done:  # another `guanhao import` of the same file committed these lines
            progress.lines_done = row.lines_done
            return
        result: ImportResult = bulk.import_parsed(session, parsed.after(row.lines_done), actor=actor, now=now)
        bulk_insert(
            session,
            ImportRejection,
            [
                {"file_hash": progress.file_hash, "line": n, "code": exc.code, "detail": exc.detail.render(lang)}
                for n, exc in result.rejected
            ],
        )
        row.lines_done = parsed.last
        row.accepted += result.accepted
        row.rejected += len(result.rejected)
        by_kind = dict(row.by_kind)
        for kind, count in result.by_kind.items():
            by_kind[kind] = by_kind.get(kind, 0) + count
        row.by_kind = by_kind
        row.updated_at = now
    progress.lines_done = parsed.last
    progress.accepted += result.accepted
    progress.rejected += len(result.rejected)
    progress.by_kind = by_kind
