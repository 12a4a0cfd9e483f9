"""`guanhao import FILE` (issue 9 item 3): the set-based import from the command line — refused lines by number,
a summary per kind, a report file past 20 refusals — resumable after a crash with each line landing exactly
once; and the same guards through `POST /api/v1/import` in batch mode (R-05, R-21, R-24, R-63)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from guanhao.cli import app as cli
from guanhao.db import reset as reset_caches
from guanhao.db import session_scope
from guanhao.subjects import files
from guanhao.subjects.models import ImportFile
from tests.factories import person, phone

runner = CliRunner()
GUANHAO = Path(sys.executable).with_name("guanhao")
NDJSON = {"Content-Type": "application/x-ndjson"}


def run(*args: str):
    reset_caches()
    result = runner.invoke(cli, list(args))
    reset_caches()
    return result


def group(g: int) -> list[dict]:
    """Ten lines: a subject, three accounts, three shops, three bindings."""
    sid = f"sub-{g}"
    lines: list[dict] = [{"kind": "subject", "id": sid, "name": f"示例公司{g}", "subject_type": "enterprise"}]
    for k in range(3):
        lines.append(
            {
                "kind": "account",
                "id": f"acc-{g}-{k}",
                "nickname": "示例号",
                "followers": 10,
                "status": "normal",
                "real_name_verified": True,
                "login_phone": phone(),
                "holder": person(),
            }
        )
    for k in range(3):
        lines.append(
            {
                "kind": "shop",
                "id": f"shop-{g}-{k}",
                "subject_id": sid,
                "name": "示例店",
                "shop_type": "flagship",
                "status": "active",
                "experience_score": 4.8,
            }
        )
    lines += [{"kind": "binding", "shop_id": f"shop-{g}-{k}", "account_id": f"acc-{g}-{k}"} for k in range(3)]
    return lines


def write(path: Path, groups: int, extra: list[bytes] = ()) -> Path:
    with path.open("wb") as f:
        for g in range(groups):
            for obj in group(g):
                f.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
        for raw in extra:
            f.write(raw + b"\n")
    return path


def counts(url: str) -> dict:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
            for t in ("subjects", "accounts", "shops", "audit_log")
        }
        found["bound"] = conn.execute(
            sa.text("SELECT count(*) FROM shops WHERE official_account_id IS NOT NULL")
        ).scalar()
        found["updated"] = conn.execute(
            sa.text("SELECT count(*) FROM audit_log WHERE action LIKE '%.updated'")
        ).scalar()
    engine.dispose()
    return found


def test_r63_cli_import_reports_refused_lines_by_number_and_sums_up_per_kind(tmp_path, database):
    bad = [
        b"{not json",
        b'{"kind": "shop", "id": "x", "subject_id": "nobody", "name": "s", "shop_type": "flagship",'
        b' "status": "active", "experience_score": 4}',
        b'{"kind": "binding", "shop_id": "shop-0-0", "account_id": "acc-0-1"}',
    ]
    path = write(tmp_path / "sync.ndjson", 3, bad)
    result = run("import", str(path), "--batch", "7", "--quiet")
    assert result.exit_code == 0, result.output
    assert "imported 30" in result.output
    assert "account 9, binding 9, shop 9, subject 3" in result.output
    assert "rejected 3" in result.output
    assert "line 31: MALFORMED_BODY" in result.output
    assert "line 32: VALIDATION_ERROR" in result.output
    assert "line 33: ACCOUNT_ALREADY_BOUND" in result.output
    assert counts(database) | {"audit_log": None} == {
        "subjects": 3,
        "accounts": 9,
        "shops": 9,
        "audit_log": None,
        "bound": 9,
        "updated": 0,
    }
    # Again: the same file is known by its content, and not imported twice.
    again = run("import", str(path), "--quiet")
    assert again.exit_code == 0 and "imported before" in again.output
    assert counts(database)["updated"] == 0
    # --restart imports it again: every line an update now, refused lines refused again.
    restarted = run("import", str(path), "--restart", "--json", "--quiet")
    summary = json.loads(restarted.stdout)
    assert summary["accepted"] == 30 and [r["line"] for r in summary["rejected"]] == [31, 32, 33]
    assert counts(database)["updated"] == 21  # subjects, accounts, shops updated; same bindings write nothing


def test_r63_past_twenty_refusals_the_summary_names_a_report_file(tmp_path, database):
    path = write(tmp_path / "bad.ndjson", 1, [b"[]"] * 25)
    result = run("import", str(path), "--quiet")
    assert result.exit_code == 0, result.output
    assert "rejected 25" in result.output
    report = tmp_path / "bad.ndjson.rejected.tsv"
    assert str(report) in result.output.replace("\n", "")
    rows = report.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "line\tcode\tdetail" and len(rows) == 26
    assert [r.split("\t")[:2] for r in rows[1:3]] == [["11", "MALFORMED_BODY"], ["12", "MALFORMED_BODY"]]


def test_r63_an_import_stopped_after_a_commit_resumes_after_it_each_line_once(tmp_path, database):
    """Service level: the run stops (an exception) right after its second batch committed."""
    path = write(tmp_path / "sync.ndjson", 5, [b"nope"])

    class Crash(Exception):
        pass

    def crash_after_two(progress: files.Progress) -> None:
        if progress.lines_done >= 20:
            raise Crash

    with pytest.raises(Crash):
        files.import_file(path, actor="cli", batch_lines=10, max_line=1 << 20, on_batch=crash_after_two)
    assert counts(database)["subjects"] == 2
    resumed = files.import_file(path, actor="cli", batch_lines=10, max_line=1 << 20)
    assert resumed.resumed_from == 20 and resumed.finished
    assert (resumed.accepted, resumed.rejected) == (50, 1)
    assert resumed.by_kind == {"subject": 5, "account": 15, "shop": 15, "binding": 15}
    found = counts(database)
    assert (found["subjects"], found["accounts"], found["shops"], found["bound"]) == (5, 15, 15, 15)
    assert (found["audit_log"], found["updated"]) == (50, 0)  # one audit row a line: none imported twice
    with session_scope(write=False) as session:
        assert [(r.line, r.code) for r in files.rejections(session, resumed.file_hash)] == [(51, "MALFORMED_BODY")]


def test_r63_a_killed_cli_import_resumes_and_lands_each_line_exactly_once(tmp_path, database):
    """A real crash: `guanhao import` killed (SIGKILL) in the middle of the file, then run again."""
    path = write(tmp_path / "big.ndjson", 300)
    env = dict(os.environ, GUANHAO_DATABASE_URL=database, GUANHAO_QUIET_DEV_KEYS="1")
    proc = subprocess.Popen(
        [str(GUANHAO), "import", str(path), "--batch", "20", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = sa.create_engine(database)
    done = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with engine.connect() as conn:
                    done = conn.execute(sa.text("SELECT max(lines_done) FROM import_files")).scalar() or 0
            except sa.exc.OperationalError:  # the table is not there yet (the schema is being brought up)
                done = 0
            if done >= 200:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        engine.dispose()
    assert 200 <= done < 3000, f"the import was not stopped in the middle (at line {done})"
    landed = counts(database)["subjects"]
    assert landed < 300
    result = run("import", str(path), "--quiet")
    assert result.exit_code == 0, result.output
    assert "resumed after line" in result.output
    found = counts(database)
    assert (found["subjects"], found["accounts"], found["shops"], found["bound"]) == (300, 900, 900, 900)
    assert (found["audit_log"], found["updated"]) == (3000, 0)
    with session_scope(write=False) as session:
        row = session.scalars(sa.select(ImportFile)).one()
        assert (row.lines_done, row.accepted, row.rejected) == (3000, 3000, 0) and row.finished_at is not None


def test_r05_r21_r24_guards_hold_in_a_batch_through_http(api):
    """The guards in batch mode over HTTP: one batch holds refused and accepted lines side by side."""
    subject_id, shop_id, account_id = api.ready_shop()
    api.upgrade(shop_id)
    other = api.subject()
    _, free_shop, free_account = api.ready_shop()
    upgraded = api.client.get(f"/api/v1/accounts/{account_id}", headers=api.admin).json()
    assert upgraded["account_id"] == account_id
    lines = [
        {
            "kind": "shop",
            "id": shop_id,
            "subject_id": other,
            "name": "s",
            "shop_type": "flagship",
            "status": "active",
            "experience_score": 4.9,
        },
        {"kind": "binding", "shop_id": shop_id, "account_id": free_account},  # R-21 (before R-05)
        {"kind": "binding", "shop_id": free_shop, "account_id": account_id},
        {
            "kind": "account",
            "id": account_id,
            "nickname": "n",
            "followers": 1,
            "status": "normal",
            "real_name_verified": True,
            "login_phone": phone(),
            "holder": person(),
        },
        *group(7),
    ]
    body = b"".join(json.dumps(obj, ensure_ascii=False).encode() + b"\n" for obj in lines)
    r = api.client.post("/api/v1/import", content=body, headers=api.admin | NDJSON)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 10
    assert [(x["line"], x["code"]) for x in r.json()["rejected"]] == [
        (1, "ALREADY_UPGRADED"),
        (2, "ALREADY_UPGRADED"),
        (3, "ACCOUNT_ALREADY_BOUND"),
        (4, "MANAGED_BY_SUBJECT"),
    ]
    assert api.client.get(f"/api/v1/shops/{shop_id}", headers=api.admin).json()["subject_id"] == subject_id
    assert api.client.get("/api/v1/shops/shop-7-2", headers=api.admin).json()["official_account_id"] == "acc-7-2"
    assert [a["action"] for a in api.audit("shop-7-2")] == ["shop.created", "shop.official_account_bound"]
