"""A revoked key is 401 at once in every worker process (issue 9): `guanhao serve --workers 2`, both workers
have answered the key (the one-statement official-account read, and routes whose processes remember the key),
staff revoke it through one of them, and every later request of that key is refused, whichever worker answers."""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.serving import guanhao_serve

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def two_workers(database, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {
        "GUANHAO_DATABASE_URL": database,
        "GUANHAO_VAR_DIR": str(tmp_path / "var"),
        "GUANHAO_LOG_LEVEL": "INFO",
        "GUANHAO_DB_POOL_SIZE": "2",
    }
    log_path = tmp_path / "serve.log"
    with guanhao_serve(env, log_path, args=("--workers", "2")) as (base, _proc):
        yield base, log_path


def _pids(log_path, request_ids: set[str]) -> set[int]:
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
        found = {
            r["request_id"]: r["pid"]
            for r in lines
            if r.get("event") == "request" and r.get("request_id") in request_ids
        }
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            return set(found.values())
        time.sleep(0.1)


def test_r62_a_revoked_key_is_refused_by_every_worker_at_once(two_workers):
    base, log_path = two_workers
    paths = ("/api/v1/shops/rv-shop/official-account", "/api/v1/subjects/rv-subj/quotas")
    with httpx.Client(base_url=base, timeout=30) as admin:
        r = admin.put("/api/v1/subjects/rv-subj", json={"name": "主体", "subject_type": "enterprise"}, headers=ADMIN)
        assert r.status_code in (200, 201), r.text
        body = {
            "subject_id": "rv-subj",
            "name": "店",
            "shop_type": "flagship",
            "status": "active",
            "experience_score": 4.8,
        }
        assert admin.put("/api/v1/shops/rv-shop", json=body, headers=ADMIN).status_code in (200, 201)
        r = admin.post("/api/v1/admin/api-keys", json={"role": "merchant", "subject_id": "rv-subj"}, headers=ADMIN)
        key_id, token = r.json()["key_id"], r.json()["token"]

    def hit(path: str, n: int) -> str:
        rid = f"rv-{n:04d}-{path.rsplit('/', 1)[1]}"
        # A fresh connection each time, so that both workers get requests.
        r = httpx.get(base + path, headers={"Authorization": f"Bearer {token}", "X-Request-ID": rid}, timeout=30)
        return f"{r.status_code} {rid}"

    def until_both_workers(first: int, status: str) -> None:
        """Batches of concurrent requests (which worker accepts a connection is the kernel's choice) until
        both workers have answered; every answer must have `status`."""
        answered: list[str] = []
        for batch in range(20):
            with ThreadPoolExecutor(8) as pool:
                numbers = range(first + batch * 16, first + batch * 16 + 16)
                answered += pool.map(lambda n: hit(paths[n % 2], n), numbers)
            assert all(a.startswith(status + " ") for a in answered), answered
            if len(_pids(log_path, {a.split()[1] for a in answered})) == 2:
                return
        raise AssertionError("one worker answered every request")

    until_both_workers(0, "200")
    with httpx.Client(base_url=base, timeout=30) as admin:
        assert admin.post(f"/api/v1/admin/api-keys/{key_id}/revoke", headers=ADMIN).status_code == 200
    until_both_workers(1000, "401")
