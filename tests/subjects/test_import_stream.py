"""The NDJSON import is read as a stream (issue 8 item 1): its memory stays flat however large the body,
and it commits in batches, so what it imported so far is visible — and other writers get their turn —
while the body is still arriving."""

import json
import threading
import time
import tracemalloc

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import reset_caches, serving

SUBJECT = {"name": "杭州示例科技有限公司", "subject_type": "enterprise"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def _subject_line(subject_id: str) -> bytes:
    return json.dumps({"kind": "subject", "id": subject_id} | SUBJECT, ensure_ascii=False).encode() + b"\n"


@pytest.fixture
def app_with(database, monkeypatch):
    def build(**settings):
        for name, value in settings.items():
            monkeypatch.setenv(f"GUANHAO_{name.upper()}", str(value))
        reset_caches()
        from guanhao.app import create_app

        return create_app()

    yield build
    reset_caches()


def test_a_large_import_does_not_hold_its_body(app_with, admin_headers):
    total = 32 * 1024 * 1024
    padding = b" " * (64 * 1024 - 1) + b"\n"  # a blank line: read, counted, skipped
    good = 50

    def body():
        sent = 0
        n = 0
        while sent < total:
            if n < good and sent >= n * (total // good):
                line = _subject_line(f"s-{n}")
                n += 1
            else:
                line = padding
            sent += len(line)
            yield line

    with serving(app_with(max_import_bytes=64 * 1024 * 1024)) as url, httpx.Client(base_url=url, timeout=120) as c:
        warm = c.post("/api/v1/import", content=_subject_line("warm"), headers=admin_headers | NDJSON)
        assert warm.status_code == 200, warm.text
        tracemalloc.start()
        try:
            r = c.post("/api/v1/import", content=body(), headers=admin_headers | NDJSON)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": good, "rejected": []}
    # The body is 32 MiB; the service (and this client) together held at most a small part of it at once.
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while importing 32 MiB"


def test_an_import_commits_in_batches_while_its_body_is_still_arriving(app_with, admin_headers, engine):
    first_lines_sent = threading.Event()
    go_on = threading.Event()

    def body():
        yield _subject_line("s-1") + _subject_line("s-2")
        first_lines_sent.set()
        go_on.wait(30)
        yield _subject_line("s-3")

    result = {}
    with serving(app_with(import_batch_lines=2)) as url:

        def post():
            with httpx.Client(base_url=url, timeout=60) as c:
                result["r"] = c.post("/api/v1/import", content=body(), headers=admin_headers | NDJSON)

        thread = threading.Thread(target=post)
        thread.start()
        try:
            assert first_lines_sent.wait(10)
            deadline = time.monotonic() + 10
            seen: list = []
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    seen = conn.execute(sa.text("SELECT id FROM subjects ORDER BY id")).scalars().all()
                if seen:
                    break
                time.sleep(0.02)
            assert seen == ["s-1", "s-2"], "the first batch is committed while the import is still open"
            # Another writer gets its turn in between.
            with httpx.Client(base_url=url, timeout=10) as c:
                r = c.put("/api/v1/subjects/other", json=SUBJECT, headers=admin_headers)
                assert r.status_code == 201, r.text
        finally:
            go_on.set()
            thread.join(30)
    assert result["r"].status_code == 200, result["r"].text
    assert result["r"].json() == {"accepted": 3, "rejected": []}
