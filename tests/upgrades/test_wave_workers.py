"""R-11: waves started over the API are run by workers, not by the server that recorded them; any worker
finishes one; staff can cancel one and see each worker's share (issue 7, item 4)."""

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from guanhao.policy import get_policy
from guanhao.upgrades import waves
from guanhao.worker.runner import Worker
from tests.factories import Api
from tests.upgrades.test_waves import upgraded

API = "/api/v1"
T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


@pytest.fixture
def idle_api(database, monkeypatch, admin_headers):
    """The API with no worker anywhere: what it records stays as recorded until a worker comes."""
    from guanhao.app import create_app
    from guanhao.settings import get_settings

    monkeypatch.setenv("GUANHAO_WORKER", "0")
    get_settings.cache_clear()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        api = Api(client, admin_headers)
        api.set_clock(T0)
        yield api


def start(api: Api, limit: int = 100) -> str:
    r = api.client.post(f"{API}/admin/auto-upgrade-waves", json={"limit": limit}, headers=api.admin)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "running"
    return r.json()["wave_id"]


def show(api: Api, wave_id: str) -> dict:
    r = api.client.get(f"{API}/admin/auto-upgrade-waves/{wave_id}", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()


def test_r11_the_api_only_records_a_wave_and_a_worker_started_later_finishes_it(idle_api):
    api = idle_api
    shops = [api.ready_shop()[1] for _ in range(3)]
    wave_id = start(api)
    recorded = show(api, wave_id)
    assert (recorded["status"], recorded["scanned"], recorded["workers"]) == ("running", 0, [])

    # The server "restarted" long ago; a worker comes up and picks the wave up with nobody typing a command.
    assert Worker("w-late", duties=["waves"]).run_once() == {"waves": 3}
    wave = show(api, wave_id)
    assert (wave["status"], wave["scanned"], wave["upgraded"]) == ("done", 3, 3)
    assert all(upgraded(api, s) for s in shops)
    [share] = wave["workers"]
    assert {k: share[k] for k in ("worker_id", "chunks", "scanned", "upgraded", "skipped")} == {
        "worker_id": "w-late",
        "chunks": 1,
        "scanned": 3,
        "upgraded": 3,
        "skipped": 0,
    }
    assert share["last_heartbeat_at"] >= share["first_seen_at"]


def test_r11_each_worker_share_is_shown_and_the_shares_add_up_to_the_wave(idle_api):
    api = idle_api
    for _ in range(5):
        api.ready_shop()
    wave_id = start(api)
    # Worker a commits two chunks of one shop and stops (as if told to); worker b finishes the wave.
    chunks = iter(range(10))
    waves.work(wave_id, get_policy(), chunk=1, worker="a", stop=lambda: next(chunks) >= 2)
    assert show(api, wave_id)["status"] == "running"
    Worker("b", duties=["waves"]).run_once()
    wave = show(api, wave_id)
    assert wave["status"] == "done"
    shares = {w["worker_id"]: w for w in wave["workers"]}
    assert (shares["a"]["chunks"], shares["a"]["scanned"]) == (2, 2)
    assert shares["b"]["scanned"] == 3
    for figure in ("scanned", "upgraded", "skipped"):
        assert sum(w[figure] for w in wave["workers"]) == wave[figure]


def test_r11_staff_cancel_a_running_wave_audited_and_no_worker_goes_on_with_it(idle_api):
    api = idle_api
    shop_id = api.ready_shop()[1]
    wave_id = start(api)
    r = api.client.post(f"{API}/admin/auto-upgrade-waves/{wave_id}/cancel", headers=api.admin)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["scanned"]) == ("cancelled", 0)
    assert r.json()["finished_at"] is not None

    assert Worker("w", duties=["waves"]).run_once() == {"waves": 0}
    assert show(api, wave_id)["status"] == "cancelled"
    assert not upgraded(api, shop_id)
    trail = api.audit(wave_id)
    assert [(a["action"], a["from"], a["to"]) for a in trail] == [
        ("wave.started", None, None),
        ("wave.cancelled", "running", "cancelled"),
    ]
    assert trail[-1]["actor"] != f"wave:{wave_id}"  # the member of staff who cancelled it

    again = api.client.post(f"{API}/admin/auto-upgrade-waves/{wave_id}/cancel", headers=api.admin)
    assert again.status_code == 409 and again.json()["code"] == "WAVE_FINISHED"
    assert len(api.audit(wave_id)) == 2


def test_r11_a_finished_wave_cannot_be_cancelled_and_cancel_is_for_staff_only(idle_api):
    api = idle_api
    subject_id = api.ready_shop()[0]
    wave_id = start(api)
    Worker("w", duties=["waves"]).run_once()
    assert show(api, wave_id)["status"] == "done"
    r = api.client.post(f"{API}/admin/auto-upgrade-waves/{wave_id}/cancel", headers=api.admin)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "WAVE_FINISHED"
    assert show(api, wave_id)["status"] == "done"

    running = start(api)
    merchant = api.merchant(subject_id)
    assert api.client.post(f"{API}/admin/auto-upgrade-waves/{running}/cancel", headers=merchant).status_code == 403
    missing = api.client.post(f"{API}/admin/auto-upgrade-waves/wave_nope/cancel", headers=api.admin)
    assert missing.status_code == 404
    assert show(api, running)["status"] == "running"


def test_r11_a_failed_wave_can_be_cancelled(idle_api, monkeypatch):
    api = idle_api
    api.ready_shop()
    wave_id = start(api)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(waves, "_write", broken)
    Worker("w", duties=["waves"]).run_once()
    assert (show(api, wave_id)["status"], show(api, wave_id)["error"]) == ("failed", "RuntimeError")
    r = api.client.post(f"{API}/admin/auto-upgrade-waves/{wave_id}/cancel", headers=api.admin)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
