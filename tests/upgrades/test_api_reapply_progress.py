"""The upgrade workflow through the HTTP API: applying again, and the progress steps."""

import datetime as dt

from tests.upgrades.helpers import T0, applications, quotas, run_expiry, snapshot, staff_reject, submitted, withdraw

# ---------------------------------------------------------------- re-apply


def test_r18_reapply_after_rejected_expired_withdrawn_counts_attempts(api, shop):
    """R-18 rejected, expired, withdrawn → apply again; attempt 1, 2, 3, 4; after success ALREADY_UPGRADED."""
    subject_id, shop_id, _, _ = shop
    merchant = api.merchant(subject_id)
    first = submitted(api, shop_id, merchant)
    api.decline(first["application_id"])
    second = submitted(api, shop_id, merchant)
    api.set_clock(T0 + dt.timedelta(days=8))
    assert run_expiry(api) == 1
    third = submitted(api, shop_id, merchant)
    withdraw(api, third["application_id"], merchant)
    fourth = submitted(api, shop_id, merchant)
    assert [a["attempt"] for a in (first, second, third, fourth)] == [1, 2, 3, 4]
    assert api.accept(fourth["application_id"]).status_code == 200

    before = snapshot(api, shop_id)
    r = api.submit(shop_id, merchant)
    assert r.status_code == 409
    assert r.json()["code"] == "ALREADY_UPGRADED"
    assert snapshot(api, shop_id) == before
    assert quotas(api, subject_id) == {"main": (1, 1), "vertical": (2, 0), "dedicated": (3, 0)}


def test_r18_list_is_newest_first(api, shop):
    """R-18, API list ordering: the shop's applications newest first, by creation sequence (same clock time)."""
    _, shop_id, _, _ = shop
    ids = []
    for _ in range(3):
        app = submitted(api, shop_id)
        ids.append(app["application_id"])
        withdraw(api, app["application_id"])
    items = applications(api, shop_id)
    assert [a["application_id"] for a in items] == ids[::-1]
    assert [a["attempt"] for a in items] == [3, 2, 1]


# ---------------------------------------------------------------- progress


def test_r17_steps_for_every_state(api, shop):
    """R-17 steps with timestamps and the current step, for every state a manual application can be in."""
    subject_id, _, _, _ = shop

    def app_in(end: str, followers: int = 10) -> dict:
        _, target, account_id = api.ready_shop(subject_id, account_fields={"followers": followers})
        app = submitted(api, target, account_type="dedicated")
        api.set_clock(T0 + dt.timedelta(hours=1))
        if end in ("succeeded", "reviewing"):
            api.accept(app["application_id"])
        elif end == "declined":
            api.decline(app["application_id"])
        elif end == "withdrawn":
            withdraw(api, app["application_id"])
        elif end == "review_failed":
            api.account(account_id, status="banned")
            api.accept(app["application_id"])
        elif end == "staff_rejected":
            api.accept(app["application_id"])
            staff_reject(api, app["application_id"], "no")
        elif end == "expired":
            api.set_clock(T0 + dt.timedelta(hours=169))
            run_expiry(api)
        result = api.application(app["application_id"])
        api.set_clock(T0)
        return result

    expected = {
        "submitted": ("submitted", "holder_confirmation", ["done", "current", "pending", "pending"]),
        "succeeded": ("succeeded", "result", ["done", "done", "done", "done"]),
        "reviewing": ("reviewing", "review", ["done", "done", "current", "pending"]),
        "declined": ("rejected", "result", ["done", "failed", "skipped", "failed"]),
        "review_failed": ("rejected", "result", ["done", "done", "failed", "failed"]),
        "staff_rejected": ("rejected", "result", ["done", "done", "failed", "failed"]),
        "withdrawn": ("withdrawn", "result", ["done", "skipped", "skipped", "done"]),
        "expired": ("expired", "result", ["done", "failed", "skipped", "failed"]),
    }
    for end, (status, current, step_states) in expected.items():
        followers = 1_000_000 if end in ("reviewing", "staff_rejected") else 10
        app = app_in(end, followers)
        assert app["status"] == status, end
        assert app["current_step"] == current, end
        assert [s["step"] for s in app["steps"]] == ["submitted", "holder_confirmation", "review", "result"]
        assert [s["state"] for s in app["steps"]] == step_states, end
        for s in app["steps"]:
            if s["state"] in ("pending", "skipped"):
                assert s["at"] is None, (end, s)
            elif s["state"] != "current" or s["step"] == "review":
                assert s["at"] is not None, (end, s)
        assert dt.datetime.fromisoformat(app["steps"][0]["at"]) == T0
        if end not in ("submitted", "reviewing"):
            assert dt.datetime.fromisoformat(app["steps"][3]["at"]) > T0, end


def test_r18_r17_reapply_after_cancel(policy_api):
    """R-12 (policy allow_manual), R-17 a cancelled application's steps, R-18 cancelled → apply again as attempt 2."""
    api = policy_api(**{"allow_manual = false": "allow_manual = true"})
    api.set_clock(T0)
    subject_id, shop_id, _ = api.ready_shop()
    first = api.upgrade(shop_id)
    assert api.official_account(shop_id)["can_cancel"] is True
    api.set_clock(T0 + dt.timedelta(days=1))
    r = api.client.post(f"/api/v1/shops/{shop_id}/official-account/cancel-upgrade", headers=api.merchant(subject_id))
    assert r.status_code == 200, r.text
    cancelled = api.application(first["application_id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["current_step"] == "result"
    assert [s["state"] for s in cancelled["steps"]] == ["done", "done", "done", "done"]
    assert quotas(api, subject_id)["main"] == (1, 0)
    second = submitted(api, shop_id)
    assert second["attempt"] == 2
    assert second["account_type"] == "main"
    assert [(a["from"], a["to"]) for a in api.audit(first["application_id"])][-1] == ("succeeded", "cancelled")
    assert "upgrade.cancelled" in [e["type"] for e in api.events(shop_id=shop_id)]
