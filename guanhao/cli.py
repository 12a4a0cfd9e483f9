"""The `guanhao` command: serve, db upgrade, demo-data, api-keys create, jobs run."""

from typing import Annotated

import typer
from rich.console import Console

from guanhao.settings import get_settings

app = typer.Typer(help="guanhao — shop official account upgrade service (店铺官方账号升级)", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
jobs_app = typer.Typer(help="Background jobs.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="api-keys")
app.add_typer(jobs_app, name="jobs")
console = Console(stderr=True)


def _startup_checks() -> None:
    from guanhao.policy import PolicyError, get_policy

    try:
        get_policy()
    except PolicyError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    get_settings().keys()


def _upgrade_schema() -> None:
    from guanhao import migrate
    from guanhao.db import get_engine

    migrate.upgrade(get_engine())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema up to date (Alembic)."""
    _startup_checks()
    _upgrade_schema()
    console.print(f"schema up to date on {get_engine_url()}")


def get_engine_url() -> str:
    from guanhao.db import get_engine

    return get_engine().url.render_as_string(hide_password=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
) -> None:
    """Serve the HTTP API; brings the database schema up to date first."""
    import uvicorn

    from guanhao import logs

    _startup_checks()
    _upgrade_schema()
    logs.configure(get_settings().log_level)
    console.print(f"guanhao on http://{host}:{port}  database {get_engine_url()}  sandbox={get_settings().sandbox}")
    uvicorn.run("guanhao.app:create_app", factory=True, host=host, port=port, workers=workers, access_log=False,
                log_level="warning")


@keys_app.command("create")
def api_keys_create(
    role: Annotated[str, typer.Option(help="merchant or admin")] = "merchant",
    subject: Annotated[str | None, typer.Option("--subject", help="subject_id a merchant key is bound to")] = None,
    label: Annotated[str | None, typer.Option(help="what the key is for")] = None,
) -> None:
    """Create an API key; the token is printed once and stored only as a hash."""
    from guanhao import clock
    from guanhao.auth import service as auth
    from guanhao.db import session_scope
    from guanhao.errors import DomainError
    from guanhao.subjects.models import Subject

    _startup_checks()
    _upgrade_schema()
    with session_scope() as session:
        if role == "merchant" and subject and session.get(Subject, subject) is None:
            console.print(f"[red]subject {subject} is not known[/red]")
            raise typer.Exit(2)
        try:
            key, token = auth.create_key(session, role=role, subject_id=subject, label=label, now=clock.now(session))
        except DomainError as exc:
            console.print(f"[red]{exc.detail}[/red]")
            raise typer.Exit(2) from None
    console.print(f"created {key.role} key {key.id}" + (f" for subject {key.subject_id}" if key.subject_id else ""))
    print(token)


@jobs_app.command("run")
def jobs_run(name: Annotated[str, typer.Argument(help="expire-confirmations | purge-idempotency-keys")]) -> None:
    """Run a job once, now (service clock)."""
    from guanhao import clock, jobs
    from guanhao.db import session_scope
    from guanhao.policy import get_policy

    if name not in jobs.JOBS:
        console.print(f"[red]unknown job {name}; known: {', '.join(jobs.JOBS)}[/red]")
        raise typer.Exit(2)
    _startup_checks()
    _upgrade_schema()
    with console.status(f"running {name}…"):
        with session_scope() as session:
            processed = jobs.run(session, name, get_policy(), clock.now(session))
    console.print(f"{name}: processed {processed}")


@app.command("demo-data")
def demo_data(
    reset: Annotated[bool, typer.Option(help="load even if demo data is there already")] = False,
) -> None:
    """Load demo subjects, shops and accounts covering every state, and print credentials and example calls."""
    from guanhao import demo

    _startup_checks()
    _upgrade_schema()
    demo.load(console, reset=reset)


if __name__ == "__main__":
    app()
