"""Benchmark: the NDJSON platform import against COPY of the same rows into the same tables.

    .venv/bin/python bench/import.py [--sizes 100000,1000000] [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                     [--path http|cli] [--workers 1]

For each size it writes an NDJSON file of that many lines in the issue's mix (per subject: the subject,
three accounts with their holders, three shops, three bindings), then:

1. the import, through the real path: `--path http` (default) starts `guanhao serve` on a scratch
   PostgreSQL database and POSTs the file, streamed, to `/api/v1/import` with the admin token;
   `--path cli` runs `guanhao import FILE` instead. Validation, PII sealing and blind indexes, the
   rule guards, audit rows — everything the service does — is in the time;
2. the baseline, in the same run: the rows that import wrote (subjects, accounts, shops with their
   bindings, and the audit rows), dumped with COPY TO, then loaded with COPY FROM into the same
   tables of a second scratch database (migrated, indexes and constraints in place) in one
   transaction. Only the COPY FROM is timed.

It prints both times, lines/s and rows/s, the ratio (COPY time / import time; the target is ≥ 0.2) and
the importer's peak RSS (VmHWM of the server process, or of the CLI process), and, for the sizes
given, whether the peak stays flat across a 10× larger file. Last line: `import ratio: R`, the worst
ratio of its sizes. Not a test.
"""

import argparse
import base64
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import drop_database, free_port, scratch_database  # noqa: E402
from guanhao.pii import id_check_char  # noqa: E402

TABLES = ["subjects", "accounts", "shops", "audit_log", "outbox_events"]
SERVICE_DB = f"bench_import_service_{os.getpid()}"
COPY_DB = f"bench_import_copy_{os.getpid()}"
TOKEN = "bench-import-admin-token-" + "x" * 16


def libpq(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def id_number(n: int) -> str:
    first17 = f"110101{1970 + n % 40:04d}{1 + n % 12:02d}{1 + n % 28:02d}{n % 1000:03d}"
    return first17 + id_check_char(first17)


def write_file(path: Path, lines: int) -> None:
    """`lines` NDJSON lines: groups of ten (subject, 3 accounts, 3 shops, 3 bindings), cut at `lines`."""
    written = 0
    with path.open("wb") as f:
        g = 0
        while written < lines:
            g += 1
            sid = f"sub-{g:08d}"
            group = [
                {
                    "kind": "subject",
                    "id": sid,
                    "name": f"杭州示例科技有限公司{g}",
                    "subject_type": "enterprise" if g % 10 else "individual_business",
                    "cross_border": g % 20 == 0,
                }
            ]
            for k in range(3):
                n = g * 3 + k
                group.append(
                    {
                        "kind": "account",
                        "id": f"acc-{n:08d}",
                        "nickname": f"示例账号{n}",
                        "followers": (n * 7919) % 900000,
                        "status": "normal",
                        "real_name_verified": True,
                        "login_phone": f"138{n % 100000000:08d}",
                        "holder": {"name": "张三", "id_number": id_number(n), "phone": f"139{n % 100000000:08d}"},
                    }
                )
            for k in range(3):
                n = g * 3 + k
                group.append(
                    {
                        "kind": "shop",
                        "id": f"shop-{n:08d}",
                        "subject_id": sid,
                        "name": f"示例旗舰店{n}",
                        "shop_type": "flagship",
                        "status": "active",
                        "experience_score": round(3.0 + (n % 20) * 0.1, 1),
                    }
                )
            for k in range(3):
                n = g * 3 + k
                group.append({"kind": "binding", "shop_id": f"shop-{n:08d}", "account_id": f"acc-{n:08d}"})
            for obj in group[: lines - written]:
                f.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
            written += min(len(group), lines - written)


def env_for(url: str, var_dir: str) -> dict:
    return dict(
        os.environ,
        GUANHAO_DATABASE_URL=url,
        GUANHAO_ADMIN_TOKEN=TOKEN,
        GUANHAO_PII_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        GUANHAO_HASH_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        GUANHAO_MAX_IMPORT_BYTES=str(64 * 1024**3),
        GUANHAO_LOG_LEVEL="WARNING",
        GUANHAO_VAR_DIR=var_dir,
    )


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a process and its children (uvicorn with several workers), in MiB."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]))
        except OSError:
            pass
    return total / 1024


def import_http(url: str, path: Path, var_dir: str, workers: int) -> tuple[float, float, dict]:
    port = free_port()
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/guanhao"), "serve", "--no-worker", "--port", str(port), "--workers", str(workers)],
        env=env_for(url, var_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"serve exited: {server.stderr.read().decode() if server.stderr else ''}")
            time.sleep(0.1)

        def body():
            with path.open("rb") as f:
                while chunk := f.read(256 * 1024):
                    yield chunk

        started = time.perf_counter()
        r = httpx.post(
            base + "/api/v1/import",
            content=body(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"},
            timeout=None,
        )
        elapsed = time.perf_counter() - started
        if r.status_code != 200:
            raise SystemExit(f"import answered {r.status_code}: {r.text[:2000]}")
        result = r.json()
        rss = peak_rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return elapsed, rss, {"accepted": result["accepted"], "rejected": len(result["rejected"])}


def import_cli(url: str, path: Path, var_dir: str) -> tuple[float, float, dict]:
    env = env_for(url, var_dir)
    subprocess.run([str(ROOT / ".venv/bin/guanhao"), "db", "upgrade"], env=env, check=True, capture_output=True)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/guanhao"), "import", str(path), "--quiet", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    peak = 0.0
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else b""))
    reader.start()
    while proc.poll() is None:
        peak = max(peak, peak_rss_mib(proc.pid))
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    reader.join()
    if proc.returncode != 0:
        raise SystemExit(f"guanhao import failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    summary = json.loads(b"".join(out))
    return elapsed, peak, {"accepted": summary["accepted"], "rejected": len(summary["rejected"])}


def copy_baseline(source_url: str, target_url: str, var_dir: str) -> tuple[float, int]:
    """Dumps what the import wrote, loads it into a fresh migrated database; times the load only."""
    subprocess.run(
        [str(ROOT / ".venv/bin/guanhao"), "db", "upgrade"],
        env=env_for(target_url, var_dir),
        check=True,
        capture_output=True,
    )
    dumps: dict[str, Path] = {}
    rows = 0
    with psycopg.connect(libpq(source_url)) as src:
        for table in TABLES:
            dump = Path(var_dir) / f"{table}.copy"
            with dump.open("wb") as f, src.cursor().copy(f"COPY {table} TO STDOUT") as copy:
                for chunk in copy:
                    f.write(chunk)
            dumps[table] = dump
            rows += src.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(libpq(target_url)) as dst:
        started = time.perf_counter()
        with dst.transaction():
            for table in TABLES:
                with dumps[table].open("rb") as f, dst.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                    while chunk := f.read(1024 * 1024):
                        copy.write(chunk)
        elapsed = time.perf_counter() - started
    for dump in dumps.values():
        dump.unlink()
    return elapsed, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument(
        "--url",
        default=os.environ.get("GUANHAO_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--path", choices=["http", "cli"], default="http")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ratios: list[float] = []
    peaks: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        for size in sizes:
            path = Path(tmp) / f"import-{size}.ndjson"
            write_file(path, size)
            imported_url = scratch_database(args.url, SERVICE_DB)
            copied_url = scratch_database(args.url, COPY_DB)
            load = os.getloadavg()
            if args.path == "http":
                took, rss, result = import_http(imported_url, path, tmp, args.workers)
            else:
                took, rss, result = import_cli(imported_url, path, tmp)
            copy_took, rows = copy_baseline(imported_url, copied_url, tmp)
            ratio = copy_took / took
            ratios.append(ratio)
            peaks[size] = rss
            print(
                f"{size:>9} lines ({path.stat().st_size / 2**20:.0f} MiB) via {args.path}: "
                f"import {took:8.1f} s = {size / took:8.0f} lines/s "
                f"(accepted {result['accepted']}, rejected {result['rejected']}), peak RSS {rss:.0f} MiB | "
                f"COPY of the same {rows} rows {copy_took:6.2f} s = {rows / copy_took:8.0f} rows/s | "
                f"ratio {ratio:.4f} | load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
                flush=True,
            )
            path.unlink()
            drop_database(args.url, SERVICE_DB)
            drop_database(args.url, COPY_DB)
    ordered = sorted(peaks)
    for small, large in itertools.pairwise(ordered):
        print(
            f"memory: peak RSS {peaks[small]:.0f} MiB at {small} lines, {peaks[large]:.0f} MiB at {large} lines "
            f"({large / small:.0f}x the lines, {peaks[large] / peaks[small]:.2f}x the memory)"
        )
    print(f"import ratio: {min(ratios):.4f}")


if __name__ == "__main__":
    main()
