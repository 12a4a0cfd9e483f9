"""The soak (issue 8): everything at once on PostgreSQL, then every invariant in SQL.

A real `guanhao serve --workers 4` and two background workers; at least 50 clients fire conflicting
requests — submits, holders' accepts and declines, withdraws, cancels, operator changes and phone
rebinds with their SMS codes, posts, waves, syncs that lower quotas and change followers, bindings — at a
few subjects, shops, accounts and operators, while the service clock moves and once jumps past the
holders' deadline. Afterwards: no 5xx, every refusal problem+json with a known code, and none of the
invariants broken (see `soak_checks.invariants`). Small by default; `--soak-large` or GUANHAO_SOAK=large runs
10,000 requests.
"""

import os

import httpx
import pytest

from tests.concurrency import soak, soak_checks, soak_processes
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.postgres

SMALL = {"clients": 50, "requests": 1_500}
LARGE = {"clients": 64, "requests": 10_000}


@pytest.fixture
def size(request) -> dict:
    large = request.config.getoption("--soak-large") or os.environ.get("GUANHAO_SOAK") == "large"
    return LARGE if large else SMALL


def test_soak_everything_at_once_breaks_no_invariant(database, sql, tmp_path, size, capsys):
    env = soak_processes.process_env(database, tmp_path / "var")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with (
        soak_processes.serving(env, tmp_path / "serve.log", workers=4) as base,
        soak_processes.Sink() as sink,
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        world = soak.build_world(client, admin)
        r = client.post(f"{soak.API}/admin/webhook-endpoints", json={"url": sink.url}, headers=admin)
        assert r.status_code == 201, r.text
        r = client.post(f"{soak.API}/sandbox/clock", json={"now": soak.START.isoformat()}, headers=admin)
        assert r.status_code == 200, r.text
        with soak_processes.background_workers(env, tmp_path, count=2), soak_processes.LockWatch(sql) as locks:
            run = soak.Soak(base, admin, world, **size)
            elapsed = run.run()
            soak_checks.settle(client, admin, sql, run.tally, timeout=120)
        violations = run.tally.violations + soak_checks.invariants(sql, world, run.tally, sink)

    with capsys.disabled():
        print("\n" + soak_checks.report(run.tally, elapsed, run.sent, size["clients"]))
        for line in locks.report():
            print(line)
        print(f"violations: {len(violations)}")
        for v in violations[:30]:
            print("  " + v)
    assert not violations
    assert run.sent >= size["requests"]
