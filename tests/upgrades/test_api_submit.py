"""The upgrade workflow through the HTTP API: submitting an application."""

from tests import factories
from tests.upgrades.helpers import admin_view, applications, codes, eligibility, quotas, snapshot, submitted

# ---------------------------------------------------------------- submit


def test_r63_submit_without_agreeing_to_terms_is_refused_and_changes_nothing(api, shop):
    """R-15, R-63 agree_terms false → 422 TERMS_NOT_ACCEPTED; no application, slot, event."""
    subject_id, shop_id, _, _ = shop
    before = snapshot(api, shop_id)
    r = api.submit(shop_id, api.merchant(subject_id), agree_terms=False)
    assert r.status_code == 422
    assert r.json()["code"] == "TERMS_NOT_ACCEPTED"
    r = api.client.post(f"/api/v1/shops/{shop_id}/upgrade-applications", json={}, headers=api.admin)
    assert r.status_code == 422
    assert snapshot(api, shop_id) == before
    assert quotas(api, subject_id)["main"] == (1, 0)


def test_r32_submit_with_explicit_type(api, shop):
    """R-32 the merchant chooses dedicated; that slot is reserved and kept after success."""
    subject_id, shop_id, _, _ = shop
    app = submitted(api, shop_id, account_type="dedicated")
    assert app["account_type"] == "dedicated"
    assert quotas(api, subject_id) == {"main": (1, 0), "vertical": (2, 0), "dedicated": (3, 1)}
    assert api.accept(app["application_id"]).status_code == 200
    assert api.official_account(shop_id)["account_type"] == "dedicated"
    assert quotas(api, subject_id)["dedicated"] == (3, 1)


def test_r32_explicit_full_type_is_refused_and_changes_nothing(api, shop):
    """R-32 an explicitly chosen full type → 409 TYPE_QUOTA_EXHAUSTED, no silent fallback."""
    subject_id, shop_id, _, _ = shop
    submitted(api, api.ready_shop(subject_id)[1])  # takes main
    before = snapshot(api, shop_id)
    r = api.submit(shop_id, account_type="main")
    assert r.status_code == 409
    assert r.json()["code"] == "TYPE_QUOTA_EXHAUSTED"
    assert codes(r.json()["reasons"]) == ["TYPE_QUOTA_EXHAUSTED"]
    assert snapshot(api, shop_id) == before
    assert quotas(api, subject_id)["vertical"] == (2, 0)


def test_r32_fallback_main_vertical_dedicated_then_quota_exhausted(api):
    """R-32 按序后补 through the API: main, vertical, dedicated, then QUOTA_EXHAUSTED (R-33)."""
    subject_id = api.subject(subject_type="individual_business")
    got = [submitted(api, api.ready_shop(subject_id)[1])["account_type"] for _ in range(3)]
    assert got == ["main", "vertical", "dedicated"]
    r = api.submit(api.ready_shop(subject_id)[1])
    assert r.status_code == 409
    assert r.json()["code"] == "QUOTA_EXHAUSTED"
    assert quotas(api, subject_id) == {"main": (1, 1), "vertical": (1, 1), "dedicated": (1, 1)}


def test_r31_cross_border_explicit_vertical_is_refused(api):
    """R-31, R-32 cross-border + vertical → 409 VERTICAL_NOT_AVAILABLE; without a choice main → dedicated."""
    subject_id = api.subject(cross_border=True)
    _, shop_id, _ = api.ready_shop(subject_id)
    r = api.submit(shop_id, account_type="vertical")
    assert r.status_code == 409
    assert r.json()["code"] == "VERTICAL_NOT_AVAILABLE"
    assert applications(api, shop_id) == []
    assert submitted(api, shop_id)["account_type"] == "main"
    assert submitted(api, api.ready_shop(subject_id)[1])["account_type"] == "dedicated"


def test_r40_named_operator_is_masked_and_becomes_the_operator(api, shop):
    """R-40 the merchant names another operator; R-50 it is shown masked everywhere."""
    subject_id, shop_id, _, holder = shop
    operator = factories.person(name="李四娃")
    app = submitted(api, shop_id, api.merchant(subject_id), operator=operator)
    expected = {
        "name": "李**",
        "id_number": operator["id_number"][:3] + "*" * 11 + operator["id_number"][-4:],
        "phone": operator["phone"][:3] + "****" + operator["phone"][-4:],
    }
    assert app["operator"] == expected
    assert api.accept(app["application_id"]).status_code == 200
    assert api.official_account(shop_id)["operator"] == expected
    seen = (
        str(applications(api, shop_id))
        + str(api.events(shop_id=shop_id))
        + str(api.audit(app["application_id"]))
        + str(admin_view(api, app["application_id"]))
        + str(api.official_account(shop_id))
    )
    for secret in (operator["id_number"], operator["phone"], operator["name"], holder["id_number"], holder["phone"]):
        assert secret not in seen


def test_r40_default_operator_is_the_holder(api, shop):
    """R-40 with no operator named, the holder's identity (masked) operates the account."""
    _, shop_id, _, holder = shop
    app = api.upgrade(shop_id)
    assert app["operator"]["id_number"] == holder["id_number"][:3] + "*" * 11 + holder["id_number"][-4:]
    assert api.official_account(shop_id)["operator"] == app["operator"]


def test_r63_named_operator_with_bad_id_number_is_refused(api, shop):
    """R-50, R-63 a bad ID card number → 422 INVALID_ID_NUMBER, nothing reserved."""
    subject_id, shop_id, _, _ = shop
    bad = factories.person() | {"id_number": "110105199003070000"}
    r = api.submit(shop_id, operator=bad)
    assert r.status_code == 422
    assert r.json()["code"] == "INVALID_ID_NUMBER"
    assert applications(api, shop_id) == []
    assert quotas(api, subject_id)["main"] == (1, 0)


def test_r04_submit_refused_lists_every_failed_check_and_changes_nothing(api, shop):
    """R-04, R-63 submit refused → 409 NOT_ELIGIBLE with every failed check in `reasons`."""
    subject_id, shop_id, account_id, holder = shop
    api.shop(subject_id, shop_id, status="closed")
    api.account(account_id, holder=holder, violations_90d=2)
    before = snapshot(api, shop_id)
    r = api.submit(shop_id, api.merchant(subject_id))
    assert r.status_code == 409
    body = r.json()
    assert body["code"] == "NOT_ELIGIBLE"
    assert codes(body["reasons"]) == ["SHOP_NOT_ACTIVE", "ACCOUNT_HAS_VIOLATIONS"]
    assert all(reason["message"] for reason in body["reasons"])
    assert snapshot(api, shop_id) == before
    assert quotas(api, subject_id)["main"] == (1, 0)


def test_r19_second_submit_while_one_in_progress_is_refused(api, shop):
    """R-19 at most one application per shop in progress → 409 APPLICATION_IN_PROGRESS."""
    subject_id, shop_id, _, _ = shop
    first = submitted(api, shop_id)
    before = snapshot(api, shop_id)
    r = api.submit(shop_id, account_type="dedicated")
    assert r.status_code == 409
    assert r.json()["code"] == "APPLICATION_IN_PROGRESS"
    assert snapshot(api, shop_id) == before
    assert quotas(api, subject_id)["dedicated"] == (3, 0)
    assert api.official_account(shop_id)["active_application_id"] == first["application_id"]
    assert [c["code"] for c in eligibility(api, shop_id)["checks"] if not c["passed"]] == ["APPLICATION_IN_PROGRESS"]


def test_r41_operator_limit_reached_on_submit(api):
    """R-41 one person operates at most 5 official accounts; an in-progress application holds a place."""
    operator = factories.person()
    subject_id = api.subject()
    for _ in range(5):
        submitted(api, api.ready_shop(api.subject())[1], operator=operator)
    _, shop_id, _ = api.ready_shop(subject_id)
    r = api.submit(shop_id, operator=operator)
    assert r.status_code == 409
    assert r.json()["code"] == "OPERATOR_LIMIT_REACHED"
    assert applications(api, shop_id) == []
    assert quotas(api, subject_id)["main"] == (1, 0)
    assert submitted(api, shop_id)["status"] == "submitted"  # the holder as operator has room
