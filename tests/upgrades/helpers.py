"""Calls, constants and readers shared by the upgrade workflow's HTTP tests."""

import datetime as dt

from tests.factories import Api

T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
CHECK_CODES = [
    "SHOP_TYPE_NOT_ELIGIBLE",
    "SHOP_NOT_ACTIVE",
    "LICENSE_EXPIRED",
    "ACCOUNT_NOT_BOUND",
    "ACCOUNT_NOT_VERIFIED",
    "ACCOUNT_NOT_NORMAL",
    "ACCOUNT_HAS_VIOLATIONS",
    "ALREADY_UPGRADED",
    "APPLICATION_IN_PROGRESS",
    "QUOTA_EXHAUSTED",
    "OPERATOR_LIMIT_REACHED",
]
EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}


def has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def submitted(api: Api, shop_id: str, headers: dict | None = None, **body) -> dict:
    r = api.submit(shop_id, headers, **body)
    assert r.status_code == 201, r.text
    return r.json()


def eligibility(api: Api, shop_id: str, headers: dict | None = None, **params) -> dict:
    r = api.client.get(f"/api/v1/shops/{shop_id}/eligibility", params=params, headers=headers or api.admin)
    assert r.status_code == 200, r.text
    return r.json()


def quotas(api: Api, subject_id: str, headers: dict | None = None) -> dict:
    r = api.client.get(f"/api/v1/subjects/{subject_id}/quotas", headers=headers or api.admin)
    assert r.status_code == 200, r.text
    return {t: (v["total"], v["used"]) for t, v in r.json().items()}


def applications(api: Api, shop_id: str, headers: dict | None = None) -> list[dict]:
    r = api.client.get(f"/api/v1/shops/{shop_id}/upgrade-applications", headers=headers or api.admin)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def withdraw(api: Api, application_id: str, headers: dict | None = None):
    return api.client.post(f"/api/v1/upgrade-applications/{application_id}/withdraw", headers=headers or api.admin)


def approve(api: Api, application_id: str):
    return api.client.post(f"/api/v1/admin/upgrade-applications/{application_id}/approve", headers=api.admin)


def staff_reject(api: Api, application_id: str, reason: str):
    return api.client.post(
        f"/api/v1/admin/upgrade-applications/{application_id}/reject", json={"reason": reason}, headers=api.admin
    )


def review_queue(api: Api) -> list[str]:
    r = api.client.get("/api/v1/admin/review-queue", headers=api.admin)
    assert r.status_code == 200, r.text
    return [a["application_id"] for a in r.json()["items"]]


def run_expiry(api: Api) -> int:
    r = api.client.post("/api/v1/admin/jobs/expire-confirmations/run", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()["processed"]


def admin_view(api: Api, application_id: str) -> dict:
    r = api.client.get(f"/api/v1/admin/upgrade-applications/{application_id}", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()


def snapshot(api: Api, shop_id: str, application_id: str | None = None) -> tuple:
    """What a user could see change: the applications, the shop's events, the audit trail, the account view."""
    return (
        applications(api, shop_id),
        [e["event_id"] for e in api.events(shop_id=shop_id)],
        api.audit(application_id) if application_id else None,
        api.official_account(shop_id),
    )


def states(app: dict) -> list[tuple[str, str]]:
    return [(s["step"], s["state"]) for s in app["steps"]]


def codes(reasons: list[dict]) -> list[str]:
    return [r["code"] for r in reasons]


def same_answer(api: Api, fast_path: str, legacy_path: str, headers: dict) -> dict | None:
    """The golden tests of the one-statement reads (issue 9): the fast route and the service-built route it
    replaced answer the same status, content type and bytes; the body when 200."""
    fast = api.client.get(fast_path, headers=headers)
    ref = api.client.get(legacy_path, headers=headers)
    assert (fast.status_code, fast.headers["content-type"]) == (ref.status_code, ref.headers["content-type"])
    assert fast.content == ref.content, f"\nfast {fast.text}\nref  {ref.text}"
    return fast.json() if fast.status_code == 200 else None
