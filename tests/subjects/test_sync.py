"""Platform sync: subjects, shops, accounts, the official-account binding, and NDJSON import (API.md)."""

import json

from tests.factories import id_number, person, phone

SHOP = {"name": "示例旗舰店", "shop_type": "flagship", "status": "active", "experience_score": 4.8}


def account_body(**fields) -> dict:
    return {
        "nickname": "示例官方号",
        "followers": 10,
        "status": "normal",
        "real_name_verified": True,
        "violations_90d": 0,
        "login_phone": phone(),
        "holder": person(),
    } | fields


def test_put_subject_creates_then_updates(client, admin_headers):
    body = {
        "name": "杭州示例科技有限公司",
        "subject_type": "enterprise",
        "cross_border": False,
        "license_valid_until": None,
    }
    r = client.put("/api/v1/subjects/s-1", json=body, headers=admin_headers)
    assert r.status_code == 201, r.text
    assert r.json()["subject_id"] == "s-1"
    r = client.put(
        "/api/v1/subjects/s-1",
        json=body | {"cross_border": True, "license_valid_until": "2030-01-31"},
        headers=admin_headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["cross_border"] is True
    assert r.json()["license_valid_until"] == "2030-01-31"


def test_put_shop_creates_then_updates(api):
    subject_id = api.subject()
    r = api.client.put("/api/v1/shops/shop-1", json=SHOP | {"subject_id": subject_id}, headers=api.admin)
    assert r.status_code == 201, r.text
    r = api.client.put(
        "/api/v1/shops/shop-1", json=SHOP | {"subject_id": subject_id, "status": "suspended"}, headers=api.admin
    )
    assert r.status_code == 200
    assert r.json()["status"] == "suspended"


def test_r50_put_account_creates_then_updates_and_answers_masked(client, admin_headers):
    holder = person(name="李四")
    login = phone()
    r = client.put("/api/v1/accounts/a-1", json=account_body(holder=holder, login_phone=login), headers=admin_headers)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["holder"] == {
        "name": "李*",
        "id_number": holder["id_number"][:3] + "*" * 11 + holder["id_number"][-4:],
        "phone": holder["phone"][:3] + "****" + holder["phone"][-4:],
    }
    assert out["login_phone"] == login[:3] + "****" + login[-4:]
    assert holder["id_number"] not in r.text and login not in r.text
    r = client.put("/api/v1/accounts/a-1", json=account_body(followers=99), headers=admin_headers)
    assert r.status_code == 200
    assert r.json()["followers"] == 99


def test_shop_with_unknown_subject_is_refused(client, admin_headers):
    r = client.put("/api/v1/shops/shop-x", json=SHOP | {"subject_id": "nobody"}, headers=admin_headers)
    assert r.status_code == 422
    assert r.json()["code"] == "VALIDATION_ERROR"
    assert client.get("/api/v1/shops/shop-x/official-account", headers=admin_headers).status_code == 404


def test_binding_an_unknown_account_is_refused(api):
    shop_id = api.shop(api.subject())
    r = api.bind(shop_id, "no-such-account")
    assert r.status_code == 422


def test_r05_an_account_is_the_official_account_of_at_most_one_shop(api):
    subject_id, shop_a, account_id = api.ready_shop()
    shop_b = api.shop(subject_id)
    r = api.bind(shop_b, account_id)
    assert r.status_code == 409
    assert r.json()["code"] == "ACCOUNT_ALREADY_BOUND"
    # another subject's shop cannot take it either
    r = api.bind(api.shop(api.subject()), account_id)
    assert r.json()["code"] == "ACCOUNT_ALREADY_BOUND"
    # binding the same pair again is a no-op
    assert api.bind(shop_a, account_id).status_code == 200
    assert api.official_account(shop_b)["account"] is None


def test_r05_a_shop_may_switch_to_a_free_account_before_any_upgrade(api):
    subject_id, shop_id, first = api.ready_shop()
    second = api.account()
    assert api.bind(shop_id, second).status_code == 200
    assert api.official_account(shop_id)["account"]["account_id"] == second
    # the first account is free again
    assert api.bind(api.shop(subject_id), first).status_code == 200


def test_r21_rebinding_refused_while_an_application_is_in_progress(api):
    subject_id, shop_id, _ = api.ready_shop()
    assert api.submit(shop_id).status_code == 201
    r = api.bind(shop_id, api.account())
    assert r.status_code == 409
    assert r.json()["code"] == "APPLICATION_IN_PROGRESS"


def test_r21_rebinding_and_moving_the_shop_refused_after_upgrade(api):
    subject_id, shop_id, account_id = api.ready_shop()
    assert api.upgrade(shop_id)["status"] == "succeeded"
    r = api.bind(shop_id, api.account())
    assert r.status_code == 409
    assert r.json()["code"] == "ALREADY_UPGRADED"
    r = api.client.put(f"/api/v1/shops/{shop_id}", json=SHOP | {"subject_id": api.subject()}, headers=api.admin)
    assert r.status_code == 409
    assert api.official_account(shop_id)["account"]["account_id"] == account_id


def _ndjson(*lines) -> bytes:
    return "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines).encode()


def test_import_keeps_good_lines_and_reports_bad_ones_by_line(api):
    good_id = id_number()
    bad_id = good_id[:17] + ("1" if good_id[17] != "1" else "2")
    body = _ndjson(
        {
            "kind": "subject",
            "id": "imp-s",
            "name": "导入主体",
            "subject_type": "enterprise",
            "cross_border": False,
            "license_valid_until": None,
        },  # 1 ok
        "{this is not json",  # 2
        {"kind": "planet", "id": "p-1"},  # 3
        {"kind": "account", "id": "imp-bad-id"} | account_body(holder=person() | {"id_number": bad_id}),  # 4
        {"kind": "account", "id": "imp-bad-phone"} | account_body(login_phone="12800000000"),  # 5
        {"kind": "shop", "id": "imp-orphan", "subject_id": "nobody"} | SHOP,  # 6
        {"kind": "shop", "id": "imp-shop", "subject_id": "imp-s"} | SHOP,  # 7 ok
        {"kind": "account", "id": "imp-acct"} | account_body(),  # 8 ok
        {"kind": "binding", "shop_id": "imp-shop", "account_id": "imp-acct"},  # 9 ok
        "",  # 10 blank: skipped
        "[1, 2]",  # 11
    )
    r = api.client.post("/api/v1/import", content=body, headers=api.admin | {"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 4
    codes = {x["line"]: x["code"] for x in out["rejected"]}
    assert codes == {
        2: "MALFORMED_BODY",
        3: "VALIDATION_ERROR",
        4: "INVALID_ID_NUMBER",
        5: "INVALID_PHONE",
        6: "VALIDATION_ERROR",
        11: "MALFORMED_BODY",
    }
    assert all(x["detail"] for x in out["rejected"])
    assert bad_id not in r.text and "12800000000" not in r.text
    assert api.official_account("imp-shop")["account"]["account_id"] == "imp-acct"
    assert api.client.get("/api/v1/shops/imp-orphan/official-account", headers=api.admin).status_code == 404


def test_import_reports_binding_conflicts(api):
    _, shop_id, account_id = api.ready_shop()
    other = api.shop(api.subject())
    body = _ndjson({"kind": "binding", "shop_id": other, "account_id": account_id})
    r = api.client.post("/api/v1/import", content=body, headers=api.admin | {"Content-Type": "application/x-ndjson"})
    assert r.json() == {
        "accepted": 0,
        "rejected": [{"line": 1, "code": "ACCOUNT_ALREADY_BOUND", "detail": r.json()["rejected"][0]["detail"]}],
    }


def test_import_is_admin_only(api):
    subject_id = api.subject()
    r = api.client.post(
        "/api/v1/import", content=b"", headers=api.merchant(subject_id) | {"Content-Type": "application/x-ndjson"}
    )
    assert r.status_code == 403


def _upgraded_account(api, login_phone: str, holder: dict) -> tuple[str, str]:
    _, shop_id, account_id = api.ready_shop(account_fields={"login_phone": login_phone}, holder=holder)
    assert api.upgrade(shop_id)["status"] == "succeeded"
    return shop_id, account_id


def test_r24_a_sync_may_change_an_upgraded_accounts_other_fields_but_keeps_its_login_phone_and_holder(api):
    """R-24: from the upgrade on the login phone and the operator are the subject's to manage; the platform's sync
    still brings followers, status, violations and nickname."""
    holder, login_phone = person(), phone()
    shop_id, account_id = _upgraded_account(api, login_phone, holder)
    body = account_body(login_phone=login_phone, holder=holder, followers=777, nickname="新昵称", violations_90d=1)
    r = api.client.put(f"/api/v1/accounts/{account_id}", json=body, headers=api.admin)
    assert r.status_code == 200, r.text
    assert (r.json()["followers"], r.json()["nickname"], r.json()["violations_90d"]) == (777, "新昵称", 1)
    view = api.official_account(shop_id)
    assert view["account"]["login_phone"] == login_phone[:3] + "****" + login_phone[-4:]


def test_r24_a_sync_that_changes_an_upgraded_accounts_login_phone_or_holder_is_refused_and_changes_nothing(api):
    holder, login_phone = person(), phone()
    shop_id, account_id = _upgraded_account(api, login_phone, holder)
    before = (api.official_account(shop_id), api.audit(account_id), api.events(shop_id=shop_id))
    for changed in (
        account_body(login_phone=phone(), holder=holder, followers=999),
        account_body(login_phone=login_phone, holder=person(), followers=999),
    ):
        r = api.client.put(f"/api/v1/accounts/{account_id}", json=changed, headers=api.admin)
        assert (r.status_code, r.json()["code"]) == (409, "MANAGED_BY_SUBJECT"), r.text
    assert (api.official_account(shop_id), api.audit(account_id), api.events(shop_id=shop_id)) == before

    line = {"kind": "account", "id": account_id, **account_body(login_phone=phone(), holder=holder)}
    good = {"kind": "account", "id": "acct-r24-other", **account_body()}
    r = api.client.post(
        "/api/v1/import", content=_ndjson(line, good), headers=api.admin | {"Content-Type": "application/x-ndjson"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert [(x["line"], x["code"]) for x in r.json()["rejected"]] == [(1, "MANAGED_BY_SUBJECT")]
    assert api.official_account(shop_id) == before[0]


def test_r24_before_the_upgrade_the_platform_syncs_the_login_phone_and_holder(api):
    _, shop_id, account_id = api.ready_shop()
    new_phone = phone()
    r = api.client.put(f"/api/v1/accounts/{account_id}", json=account_body(login_phone=new_phone), headers=api.admin)
    assert r.status_code == 200, r.text
    assert api.official_account(shop_id)["account"]["login_phone"].endswith(new_phone[-4:])
