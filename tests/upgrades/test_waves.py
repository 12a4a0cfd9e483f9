"""Auto-upgrade waves (系统自动升级, SPEC R-11): who a wave upgrades and skips, with counted reasons, what an
auto upgrade looks like afterwards, the limit, quota fall-back inside a wave, the score threshold, and the
`guanhao waves` command (run, --dry-run, show)."""

import datetime as dt
import re
import time

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from guanhao.cli import app as cli
from tests import factories
from tests.conftest import reset_caches
from tests.factories import Api

T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
runner = CliRunner()


def cli_run(*args: str):
    reset_caches()
    result = runner.invoke(cli, list(args))
    reset_caches()
    return result


def latest_application(api: Api, shop_id: str) -> dict:
    r = api.client.get(f"/api/v1/shops/{shop_id}/upgrade-applications", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()["items"][0]


def applications(api: Api, shop_id: str) -> list[dict]:
    r = api.client.get(f"/api/v1/shops/{shop_id}/upgrade-applications", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def quotas(api: Api, subject_id: str) -> dict:
    r = api.client.get(f"/api/v1/subjects/{subject_id}/quotas", headers=api.admin)
    assert r.status_code == 200, r.text
    return {t: (v["total"], v["used"]) for t, v in r.json().items()}


def upgraded(api: Api, shop_id: str) -> bool:
    return api.official_account(shop_id)["upgrade_status"] == "upgraded"


def when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def row_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return {n: conn.execute(sa.text(f'SELECT count(*) FROM "{n}"')).scalar() for n in names}
    finally:
        engine.dispose()


def figure(output: str, label: str) -> int:
    match = re.search(rf"{re.escape(label)}\D*([\d,]+)", output)
    assert match, f"{label!r} not in:\n{output}"
    return int(match.group(1).replace(",", ""))


@pytest.fixture
def mix(api: Api) -> dict:
    """One shop of each kind a wave meets; the shop whose earlier auto upgrade was cancelled is made first."""
    api.set_clock(T0 - dt.timedelta(days=3))
    subject_opted, opted, _ = api.ready_shop()
    assert api.wave(10)["upgraded"] == 1
    r = api.client.post(f"/api/v1/shops/{opted}/official-account/cancel-upgrade", headers=api.merchant(subject_opted))
    assert r.status_code == 200, r.text

    api.set_clock(T0)
    shops = {"opted_out": opted}
    for name in ("eligible_1", "eligible_2"):
        shops[name] = api.ready_shop()[1]
    shops["personal"] = api.ready_shop(shop_fields={"shop_type": "personal"})[1]
    shops["suspended"] = api.ready_shop(shop_fields={"status": "suspended"})[1]
    shops["unverified"] = api.ready_shop(account_fields={"real_name_verified": False})[1]
    shops["violations"] = api.ready_shop(account_fields={"violations_90d": 2})[1]
    shops["big"] = api.ready_shop(account_fields={"followers": 1_000_000})[1]
    shops["unbound"] = api.shop(api.subject())
    shops["licence_expired"] = api.ready_shop(api.subject(license_valid_until="2026-03-09"))[1]
    shops["in_progress"] = api.ready_shop()[1]
    r = api.submit(shops["in_progress"])
    assert r.status_code == 201, r.text
    shops["low_score"] = api.ready_shop(shop_fields={"experience_score": 4.5})[1]
    shops["manual"] = api.ready_shop()[1]
    assert api.upgrade(shops["manual"])["status"] == "succeeded"
    return shops


MIX_REASONS = {
    "SHOP_TYPE_NOT_ELIGIBLE": 1,
    "SHOP_NOT_ACTIVE": 1,
    "ACCOUNT_NOT_VERIFIED": 1,
    "ACCOUNT_HAS_VIOLATIONS": 1,
    "NEEDS_STAFF_REVIEW": 1,
    "ACCOUNT_NOT_BOUND": 1,
    "LICENSE_EXPIRED": 1,
    "AUTO_UPGRADE_CANCELLED": 1,
    "APPLICATION_IN_PROGRESS": 1,
}


def test_a_wave_upgrades_the_eligible_shops_and_counts_every_skip_by_reason(api, mix):
    """R-11, R-01, R-03, R-16: every R-03 check, staff-review accounts and opted-out shops skipped with a reason;
    shops below the score and shops already upgraded are not even looked at."""
    wave = api.wave(100)

    assert wave["status"] == "done"
    assert (wave["scanned"], wave["upgraded"], wave["skipped"]) == (11, 2, 9)
    assert wave["skip_reasons"] == MIX_REASONS
    assert wave["min_experience_score"] == 4.6 and wave["limit"] == 100 and wave["finished_at"] is not None
    for name, shop_id in mix.items():
        expected = name.startswith("eligible") or name == "manual"
        assert upgraded(api, shop_id) is expected, name
    # Skipped shops are left exactly as they were.
    assert latest_application(api, mix["in_progress"])["status"] == "submitted"
    assert [a["status"] for a in applications(api, mix["opted_out"])] == ["cancelled"]
    for name in ("personal", "suspended", "unverified", "violations", "big", "unbound", "licence_expired", "low_score"):
        assert applications(api, mix[name]) == [], name


def test_an_auto_upgrade_is_succeeded_at_once_with_no_holder_step(api, mix):
    """R-11, R-17, R-12, R-23, R-40: origin auto, succeeded, holder confirmation and review skipped; the view
    offers cancel until upgraded_at + 30 days and the posting limit is 100; the holder is the operator."""
    api.wave(100)
    for name in ("eligible_1", "eligible_2"):
        shop_id = mix[name]
        app = latest_application(api, shop_id)
        assert (app["origin"], app["status"], app["attempt"], app["account_type"]) == ("auto", "succeeded", 1, "main")
        states = {s["step"]: s["state"] for s in app["steps"]}
        assert states == {"submitted": "done", "holder_confirmation": "skipped", "review": "skipped", "result": "done"}

        view = api.official_account(shop_id)
        assert view["upgrade_status"] == "upgraded" and view["ownership"] == "enterprise"
        assert view["origin"] == "auto" and view["account_type"] == "main"
        assert view["can_cancel"] is True
        assert when(view["upgraded_at"]) == T0
        assert when(view["cancel_deadline"]) == when(view["upgraded_at"]) + dt.timedelta(days=30)
        assert view["daily_post_limit"] == 100
        assert view["operator"] is not None and view["active_application_id"] is None

        account_id = view["account"]["account_id"]
        r = api.client.get(f"/api/v1/accounts/{account_id}/posting-quota", headers=api.admin)
        assert r.json()["limit"] == 100
        r = api.client.get(f"/api/v1/shops/{shop_id}/official-account/ownership-record", headers=api.admin)
        assert r.status_code == 200, r.text


def test_each_auto_upgrade_writes_one_audit_row_and_one_event(api, mix):
    """R-20, R-60, R-61: exactly one audit row and one upgrade.succeeded event per upgraded shop, none for skips."""
    before = {e["event_id"] for e in api.events()}
    wave = api.wave(100)
    new = [e for e in api.events() if e["event_id"] not in before]

    succeeded = [e for e in new if e["type"] == "upgrade.succeeded"]
    assert sorted(e["shop_id"] for e in succeeded) == sorted([mix["eligible_1"], mix["eligible_2"]])
    assert len(new) == 2  # nothing for the skipped shops
    for e in succeeded:
        app = latest_application(api, e["shop_id"])
        assert e["data"]["application_id"] == app["application_id"]
        assert e["data"]["origin"] == "auto" and e["data"]["wave_id"] == wave["wave_id"]
        trail = api.audit(app["application_id"])
        assert [(a["action"], a["from"], a["to"]) for a in trail] == [("upgrade.succeeded", None, "succeeded")]
        assert trail[0]["actor"] == f"wave:{wave['wave_id']}"


def test_the_limit_caps_the_upgrades_and_a_later_wave_leaves_upgraded_shops_alone(api):
    """R-11: `limit` caps the upgrades made; the next wave takes the rest and never touches an upgraded shop."""
    api.set_clock(T0)
    shops = [api.ready_shop()[1] for _ in range(5)]

    first = api.wave(3)
    assert (first["status"], first["upgraded"], first["skipped"]) == ("done", 3, 0)
    done_first = [s for s in shops if upgraded(api, s)]
    assert len(done_first) == 3
    events_before = len(api.events())

    api.set_clock(T0 + dt.timedelta(days=1))
    second = api.wave(10)
    assert (second["scanned"], second["upgraded"], second["skipped"]) == (2, 2, 0)
    assert all(upgraded(api, s) for s in shops)
    for shop_id in done_first:
        apps = applications(api, shop_id)
        assert len(apps) == 1 and apps[0]["created_at"] == latest_application(api, shop_id)["created_at"]
        assert when(api.official_account(shop_id)["upgraded_at"]) == T0
    assert len(api.events()) == events_before + 2

    third = api.wave(10)
    assert (third["status"], third["scanned"], third["upgraded"], third["skipped"]) == ("done", 0, 0, 0)


def test_a_limit_of_zero_upgrades_nothing(api):
    """R-11."""
    shop_id = api.ready_shop()[1]
    wave = api.wave(0)
    assert (wave["status"], wave["upgraded"]) == ("done", 0)
    assert not upgraded(api, shop_id)


def test_a_wave_falls_back_main_vertical_dedicated_for_shops_of_one_subject_and_never_overbooks(api):
    """R-30, R-32, R-33: within one wave the shops of a subject get main, then vertical, then dedicated;
    once the subject's slots are gone the rest are skipped with QUOTA_EXHAUSTED."""
    api.set_clock(T0)
    subject_id = api.subject(subject_type="individual_business")  # 1 / 1 / 1
    shops = [api.ready_shop(subject_id)[1] for _ in range(4)]

    wave = api.wave(10)
    assert (wave["scanned"], wave["upgraded"], wave["skipped"]) == (4, 3, 1)
    assert wave["skip_reasons"] == {"QUOTA_EXHAUSTED": 1}
    types = [api.official_account(s)["account_type"] for s in sorted(shops)]
    assert types == ["main", "vertical", "dedicated", None]
    assert quotas(api, subject_id) == {"main": (1, 1), "vertical": (1, 1), "dedicated": (1, 1)}


def test_a_cross_border_subject_falls_back_from_main_to_dedicated(api):
    """R-30, R-31, R-32: cross-border subjects have no vertical slot (1 / 0 / 2)."""
    api.set_clock(T0)
    subject_id = api.subject(cross_border=True)
    shops = [api.ready_shop(subject_id)[1] for _ in range(4)]

    wave = api.wave(10)
    assert (wave["upgraded"], wave["skip_reasons"]) == (3, {"QUOTA_EXHAUSTED": 1})
    assert [api.official_account(s)["account_type"] for s in sorted(shops)] == ["main", "dedicated", "dedicated", None]
    assert quotas(api, subject_id) == {"main": (1, 1), "vertical": (0, 0), "dedicated": (2, 2)}


def test_fall_back_counts_slots_reserved_before_the_wave(api):
    """R-32, R-33: a slot held by an application in progress is taken; the wave starts from the next type."""
    api.set_clock(T0)
    subject_id = api.subject(subject_type="individual_business")
    pending = api.ready_shop(subject_id)[1]
    assert api.submit(pending).status_code == 201  # holds main
    shops = [api.ready_shop(subject_id)[1] for _ in range(3)]

    wave = api.wave(10)
    assert wave["upgraded"] == 2
    assert wave["skip_reasons"] == {"APPLICATION_IN_PROGRESS": 1, "QUOTA_EXHAUSTED": 1}
    assert sorted(t for s in shops if (t := api.official_account(s)["account_type"])) == ["dedicated", "vertical"]
    assert quotas(api, subject_id) == {"main": (1, 1), "vertical": (1, 1), "dedicated": (1, 1)}


def test_r33_a_wave_never_takes_a_place_above_a_lowered_quota(api):
    """R-33: a sync lowered the subject's vertical quota (3 → 2) while places were held; the wave counts what is
    held now against the quota of now: one more vertical, then dedicated, then QUOTA_EXHAUSTED."""
    api.set_clock(T0)
    subject_id = api.subject()
    holder = factories.person()
    _, _, big = api.ready_shop(subject_id, shop_fields={"experience_score": 3.0}, holder=holder,
                               account_fields={"followers": 1_000_000})  # fmt: skip
    manual = [api.ready_shop(subject_id, shop_fields={"experience_score": 3.0})[1] for _ in range(4)]
    assert api.submit(manual[0], account_type="main").status_code == 201
    held = [api.submit(shop, account_type="vertical").json()["application_id"] for shop in manual[1:]]
    for app_id in held[:2]:
        assert api.client.post(f"/api/v1/upgrade-applications/{app_id}/withdraw", headers=api.admin).status_code == 200
    api.account(big, holder=holder, followers=0)
    assert quotas(api, subject_id) == {"main": (1, 1), "vertical": (2, 1), "dedicated": (3, 0)}
    candidates = [api.ready_shop(subject_id)[1] for _ in range(5)]

    wave = api.wave(10)
    assert (wave["upgraded"], wave["skip_reasons"]) == (4, {"QUOTA_EXHAUSTED": 1})
    types = sorted(t for s in candidates if (t := api.official_account(s)["account_type"]))
    assert types == ["dedicated", "dedicated", "dedicated", "vertical"]
    assert quotas(api, subject_id) == {"main": (1, 1), "vertical": (2, 2), "dedicated": (3, 3)}


def test_one_person_operates_at_most_five_accounts_across_a_wave(api):
    """R-41: the holder becomes the operator; a sixth account of the same person is skipped."""
    api.set_clock(T0)
    holder = factories.person()
    shops = [api.ready_shop(holder=holder)[1] for _ in range(6)]

    wave = api.wave(10)
    assert (wave["upgraded"], wave["skip_reasons"]) == (5, {"OPERATOR_LIMIT_REACHED": 1})
    assert sum(upgraded(api, s) for s in shops) == 5


def test_min_experience_score_overrides_the_policy_threshold(api):
    """R-11: experience score ≥ the wave's minimum (policy 4.6 unless the wave says otherwise)."""
    api.set_clock(T0)
    low = api.ready_shop(shop_fields={"experience_score": 4.3})[1]
    mid = api.ready_shop(shop_fields={"experience_score": 4.5})[1]
    high = api.ready_shop(shop_fields={"experience_score": 4.6})[1]

    default = api.wave(10)
    assert (default["min_experience_score"], default["scanned"], default["upgraded"]) == (4.6, 1, 1)
    assert upgraded(api, high) and not upgraded(api, mid)

    lowered = api.wave(10, min_experience_score=4.4)
    assert (lowered["min_experience_score"], lowered["scanned"], lowered["upgraded"]) == (4.4, 1, 1)
    assert upgraded(api, mid) and not upgraded(api, low)


def test_the_wave_api_reports_counters_and_refuses_bad_input(api, client, admin_headers):
    """R-11, R-62, R-63: 202 with a wave id, then the figures; staff only; bad input changes nothing."""
    api.set_clock(T0)
    subject_id = api.ready_shop()[0]
    r = client.post("/api/v1/admin/auto-upgrade-waves", json={"limit": 5}, headers=admin_headers)
    assert r.status_code == 202, r.text
    wave_id = r.json()["wave_id"]

    deadline = time.monotonic() + 30
    while (body := client.get(f"/api/v1/admin/auto-upgrade-waves/{wave_id}", headers=admin_headers).json())[
        "status"
    ] == "running":
        assert time.monotonic() < deadline, body
        time.sleep(0.02)
    assert body["status"] == "done"
    assert {k: body[k] for k in ("wave_id", "scanned", "upgraded", "skipped", "limit")} == {
        "wave_id": wave_id,
        "scanned": 1,
        "upgraded": 1,
        "skipped": 0,
        "limit": 5,
    }

    merchant = api.merchant(subject_id)
    assert client.post("/api/v1/admin/auto-upgrade-waves", json={"limit": 5}, headers=merchant).status_code == 403
    assert client.get(f"/api/v1/admin/auto-upgrade-waves/{wave_id}", headers=merchant).status_code == 403
    assert client.get("/api/v1/admin/auto-upgrade-waves/wave_nope", headers=admin_headers).status_code == 404
    for body in ({"limit": -1}, {}, {"limit": 5, "min_experience_score": 6}, {"limit": "many"}):
        r = client.post("/api/v1/admin/auto-upgrade-waves", json=body, headers=admin_headers)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["code"] == "VALIDATION_ERROR"


def test_a_wave_that_crashes_is_reported_failed_and_writes_nothing_of_its_chunk(api, monkeypatch):
    """R-11: the background run ends as `failed` with the error's kind; the chunk it was in is rolled back."""
    from guanhao.upgrades import waves

    api.set_clock(T0)
    shop_id = api.ready_shop()[1]

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(waves, "_write", broken)
    wave = api.wave(5)
    assert (wave["status"], wave["error"], wave["upgraded"], wave["scanned"]) == ("failed", "RuntimeError", 0, 0)
    assert not upgraded(api, shop_id)
    assert not [e for e in api.events() if e["type"] == "upgrade.succeeded"]
    # a wave that fails is audited like one that finishes: from/to and its figures.
    trail = api.audit(wave["wave_id"])
    assert [(a["action"], a["from"], a["to"]) for a in trail] == [
        ("wave.started", None, None),
        ("wave.failed", "running", "failed"),
    ]
    assert trail[-1]["detail"] == {"scanned": 0, "upgraded": 0, "skipped": 0, "error": "RuntimeError"}


# ---------------------------------------------------------------- the command


def test_dry_run_reports_the_figures_a_wave_would_have_and_writes_nothing(api, mix, database):
    """R-11: `guanhao waves run --dry-run` counts without writing a row; the real run then matches it."""
    assert cli_run("db", "upgrade").exit_code == 0  # the first command records the keys' fingerprint (keyring)
    before = row_counts(database)
    result = cli_run("waves", "run", "--limit", "100", "--dry-run", "--quiet")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    assert row_counts(database) == before
    assert not upgraded(api, mix["eligible_1"])
    dry = {label: figure(result.output, label) for label in ("scanned", "upgraded", "skipped")}
    assert dry == {"scanned": 11, "upgraded": 2, "skipped": 9}
    for reason, count in MIX_REASONS.items():
        assert figure(result.output, reason) == count

    real = cli_run("waves", "run", "--limit", "100", "--quiet")
    assert real.exit_code == 0, real.output
    assert {label: figure(real.output, label) for label in ("scanned", "upgraded", "skipped")} == dry
    assert upgraded(api, mix["eligible_1"]) and upgraded(api, mix["eligible_2"])


def test_dry_run_respects_the_limit_and_allocates_quota_like_a_wave(api, database):
    """R-11, R-32: a dry run stops at the limit and counts slots it would take across chunks."""
    api.set_clock(T0)
    subject_id = api.subject(subject_type="individual_business")
    for _ in range(4):
        api.ready_shop(subject_id)
    result = cli_run("waves", "run", "--limit", "10", "--dry-run", "--quiet", "--chunk", "1")
    assert result.exit_code == 0, result.output
    assert (figure(result.output, "upgraded"), figure(result.output, "QUOTA_EXHAUSTED")) == (3, 1)

    result = cli_run("waves", "run", "--limit", "2", "--dry-run", "--quiet")
    assert (figure(result.output, "scanned"), figure(result.output, "upgraded")) == (2, 2)
    assert quotas(api, subject_id)["main"] == (1, 0)


def test_cli_wave_in_small_chunks_allocates_quota_across_chunks_and_show_reports_it(api, database):
    """R-11, R-30, R-32, R-33: chunks of 2 shops, one subject 1/2/3 → six upgrades, the seventh skipped."""
    api.set_clock(T0)
    subject_id = api.subject()  # enterprise: 1 / 2 / 3
    shops = [api.ready_shop(subject_id)[1] for _ in range(7)]
    other = api.ready_shop(shop_fields={"experience_score": 4.9})[1]

    result = cli_run("waves", "run", "--limit", "50", "--chunk", "2", "--quiet")
    assert result.exit_code == 0, result.output
    wave_id = result.stdout.strip().splitlines()[0]
    assert wave_id.startswith("wave_")

    types = sorted(t for s in shops if (t := api.official_account(s)["account_type"]))
    assert types == ["dedicated"] * 3 + ["main"] + ["vertical"] * 2
    assert upgraded(api, other)
    assert quotas(api, subject_id) == {"main": (1, 1), "vertical": (2, 2), "dedicated": (3, 3)}

    r = api.client.get(f"/api/v1/admin/auto-upgrade-waves/{wave_id}", headers=api.admin).json()
    assert (r["status"], r["scanned"], r["upgraded"], r["skipped"]) == ("done", 8, 7, 1)
    assert r["skip_reasons"] == {"QUOTA_EXHAUSTED": 1}

    shown = cli_run("waves", "show", wave_id)
    assert shown.exit_code == 0, shown.output
    assert "done" in shown.output and "limit 50" in shown.output
    assert (figure(shown.output, "scanned"), figure(shown.output, "upgraded"), figure(shown.output, "skipped")) == (
        8,
        7,
        1,
    )
    assert figure(shown.output, "QUOTA_EXHAUSTED") == 1

    missing = cli_run("waves", "show", "wave_nope")
    assert missing.exit_code == 2 and "no wave" in missing.output


def test_resume_of_a_finished_wave_changes_nothing(api, database):
    """R-11: resuming a done wave does not upgrade past its limit or count a shop twice."""
    api.set_clock(T0)
    shops = [api.ready_shop()[1] for _ in range(3)]
    wave = api.wave(2)
    assert wave["upgraded"] == 2

    result = cli_run("waves", "resume", wave["wave_id"], "--quiet")
    assert result.exit_code == 0, result.output
    again = api.client.get(f"/api/v1/admin/auto-upgrade-waves/{wave['wave_id']}", headers=api.admin).json()
    assert (again["status"], again["scanned"], again["upgraded"]) == ("done", wave["scanned"], 2)
    assert sum(upgraded(api, s) for s in shops) == 2
    assert cli_run("waves", "resume", "wave_nope", "--quiet").exit_code == 2
