"""The manual upgrade end to end (SPEC R-10, R-15, R-16, R-17)."""


def test_manual_upgrade_succeeds_after_holder_accepts(api):
    subject_id, shop_id, account_id = api.ready_shop()
    merchant = api.merchant(subject_id)

    r = api.submit(shop_id, merchant)
    assert r.status_code == 201, r.text
    app = r.json()
    assert app["status"] == "submitted"
    assert app["account_type"] == "main"
    assert app["attempt"] == 1
    assert [s["state"] for s in app["steps"]] == ["done", "current", "pending", "pending"]

    view = api.official_account(shop_id, merchant)
    assert view["upgrade_status"] == "in_progress"
    assert view["active_application_id"] == app["application_id"]

    r = api.accept(app["application_id"])
    assert r.status_code == 200, r.text

    done = api.application(app["application_id"], merchant)
    assert done["status"] == "succeeded"
    assert [s["state"] for s in done["steps"]] == ["done", "done", "done", "done"]

    view = api.official_account(shop_id, merchant)
    assert view["upgrade_status"] == "upgraded"
    assert view["ownership"] == "enterprise"
    assert view["origin"] == "manual"
    assert view["daily_post_limit"] == 100
    assert view["can_cancel"] is False
    assert view["operator"]["id_number"].count("*") == 11

    types = [e["type"] for e in api.events(shop_id=shop_id)]
    assert types == ["upgrade.submitted", "upgrade.confirmation_requested", "upgrade.reviewing", "upgrade.succeeded"]
    trail = api.audit(app["application_id"])
    assert [(a["from"], a["to"]) for a in trail] == [
        (None, "submitted"),
        ("submitted", "reviewing"),
        ("reviewing", "succeeded"),
    ]
