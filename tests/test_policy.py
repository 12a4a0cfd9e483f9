"""The policy file: SPEC defaults, and a bad file stops the service naming the key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from guanhao.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy
from tests.conftest import ROOT, reset_caches

DEFAULT_TEXT = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")


def test_default_policy_matches_spec():
    p = load_policy()
    # every type but personal
    assert p.eligibility.shop_types == {
        "official_flagship",
        "flagship",
        "specialty",
        "franchise",
        "enterprise",
        "individual",
    }
    #
    assert p.eligibility.max_violations_90d == 0
    assert p.eligibility.allowed_shop_statuses == {"active"}
    assert p.eligibility.allowed_account_statuses == {"normal"}
    assert p.eligibility.require_real_name is True
    # R-30 table and follower bonus, R-31
    q = p.quotas
    assert (q.enterprise.main, q.enterprise.vertical, q.enterprise.dedicated) == (1, 2, 3)
    assert (q.individual_business.main, q.individual_business.vertical, q.individual_business.dedicated) == (1, 1, 1)
    assert (q.cross_border.main, q.cross_border.vertical, q.cross_border.dedicated) == (1, 0, 2)
    assert (q.personal.main, q.personal.vertical, q.personal.dedicated) == (1, 0, 0)
    assert (q.follower_bonus.threshold, q.follower_bonus.vertical, q.follower_bonus.dedicated) == (1_000_000, 1, 1)
    # 7 days = 168 h
    assert p.confirmation.ttl_hours == 168
    #
    assert p.review.staff_review_min_followers == 1_000_000
    #
    assert p.cancel.window_days == 30
    assert p.cancel.allow_manual is False
    #
    assert (p.posting.limit_before, p.posting.limit_after, p.posting.timezone) == (75, 100, "Asia/Shanghai")
    #
    assert p.operators.capacity == 5
    #
    assert p.auto_upgrade.min_experience_score == 4.6
    # API.md: keys kept ≥ 24 h
    assert p.idempotency.retention_hours >= 24
    # no deadline unless the platform sets one
    assert p.upgrade_deadline is None


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _replace(old: str, new: str) -> str:
    assert old in DEFAULT_TEXT, old
    return DEFAULT_TEXT.replace(old, new, 1)


BAD_POLICIES = {
    "wrong type": (_replace("capacity = 5", 'capacity = "five"'), "operators.capacity"),
    "float for int": (_replace("ttl_hours = 168", "ttl_hours = 168.5"), "confirmation.ttl_hours"),
    "unknown key": (_replace("capacity = 5", "capacity = 5\ncapacitty = 6"), "operators.capacitty"),
    "unknown section": (DEFAULT_TEXT + "\n[surprise]\nx = 1\n", "surprise"),
    "missing key": (_replace("limit_after = 100", ""), "posting.limit_after"),
    # personal is never eligible
    "personal shop type": (
        _replace('"enterprise", "individual"]', '"enterprise", "individual", "personal"]'),
        "eligibility.shop_types",
    ),
    # cross-border subjects have no vertical slot
    "cross-border vertical": (
        _replace("cross_border        = { main = 1, vertical = 0,", "cross_border        = { main = 1, vertical = 1,"),
        "quotas.cross_border.vertical",
    ),
    # exactly one main slot
    "two main slots": (
        _replace("enterprise          = { main = 1,", "enterprise          = { main = 2,"),
        "quotas.enterprise.main",
    ),
    "retention under 24h": (_replace("retention_hours = 24", "retention_hours = 1"), "idempotency.retention_hours"),
    "deadline without offset": (
        _replace("# upgrade_deadline = 2027-06-30T00:00:00+08:00", "upgrade_deadline = 2027-06-30T00:00:00"),
        "upgrade_deadline",
    ),
}


def test_the_default_file_round_trips(tmp_path):
    assert load_policy(_write(tmp_path, DEFAULT_TEXT)) == load_policy()


@pytest.mark.parametrize("case", list(BAD_POLICIES))
def test_a_bad_policy_file_names_the_key(tmp_path, case):
    text, key = BAD_POLICIES[case]
    with pytest.raises(PolicyError) as exc:
        load_policy(_write(tmp_path, text))
    assert key in str(exc.value)


def test_missing_and_unparsable_files_are_policy_errors(tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "nope.toml")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(_write(tmp_path, "[eligibility\n"))


def test_a_changed_policy_is_used(tmp_path):
    p = load_policy(_write(tmp_path, _replace("capacity = 5", "capacity = 7")))
    assert p.operators.capacity == 7


@pytest.mark.parametrize("case", ["cross-border vertical", "wrong type"])
def test_db_upgrade_with_a_bad_policy_exits_non_zero_naming_the_key(tmp_path, monkeypatch, case):
    from guanhao.cli import app

    text, key = BAD_POLICIES[case]
    monkeypatch.setenv("GUANHAO_POLICY", str(_write(tmp_path, text)))
    reset_caches()
    try:
        result = CliRunner().invoke(app, ["db", "upgrade"])
    finally:
        monkeypatch.delenv("GUANHAO_POLICY")
        reset_caches()
    assert result.exit_code != 0
    assert key in " ".join(result.output.split())


def test_serve_with_a_bad_policy_exits_non_zero_naming_the_key(tmp_path, database):
    text, key = BAD_POLICIES["personal shop type"]
    env = os.environ | {
        "GUANHAO_POLICY": str(_write(tmp_path, text)),
        "GUANHAO_DATABASE_URL": database,
        "COLUMNS": "300",
    }
    cli = Path(sys.executable).with_name("guanhao")
    proc = subprocess.run(
        [str(cli), "serve", "--port", "0"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr
