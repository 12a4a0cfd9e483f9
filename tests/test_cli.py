"""The `guanhao` command (issue: serve, db upgrade, demo-data, api-keys create, jobs run NAME).

Every command reads the database from GUANHAO_DATABASE_URL, which the `database` fixture points at
this test's database.
"""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from guanhao.cli import app as cli
from guanhao.db import reset as reset_caches
from tests.serving import guanhao_serve

runner = CliRunner()
GUANHAO = Path(sys.executable).with_name("guanhao")


def run(*args: str):
    reset_caches()
    result = runner.invoke(cli, list(args))
    reset_caches()
    return result


def test_db_upgrade_brings_the_schema_to_head(database):
    result = run("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "schema up to date" in result.output
    with sa.create_engine(database).connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def test_db_upgrade_creates_a_fresh_sqlite_database(tmp_path, monkeypatch):
    target = tmp_path / "fresh" / "guanhao.sqlite3"
    monkeypatch.setenv("GUANHAO_DATABASE_URL", f"sqlite:///{target}")
    result = run("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert target.exists()


def test_api_keys_create_prints_a_token_that_works(api, client):
    subject_id, shop_id, _ = api.ready_shop()
    result = run("api-keys", "create", "--role", "merchant", "--subject", subject_id)
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("gh_mch_")

    merchant = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/v1/shops/{shop_id}/eligibility", headers=merchant).status_code == 200
    # bound to its subject, and not staff.
    assert client.get("/api/v1/admin/review-queue", headers=merchant).status_code == 403


def test_api_keys_create_admin_key(client):
    result = run("api-keys", "create", "--role", "admin", "--label", "ops")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    r = client.get("/api/v1/admin/review-queue", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "args",
    [
        ["--role", "merchant", "--subject", "no-such-subject"],
        ["--role", "merchant"],
        ["--role", "emperor"],
    ],
)
def test_api_keys_create_refuses_bad_input(args):
    result = run("api-keys", "create", *args)
    assert result.exit_code != 0
    assert not result.stdout.strip()


def test_jobs_run_expire_confirmations_expires_overdue_applications(api):
    """SPEC R-15: an application whose holder did not answer within the TTL expires."""
    from guanhao import clock
    from guanhao.db import session_scope
    from guanhao.policy import get_policy
    from guanhao.upgrades import service as upgrades

    _, overdue_shop, _ = api.ready_shop()
    _, fresh_shop, _ = api.ready_shop()
    with session_scope() as session:
        now = clock.now(session)
        overdue = upgrades.submit(
            session,
            overdue_shop,
            get_policy(),
            account_type=None,
            operator=None,
            agree_terms=True,
            actor="test",
            now=now - dt.timedelta(days=8),
            public_url="http://testserver",
        )
        fresh = upgrades.submit(
            session,
            fresh_shop,
            get_policy(),
            account_type=None,
            operator=None,
            agree_terms=True,
            actor="test",
            now=now - dt.timedelta(hours=1),
            public_url="http://testserver",
        )

    result = run("jobs", "run", "expire-confirmations")
    assert result.exit_code == 0, result.output
    assert "processed 1" in result.output

    assert api.application(overdue.id)["status"] == "expired"
    assert api.application(fresh.id)["status"] == "submitted"
    assert "upgrade.expired" in [e["type"] for e in api.events(shop_id=overdue_shop)]

    again = run("jobs", "run", "expire-confirmations")
    assert again.exit_code == 0 and "processed 0" in again.output


def test_jobs_run_unknown_job_exits_non_zero():
    result = run("jobs", "run", "make-coffee")
    assert result.exit_code != 0
    assert "unknown job" in result.output


def test_demo_data_loads_every_state_once(client, admin_headers):
    result = run("demo-data")
    assert result.exit_code == 0, result.output
    assert "admin token:" in result.output and "merchant token:" in result.output

    statuses = {}
    for shop_id in (
        "shop-1001",
        "shop-1002",
        "shop-1003",
        "shop-1004",
        "shop-2001",
        "shop-2002",
        "shop-3001",
        "shop-4001",
        "shop-4002",
    ):
        items = client.get(f"/api/v1/shops/{shop_id}/upgrade-applications", headers=admin_headers).json()["items"]
        statuses[shop_id] = items[0]["status"] if items else None
    assert set(statuses.values()) >= {None, "submitted", "succeeded", "reviewing", "rejected", "expired", "withdrawn"}
    assert client.get("/api/v1/shops/shop-4001/eligibility", headers=admin_headers).json()["eligible"] is False
    assert client.get("/api/v1/shops/shop-1001/eligibility", headers=admin_headers).json()["eligible"] is True

    # The printed merchant token works.
    merchant_token = next(
        line.split(":", 1)[1].split()[0] for line in result.output.splitlines() if "merchant token:" in line
    )
    r = client.get("/api/v1/shops/shop-1001/official-account", headers={"Authorization": f"Bearer {merchant_token}"})
    assert r.status_code == 200

    # The console logins are printed and work (issue 10: make run prints the console address and the logins).
    assert "Merchant console" in result.output and "yunqi / yunqi-demo-1" in result.output
    logins = client.get("/api/v1/admin/users", headers=admin_headers).json()["items"]
    assert {(u["username"], u["role"], u["subject_id"]) for u in logins} == {
        ("yunqi", "merchant", "subj-hz-tea"),
        ("laojie", "merchant", "subj-laojie"),
        ("shenjia", "merchant", "subj-sz-home"),
        ("ops", "staff", None),
    }

    second = run("demo-data")
    assert second.exit_code == 0, second.output
    assert "yunqi / yunqi-demo-1" in second.output
    assert "loaded already" in second.output
    items = client.get("/api/v1/shops/shop-1002/upgrade-applications", headers=admin_headers).json()["items"]
    assert len(items) == 1


def test_serve_really_serves(tmp_path):
    env = os.environ | {
        "GUANHAO_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "GUANHAO_VAR_DIR": str(tmp_path / "var"),
    }
    with guanhao_serve(env, tmp_path / "serve.log", ready="/api/v1/health", timeout=120) as (base, _proc):
        r = httpx.get(f"{base}/api/v1/health", timeout=5)
        assert r.status_code == 200
        assert r.json()["status"] == "ok"
        # The schema was brought up to date first: an authenticated read works.
        token = os.environ["GUANHAO_ADMIN_TOKEN"]
        r = httpx.get(f"{base}/api/v1/admin/review-queue", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert r.status_code == 200, r.text


# ---------------------------------------------------------------- links follow the port (issue 8 item 14)


def test_links_default_to_the_address_serve_listens_on():
    from guanhao.settings import public_url_for

    assert public_url_for("127.0.0.1", 8177) == "http://127.0.0.1:8177"
    assert public_url_for("0.0.0.0", 8177) == "http://127.0.0.1:8177"
    assert public_url_for("::", 8177) == "http://[::1]:8177"
    assert public_url_for("guanhao.local", 80) == "http://guanhao.local:80"


def test_demo_data_prints_links_on_the_port_serve_will_use(database, monkeypatch):
    monkeypatch.delenv("GUANHAO_PUBLIC_URL")
    result = run("demo-data", "--host", "127.0.0.1", "--port", "8177")
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8177/api/v1" in result.output
    assert ":8000" not in result.output


def test_an_explicit_public_url_wins_over_the_port(database, monkeypatch):
    monkeypatch.setenv("GUANHAO_PUBLIC_URL", "https://guanhao.example.com")
    result = run("demo-data", "--port", "8177")
    assert result.exit_code == 0, result.output
    assert "https://guanhao.example.com/api/v1" in result.output
    assert ":8177" not in result.output


def test_make_run_hands_the_port_to_demo_data_and_serve():
    out = subprocess.run(
        ["make", "-n", "run", "PORT=8177"], cwd=GUANHAO.parents[2], capture_output=True, text=True, check=True
    ).stdout
    assert "guanhao demo-data --host 127.0.0.1 --port 8177" in out
    assert "guanhao serve --host 127.0.0.1 --port 8177" in out


def test_serve_hands_out_links_on_its_port(tmp_path):
    from tests.factories import person, phone

    env = {k: v for k, v in os.environ.items() if k != "GUANHAO_PUBLIC_URL"} | {
        "GUANHAO_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "GUANHAO_VAR_DIR": str(tmp_path / "var"),
    }
    admin = {"Authorization": f"Bearer {os.environ['GUANHAO_ADMIN_TOKEN']}"}
    with (
        guanhao_serve(env, tmp_path / "serve.log", ready="/api/v1/health", timeout=120) as (base, _proc),
        httpx.Client(base_url=f"{base}/api/v1", headers=admin, timeout=10) as c,
    ):
        assert c.put("/subjects/s-1", json={"name": "杭州科技", "subject_type": "enterprise"}).status_code == 201
        shop = {"subject_id": "s-1", "name": "店", "shop_type": "flagship", "status": "active"}
        assert c.put("/shops/p-1", json=shop | {"experience_score": 4.8}).status_code == 201
        holder = person()
        account = {"nickname": "号", "followers": 1, "status": "normal", "real_name_verified": True}
        r = c.put("/accounts/a-1", json=account | {"login_phone": phone(), "holder": holder})
        assert r.status_code == 201, r.text
        assert c.put("/shops/p-1/official-account", json={"account_id": "a-1"}).status_code == 200
        r = c.post("/shops/p-1/upgrade-applications", json={"agree_terms": True})
        assert r.status_code == 201, r.text
        url = c.get(f"/admin/upgrade-applications/{r.json()['application_id']}").json()["confirmation_url"]
        assert url.startswith(f"{base}/confirm/"), url  # the holder's page (issue 10)
        [sms] = c.get("/sandbox/sms", params={"phone": holder["phone"]}).json()["items"]
        assert url in sms["text"]
