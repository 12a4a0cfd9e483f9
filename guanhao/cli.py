"""The `guanhao` command: serve, worker, db upgrade, demo-data, api-keys create, users create, jobs run, waves,
events deliver, audit verify, import.

The domain (SQLAlchemy, FastAPI, the services) is imported inside the command that needs it, not here: `guanhao
--help` then costs 0.5 s of CPU instead of 2 s (measured), and `serve` sets up PROMETHEUS_MULTIPROC_DIR before
prometheus-client is first imported (it reads the variable at import). A comment marks each deferred import.
"""

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import structlog
import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from guanhao.errors import DomainError, NotFound
from guanhao.policy import PolicyError, get_policy
from guanhao.process import settle
from guanhao.settings import get_settings, public_url_for

app = typer.Typer(help="guanhao — shop official account upgrade service (店铺官方账号升级)", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
jobs_app = typer.Typer(help="Background jobs.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="api-keys")
users_app = typer.Typer(help="Console users (商家后台, 平台运营后台).", no_args_is_help=True)
app.add_typer(users_app, name="users")
waves_app = typer.Typer(help="Auto-upgrade waves (系统自动升级).", no_args_is_help=True)
events_app = typer.Typer(help="Outbox events and webhook delivery.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(waves_app, name="waves")
app.add_typer(events_app, name="events")
app.add_typer(audit_app, name="audit")
console = Console(stderr=True)


def _startup_checks() -> None:
    try:
        get_policy()
    except PolicyError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    get_settings().keys()
    _keys_match_database(before_migrating=True)
    settle()


def _upgrade_schema() -> None:
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao import migrate
    from guanhao.db import get_engine

    migrate.upgrade(get_engine())
    _keys_match_database()


def _keys_match_database(*, before_migrating: bool = False) -> None:
    """Every command refuses (exit 2) a database written with other keys, before it reads or writes anything
    sealed; a database with no fingerprint yet records this command's keys (guanhao.keyring). Before migrating,
    a database that is not there yet (or not reachable: the migration says so) is left to the migration."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from sqlalchemy.exc import OperationalError

    from guanhao import keyring
    from guanhao.db import get_engine

    pii_key, hash_key = get_settings().keys()
    engine = get_engine()
    if before_migrating and engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:" or not Path(database).exists():
            return
    try:
        keyring.check(engine, pii_key, hash_key, now=dt.datetime.now(dt.UTC))
    except OperationalError:
        if not before_migrating:
            raise
    except keyring.KeysMismatch as exc:
        console.print(
            f"[red]The database {get_engine_url()} was written with other keys ({exc.why}): "
            f"recorded fingerprint {exc.recorded[:12]}, these keys' {exc.current[:12]}. "
            "Start with the GUANHAO_PII_KEY and GUANHAO_HASH_KEY that wrote it "
            "(or, for development keys, the same GUANHAO_VAR_DIR).[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(2) from None


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema up to date (Alembic)."""
    _startup_checks()
    _upgrade_schema()
    console.print(f"schema up to date on {get_engine_url()}")


def _links_follow(host: str, port: int) -> None:
    """Links handed out (confirmation URLs, SMS text, printed examples) point at this host and port, unless
    GUANHAO_PUBLIC_URL says otherwise. Set in the environment: worker processes inherit it."""
    if not os.environ.get("GUANHAO_PUBLIC_URL"):
        os.environ["GUANHAO_PUBLIC_URL"] = public_url_for(host, port)
        get_settings.cache_clear()


def get_engine_url() -> str:
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao.db import get_engine

    return get_engine().url.render_as_string(hide_password=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(help="HTTP worker processes")] = 1,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="run no background worker here (run `guanhao worker` apart)")
    ] = False,
    deliver_webhooks: Annotated[
        bool, typer.Option(help="kept for older scripts: the embedded worker delivers webhooks anyway")
    ] = False,
) -> None:
    """Serve the HTTP API; brings the database schema up to date first. Unless --no-worker, one background worker
    (waves, webhook deliveries, expiry sweeps, purges) runs beside the server — one per `serve`, whatever
    --workers says; more run with `guanhao worker`."""
    # The app's own worker stays off: `serve`'s one embedded worker is a process of its own, started below.
    os.environ["GUANHAO_WORKER"] = "0"
    os.environ["GUANHAO_DELIVER_WEBHOOKS"] = "0"
    get_settings.cache_clear()
    _links_follow(host, port)
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao import logs

    _startup_checks()
    _upgrade_schema()
    logs.configure(get_settings().log_level)
    structlog.get_logger("guanhao.cli").info(
        "serve.starting",
        url=f"http://{host}:{port}",
        links=get_settings().public_url,
        database=get_engine_url(),
        sandbox=get_settings().sandbox,
        workers=workers,
        background_worker=not no_worker,
    )
    # The embedded worker is a process too: the metrics of every process add up (multiprocess mode) whenever
    # there is more than one.
    with _metrics_dir(workers if no_worker else max(workers, 2)):
        embedded = None if no_worker else _embedded_worker()
        if embedded is not None:
            # uvicorn takes SIGTERM/SIGINT while it serves and raises them again, with the handlers found before,
            # once it has shut down: with these it then returns, and the worker is stopped gracefully below.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: None)
        try:
            # No log_config: uvicorn's loggers go through our JSON formatter (each worker's app factory
            # configures logging again); no uvicorn access log, which would write raw paths and queries.
            uvicorn.run(
                "guanhao.app:create_app",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                access_log=False,
                log_config=None,
            )
        finally:
            if embedded is not None:
                _stop_embedded(embedded)


def _embedded_worker():
    """`serve`'s one background worker: a `guanhao worker` process of its own (whatever --workers says), so that
    a wave's planning never takes the interpreter from requests; it stops when `serve` does, or finds itself
    orphaned if `serve` is killed."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao.worker.runner import default_id

    env = os.environ | {"GUANHAO_WORKER_PARENT": str(os.getpid())}
    return subprocess.Popen([sys.executable, "-m", "guanhao.cli", "worker", "--id", f"serve-{default_id()}"], env=env)


def _stop_embedded(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@app.command()
def worker(
    worker_id: Annotated[
        str | None, typer.Option("--id", help="this worker's name in the duty table (default: host-pid)")
    ] = None,
    once: Annotated[bool, typer.Option(help="run every due duty once (running waves to their end), then exit")] = False,
) -> None:
    """Run the background duties — waves, webhook deliveries, expiry sweeps, purges — until SIGTERM/SIGINT. Any
    number of workers may share one database: they never do the same item twice."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao import logs
    from guanhao.worker.runner import Worker

    _startup_checks()
    _upgrade_schema()
    logs.configure(get_settings().log_level)
    w = Worker(worker_id)
    log = structlog.get_logger("guanhao.cli")
    if once:
        done = w.run_once()
        log.info("worker.once", worker=w.id, processed=done)
        return

    def stop(signum, _frame) -> None:
        log.info("worker.stopping", worker=w.id, signal=signal.Signals(signum).name)
        w.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    parent = int(os.environ.get("GUANHAO_WORKER_PARENT") or 0)  # set by `serve` for its embedded worker
    w.start()
    while not w.stop_event.wait(0.5):
        if parent and os.getppid() != parent:
            log.warning("worker.orphaned", worker=w.id, parent=parent)
            break
    w.stop()


@contextmanager
def _metrics_dir(workers: int) -> Iterator[None]:
    """Several worker processes add up their metrics through files in PROMETHEUS_MULTIPROC_DIR
    (prometheus-client's multiprocess mode): a directory of our own unless one is given, emptied of
    an earlier run's files before the workers start."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        yield
        return
    if workers <= 1:
        yield
        return
    path = tempfile.mkdtemp(prefix="guanhao-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(path, ignore_errors=True)


@keys_app.command("create")
def api_keys_create(
    role: Annotated[str, typer.Option(help="merchant or admin")] = "merchant",
    subject: Annotated[str | None, typer.Option("--subject", help="subject_id a merchant key is bound to")] = None,
    label: Annotated[str | None, typer.Option(help="what the key is for")] = None,
) -> None:
    """Create an API key; the token is printed once and stored only as a hash."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao import clock
    from guanhao.auth import service as auth
    from guanhao.db import session_scope
    from guanhao.subjects.models import Subject

    _startup_checks()
    _upgrade_schema()
    with session_scope() as session:
        if role == "merchant" and subject and session.get(Subject, subject) is None:
            console.print(f"[red]subject {subject} is not known[/red]")
            raise typer.Exit(2)
        try:
            key, token = auth.create_key(
                session, role=role, subject_id=subject, label=label, actor="cli", now=clock.now(session)
            )
        except DomainError as exc:
            console.print(f"[red]{exc.detail}[/red]")
            raise typer.Exit(2) from None
    console.print(f"created {key.role} key {key.id}" + (f" for subject {key.subject_id}" if key.subject_id else ""))
    print(token)


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option(help="merchant or staff")] = "merchant",
    subject: Annotated[str | None, typer.Option("--subject", help="subject_id a merchant user belongs to")] = None,
    password: Annotated[
        str | None, typer.Option(help="the password; asked for (hidden) when not given", envvar="GUANHAO_USER_PASSWORD")
    ] = None,
) -> None:
    """Create a console user; the password is stored only as an argon2 hash."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao import clock
    from guanhao.auth import users
    from guanhao.db import session_scope

    _startup_checks()
    _upgrade_schema()
    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        with session_scope() as session:
            user = users.create_user(
                session,
                username=username,
                password=password,
                role=role,
                subject_id=subject,
                actor="cli",
                now=clock.now(session),
            )
    except DomainError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(2) from None
    console.print(
        f"created {user.role} user {user.username}" + (f" of subject {user.subject_id}" if user.subject_id else "")
    )
    print(user.id)


@jobs_app.command("run")
def jobs_run(
    name: Annotated[str, typer.Argument(help="expire-confirmations | expire-pending-changes | purge-idempotency-keys")],
) -> None:
    """Run a job once, now (service clock); recorded as the duty's last run."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao import clock, jobs
    from guanhao.db import session_scope
    from guanhao.worker import scheduler

    if name not in jobs.JOBS:
        console.print(f"[red]unknown job {name}; known: {', '.join(jobs.JOBS)}[/red]")
        raise typer.Exit(2)
    _startup_checks()
    _upgrade_schema()
    with console.status(f"running {name}…"), session_scope() as session:
        processed = jobs.run(session, name, get_policy(), clock.now(session), actor="cli")
        scheduler.note(session, name, "cli", now=clock.real_now(), processed=processed)
    console.print(f"{name}: processed {processed}")


@app.command("demo-data")
def demo_data(
    reset: Annotated[bool, typer.Option(help="load even if demo data is there already")] = False,
    host: Annotated[str | None, typer.Option(help="the address `serve` will listen on, for the links printed")] = None,
    port: Annotated[int | None, typer.Option(help="the port `serve` will listen on, for the links printed")] = None,
) -> None:
    """Load demo subjects, shops and accounts covering every state, and print credentials and example calls."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao import demo

    if host is not None or port is not None:
        _links_follow(host or "127.0.0.1", port or 8000)
    _startup_checks()
    _upgrade_schema()
    demo.load(console, reset=reset)


# ---------------------------------------------------------------- waves


def _summary(title: str, scanned: int, upgraded: int, skipped: int, reasons: dict) -> None:
    table = Table(title=title)
    table.add_column("")
    table.add_column("shops", justify="right")
    table.add_row("scanned (看过)", f"{scanned:,}")
    table.add_row("upgraded (已升级)", f"{upgraded:,}")
    table.add_row("skipped (跳过)", f"{skipped:,}")
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {reason}", f"{count:,}")
    console.print(table)


def _candidates(min_score: float) -> int:
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from sqlalchemy import exists, func, select

    from guanhao.db import session_scope
    from guanhao.subjects.models import Shop
    from guanhao.upgrades.models import OfficialAccount

    with session_scope() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(Shop)
                .where(Shop.experience_score >= min_score, ~exists().where(OfficialAccount.shop_id == Shop.id))
            )
            or 0
        )


def _work(wave_id: str, *, chunk: int, quiet: bool) -> None:
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao.db import session_scope
    from guanhao.upgrades import waves

    with session_scope() as session:
        wave = waves.get(session, wave_id)
        limit, min_score = wave.limit, wave.min_experience_score
    total = None if quiet else _candidates(min_score)  # a count over every shop: only for the progress bar
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[line]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    ) as progress:
        task = progress.add_task(f"wave {wave_id}", total=total, line="")

        def report(w) -> None:
            progress.update(task, completed=w.scanned, line=f"upgraded {w.upgraded:,}/{limit:,}  skipped {w.skipped:,}")

        mine = waves.Outcome()
        wave = waves.work(wave_id, get_policy(), chunk=chunk, progress=None if quiet else report, tally=mine)
    _summary(f"wave {wave.id}: {wave.status}", wave.scanned, wave.upgraded, wave.skipped, wave.skip_reasons)
    console.print(f"this worker: scanned {mine.scanned:,}, upgraded {mine.upgraded:,}, skipped {mine.skipped:,}")
    if wave.status == "failed":
        raise typer.Exit(1)


@waves_app.command("run")
def waves_run(
    limit: Annotated[int, typer.Option(min=0, help="the most upgrades this wave makes")],
    min_score: Annotated[
        float | None, typer.Option(min=0, max=5, help="minimum experience score (default: policy)")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="report what the wave would do; write nothing")] = False,
    chunk: Annotated[int, typer.Option(min=1, help="shops per transaction")] = 1000,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Start an auto-upgrade wave and work it to the end (SPEC R-11)."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao import clock
    from guanhao.db import session_scope
    from guanhao.upgrades import waves

    _startup_checks()
    _upgrade_schema()
    policy = get_policy()
    if dry_run:
        with Progress(console=console, disable=quiet) as progress:
            task = progress.add_task("dry run", total=None)
            outcome = waves.simulate(
                policy,
                limit=limit,
                min_score=min_score,
                chunk=chunk,
                progress=lambda o: progress.update(task, completed=o.scanned),
            )
        _summary("dry run (nothing written)", outcome.scanned, outcome.upgraded, outcome.skipped, dict(outcome.reasons))
        return
    with session_scope() as session:
        wave = waves.start(
            session, limit=limit, min_score=min_score, policy=policy, actor="cli", now=clock.now(session)
        )
        wave_id = wave.id
    console.print(f"wave {wave_id} started (resume it with: guanhao waves resume {wave_id})")
    print(wave_id, flush=True)
    _work(wave_id, chunk=chunk, quiet=quiet)


@waves_app.command("resume")
def waves_resume(
    wave_id: Annotated[str, typer.Argument(help="the wave to resume, or to join as one more worker")],
    chunk: Annotated[int, typer.Option(min=1, help="shops per transaction")] = 1000,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Resume a wave after a crash, or join a running one as another worker (they never take the same shop)."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao import clock
    from guanhao.db import session_scope
    from guanhao.upgrades import waves

    _startup_checks()
    _upgrade_schema()
    try:
        with session_scope() as session:
            waves.reopen(session, wave_id, now=clock.now(session))
    except NotFound:
        console.print(f"[red]no wave {wave_id}[/red]")
        raise typer.Exit(2) from None
    _work(wave_id, chunk=chunk, quiet=quiet)


@waves_app.command("show")
def waves_show(wave_id: Annotated[str, typer.Argument()]) -> None:
    """A wave's figures."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao.db import session_scope
    from guanhao.upgrades import waves

    _startup_checks()
    try:
        with session_scope() as session:
            w = waves.get(session, wave_id)
            _summary(
                f"wave {w.id}: {w.status} (limit {w.limit:,}, min score {w.min_experience_score})",
                w.scanned,
                w.upgraded,
                w.skipped,
                w.skip_reasons,
            )
    except NotFound:
        console.print(f"[red]no wave {wave_id}[/red]")
        raise typer.Exit(2) from None


# ---------------------------------------------------------------- events, audit


@events_app.command("deliver")
def events_deliver(
    once: Annotated[bool, typer.Option(help="one round, then exit")] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="seconds between rounds when idle")] = 1.0,
) -> None:
    """Deliver the outbox to the registered webhook endpoints (signed, retried, in order per shop)."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao import logs
    from guanhao.webhooks import targets, worker

    _startup_checks()
    _upgrade_schema()
    logs.configure(get_settings().log_level)
    policy = get_policy()
    if once:
        with targets.client(sandbox=get_settings().sandbox) as client:
            tally = worker.run_once(policy, client)
        console.print(
            f"queued {tally.queued}, delivered {tally.delivered}, retrying {tally.retrying}, dead {tally.dead}"
        )
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    console.print("delivering webhooks; Ctrl-C to stop")
    tally = worker.run(policy, stop, interval=interval)
    console.print(f"delivered {tally.delivered}, dead {tally.dead}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk every subject's hash chain; report the first broken link."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao.audit import service as audit
    from guanhao.db import session_scope

    _startup_checks()
    _upgrade_schema()
    with console.status("verifying the audit trail…") as status, session_scope() as session:
        result = audit.verify(session, progress=lambda n: status.update(f"verified {n:,} rows…"))
    b = result.first_break
    if b is None:
        console.print(f"[green]audit trail intact[/green]: {result.rows:,} rows in {result.chains:,} chains")
        return
    console.print(f"[red]audit trail broken[/red] at seq {b.seq} (chain {b.chain}): {b.problem}")
    print(f"BROKEN seq={b.seq} chain={b.chain}")
    raise typer.Exit(1)


REPORT_AFTER = 20


@app.command("import")
def import_file(
    file: Annotated[
        Path,
        typer.Argument(
            help="NDJSON file: one subject, account, shop or binding a line (as POST /api/v1/import)",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    batch: Annotated[
        int | None, typer.Option(min=1, help="lines a transaction (default: GUANHAO_IMPORT_BATCH_LINES)")
    ] = None,
    restart: Annotated[
        bool, typer.Option(help="import the file from its first line again, even if it was imported before")
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            help=f"where the refused lines go when there are more than {REPORT_AFTER} (default FILE.rejected.tsv)"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON on stdout")] = False,
) -> None:
    """Import an NDJSON file of the platform's objects, with the same rules as the API, a batch a transaction.
    Resumable: run it again after a crash and it goes on after the last committed line."""
    # deferred: the domain loads only for the command that runs (see the module docstring)
    from guanhao.db import session_scope
    from guanhao.subjects import files

    _startup_checks()
    _upgrade_schema()
    settings = get_settings()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[speed]} lines/s  rejected {task.fields[rejected]:,}"),
        TimeRemainingColumn(),
    )
    started = time.perf_counter()
    with Progress(*columns, console=console, disable=quiet) as bar:
        task = bar.add_task(f"importing {file.name}", total=None, speed="-", rejected=0)
        first: list[int] = []

        def shown(p: files.Progress) -> None:
            if not first:
                first.append(p.resumed_from)
            done = p.lines_done - first[0]
            speed = f"{done / max(time.perf_counter() - started, 1e-9):,.0f}"
            bar.update(task, total=p.total_lines, completed=p.lines_done, speed=speed, rejected=p.rejected)

        progress = files.import_file(
            file,
            actor="cli",
            batch_lines=batch or settings.import_batch_lines,
            max_line=settings.max_body_bytes,
            restart=restart,
            on_batch=shown,
        )
    took = time.perf_counter() - started
    if as_json:
        with session_scope(write=False) as session:
            listed = [
                {"line": r.line, "code": r.code, "detail": r.detail}
                for r in files.rejections(session, progress.file_hash)
            ]
        summary = {
            "file_hash": progress.file_hash,
            "lines": progress.total_lines,
            "resumed_from": progress.resumed_from,
            "already_done": progress.already_done,
            "accepted": progress.accepted,
            "by_kind": progress.by_kind,
            "rejected": listed,
        }
        print(json.dumps(summary, ensure_ascii=False))
        return
    if progress.already_done:
        console.print(f"{file} was imported before (sha256 {progress.file_hash[:12]}…); --restart to import it again")
    elif progress.resumed_from:
        console.print(f"resumed after line {progress.resumed_from:,} (committed by an earlier run)")
    done = progress.lines_done - progress.resumed_from
    if not progress.already_done:
        console.print(f"{done:,} lines in {took:.1f} s ({done / max(took, 1e-9):,.0f} lines/s)")
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(progress.by_kind.items())) or "nothing"
    console.print(f"[green]imported {progress.accepted:,}[/green]: {kinds}")
    console.print(f"[red]rejected {progress.rejected:,}[/red]" if progress.rejected else "rejected 0")
    with session_scope(write=False) as session:
        refused = files.rejections(session, progress.file_hash)
        if progress.rejected <= REPORT_AFTER:
            for r in refused:
                console.print(f"  line {r.line}: {r.code} {r.detail}")
            return
        target = report or file.with_name(file.name + ".rejected.tsv")
        with target.open("w", encoding="utf-8") as out:
            out.write("line\tcode\tdetail\n")
            for i, r in enumerate(refused):
                out.write(f"{r.line}\t{r.code}\t{r.detail}\n")
                if i < 5:
                    console.print(f"  line {r.line}: {r.code} {r.detail}")
    console.print(f"  … every refused line, with its number and code, is in {target}")


if __name__ == "__main__":
    app()
