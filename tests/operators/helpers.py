"""Calls shared by the operator-change and phone-rebind HTTP tests."""

import datetime as dt

from tests import factories
from tests.factories import Api

T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
API = "/api/v1"


def masked(person: dict) -> dict:
    return {
        "name": person["name"][0] + "*" * (len(person["name"]) - 1),
        "id_number": person["id_number"][:3] + "*" * 11 + person["id_number"][-4:],
        "phone": mask_phone(person["phone"]),
    }


def mask_phone(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:]


def sms(api: Api, phone: str) -> list[dict]:
    r = api.client.get(f"{API}/sandbox/sms", params={"phone": phone}, headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def latest_code(api: Api, phone: str) -> str:
    return sms(api, phone)[0]["code"]


def request_change(api: Api, shop_id: str, person: dict, headers: dict | None = None):
    return api.client.post(
        f"{API}/shops/{shop_id}/official-account/operator-changes", json=person, headers=headers or api.admin
    )


def verify_change(api: Api, shop_id: str, change_id: str, code: str, headers: dict | None = None):
    return api.client.post(
        f"{API}/shops/{shop_id}/official-account/operator-changes/{change_id}/verify",
        json={"code": code},
        headers=headers or api.admin,
    )


def requested(api: Api, shop_id: str, person: dict, headers: dict | None = None) -> str:
    r = request_change(api, shop_id, person, headers)
    assert r.status_code == 201, r.text
    return r.json()["change_id"]


def change_operator(api: Api, shop_id: str, person: dict, headers: dict | None = None) -> dict:
    change_id = requested(api, shop_id, person, headers)
    r = verify_change(api, shop_id, change_id, latest_code(api, person["phone"]), headers)
    assert r.status_code == 200, r.text
    return r.json()


def request_rebind(api: Api, shop_id: str, new_phone: str, headers: dict | None = None):
    return api.client.post(
        f"{API}/shops/{shop_id}/official-account/phone-rebinds",
        json={"new_phone": new_phone},
        headers=headers or api.admin,
    )


def verify_rebind(api: Api, shop_id: str, rebind_id: str, code: str, headers: dict | None = None):
    return api.client.post(
        f"{API}/shops/{shop_id}/official-account/phone-rebinds/{rebind_id}/verify",
        json={"code": code},
        headers=headers or api.admin,
    )


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def problem(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code, r.text
    return r.json()


def upgraded_shop(
    api: Api, subject_id: str | None = None, *, operator: dict | None = None
) -> tuple[str, str, str, dict]:
    """(subject_id, shop_id, account_id, holder) of a shop whose official account is upgraded."""
    holder = factories.person(name="赵大海")
    subject_id, shop_id, account_id = api.ready_shop(subject_id, holder=holder)
    body = {"operator": operator} if operator else {}
    assert api.upgrade(shop_id, **body)["status"] == "succeeded"
    return subject_id, shop_id, account_id, holder
