"""The database records a fingerprint of the keys that wrote it (guanhao.keyring, migration 0007); every command
refuses to start against a database written with other keys — a clear message, exit 2 — instead of failing later
with InvalidTag or silently missing keyed lookups. Development keys live at an absolute path, printed once."""

import base64
import datetime as dt
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from guanhao import keyring, settings
from guanhao.cli import app as cli
from guanhao.db import reset as reset_caches
from tests.conftest import TEST_HASH_KEY, TEST_PII_KEY

runner = CliRunner()
OTHER_PII = base64.b64encode(b"p" * 32).decode()
OTHER_HASH = base64.b64encode(b"q" * 32).decode()


def run(*args: str):
    reset_caches()
    result = runner.invoke(cli, list(args))
    reset_caches()
    return result


def recorded(database: str) -> str | None:
    engine = sa.create_engine(database)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT fingerprint FROM key_fingerprint")).scalar()
    engine.dispose()
    return found


def test_the_first_command_records_the_keys_fingerprint(database):
    assert recorded(database) is None
    assert run("db", "upgrade").exit_code == 0
    expected = keyring.fingerprint(base64.b64decode(TEST_PII_KEY), base64.b64decode(TEST_HASH_KEY))
    assert recorded(database) == expected
    assert TEST_PII_KEY not in expected and len(expected) == 64
    # the same keys again: fine, nothing changes
    assert run("audit", "verify").exit_code == 0
    assert recorded(database) == expected


COMMANDS = [
    ("db", "upgrade"),
    ("serve", "--port", "1"),
    ("jobs", "run", "expire-confirmations"),
    ("audit", "verify"),
    ("api-keys", "create", "--role", "admin"),
    ("waves", "show", "wave_none"),
    ("import", __file__),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_refuses_a_database_written_with_other_keys(database, monkeypatch, args):
    assert run("db", "upgrade").exit_code == 0
    before = recorded(database)
    monkeypatch.setenv("GUANHAO_PII_KEY", OTHER_PII)
    monkeypatch.setenv("GUANHAO_HASH_KEY", OTHER_HASH)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "written with other keys" in result.output
    assert "GUANHAO_PII_KEY" in result.output and OTHER_PII not in result.output
    assert recorded(database) == before


def test_the_worker_command_refuses_too(database, monkeypatch):
    assert run("db", "upgrade").exit_code == 0
    monkeypatch.setenv("GUANHAO_PII_KEY", OTHER_PII)
    monkeypatch.setenv("GUANHAO_HASH_KEY", OTHER_HASH)
    result = run("worker")
    assert result.exit_code == 2, result.output


def test_a_database_from_before_fingerprints_is_checked_against_its_sealed_data(api, database, monkeypatch):
    """Data written (with the test keys) before any fingerprint was kept: other keys cannot open it — refused;
    the keys that wrote it are recorded."""
    api.ready_shop()
    assert recorded(database) is None
    monkeypatch.setenv("GUANHAO_PII_KEY", OTHER_PII)
    monkeypatch.setenv("GUANHAO_HASH_KEY", OTHER_HASH)
    result = run("audit", "verify")
    assert result.exit_code == 2, result.output
    assert "does not open with these keys" in result.output
    assert recorded(database) is None
    # the right PII key with another hash key: the lookups would silently miss — refused as well
    monkeypatch.setenv("GUANHAO_PII_KEY", TEST_PII_KEY)
    result = run("audit", "verify")
    assert result.exit_code == 2, result.output
    assert "GUANHAO_HASH_KEY" in result.output
    monkeypatch.setenv("GUANHAO_HASH_KEY", TEST_HASH_KEY)
    assert run("audit", "verify").exit_code == 0
    assert recorded(database) is not None


def test_keyring_check_service_level(engine):
    now = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
    a, b = b"a" * 32, b"b" * 32
    assert keyring.check(engine, a, b, now=now) == keyring.fingerprint(a, b)
    assert keyring.check(engine, a, b, now=now) == keyring.fingerprint(a, b)
    with pytest.raises(keyring.KeysMismatch):
        keyring.check(engine, b, a, now=now)
    assert keyring.fingerprint(a, b) != keyring.fingerprint(b, a)


def test_development_keys_live_at_an_absolute_path_printed_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("GUANHAO_PII_KEY", "GUANHAO_HASH_KEY", "GUANHAO_QUIET_DEV_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GUANHAO_VAR_DIR", "relative-var")
    monkeypatch.setattr(settings, "_warned", False)
    first = settings.Settings().keys()
    second = settings.Settings().keys()
    assert first == second
    err = capsys.readouterr().err
    path = tmp_path / "relative-var" / "dev-keys.json"
    assert path.exists() and oct(path.stat().st_mode & 0o777) == "0o600"
    assert err.count("DEVELOPMENT keys") == 1
    assert str(path) in err and Path(str(path)).is_absolute()
    # from another directory, the same GUANHAO_VAR_DIR given absolutely finds the same pair
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.chdir(other)
    monkeypatch.setenv("GUANHAO_VAR_DIR", str(tmp_path / "relative-var"))
    assert settings.Settings().keys() == first
