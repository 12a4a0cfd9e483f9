"""Small factories: valid personal data, and an API driver that syncs objects and walks the flow."""

import itertools
import random

from guanhao.pii import id_check_char

_counter = itertools.count(1)


def id_number(seq: int | None = None, *, born: str = "19900307", area: str = "110105") -> str:
    """A valid GB 11643 ID number (real birth date, correct check character)."""
    n = next(_counter) if seq is None else seq
    first17 = f"{area}{born}{n % 1000:03d}"
    return first17 + id_check_char(first17)


def phone(seq: int | None = None) -> str:
    n = next(_counter) if seq is None else seq
    return f"139{n % 100000000:08d}"


def person(seq: int | None = None, name: str = "王小明") -> dict:
    n = next(_counter) if seq is None else seq
    return {"name": name, "id_number": id_number(n), "phone": phone(n)}


def ids(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}-{random.randrange(10**6)}"


class Api:
    """Drives the HTTP API as the platform (admin) and as merchants."""

    def __init__(self, client, admin_headers: dict):
        self.client = client
        self.admin = admin_headers

    # -- platform sync
    def subject(self, subject_id: str | None = None, **fields) -> str:
        subject_id = subject_id or ids("subj")
        body = {
            "name": "杭州示例科技有限公司",
            "subject_type": "enterprise",
            "cross_border": False,
            "license_valid_until": None,
        } | fields
        r = self.client.put(f"/api/v1/subjects/{subject_id}", json=body, headers=self.admin)
        assert r.status_code in (200, 201), r.text
        return subject_id

    def shop(self, subject_id: str, shop_id: str | None = None, **fields) -> str:
        shop_id = shop_id or ids("shop")
        body = {
            "subject_id": subject_id,
            "name": "示例旗舰店",
            "shop_type": "flagship",
            "status": "active",
            "experience_score": 4.8,
        } | fields
        r = self.client.put(f"/api/v1/shops/{shop_id}", json=body, headers=self.admin)
        assert r.status_code in (200, 201), r.text
        return shop_id

    def account(self, account_id: str | None = None, *, holder: dict | None = None, **fields) -> str:
        account_id = account_id or ids("acct")
        body = {
            "nickname": "示例官方号",
            "followers": 12000,
            "status": "normal",
            "real_name_verified": True,
            "violations_90d": 0,
            "login_phone": phone(),
            "holder": holder or person(),
        } | fields
        r = self.client.put(f"/api/v1/accounts/{account_id}", json=body, headers=self.admin)
        assert r.status_code in (200, 201), r.text
        return account_id

    def bind(self, shop_id: str, account_id: str):
        return self.client.put(
            f"/api/v1/shops/{shop_id}/official-account", json={"account_id": account_id}, headers=self.admin
        )

    def ready_shop(
        self,
        subject_id: str | None = None,
        *,
        shop_fields: dict | None = None,
        account_fields: dict | None = None,
        holder: dict | None = None,
    ) -> tuple[str, str, str]:
        """(subject_id, shop_id, account_id) of a shop that passes every check."""
        subject_id = subject_id or self.subject()
        shop_id = self.shop(subject_id, **(shop_fields or {}))
        account_id = self.account(holder=holder, **(account_fields or {}))
        r = self.bind(shop_id, account_id)
        assert r.status_code == 200, r.text
        return subject_id, shop_id, account_id

    # -- merchants
    def merchant(self, subject_id: str) -> dict:
        r = self.client.post(
            "/api/v1/admin/api-keys", json={"role": "merchant", "subject_id": subject_id}, headers=self.admin
        )
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def submit(self, shop_id: str, headers: dict | None = None, **body):
        payload = {"agree_terms": True} | body
        return self.client.post(
            f"/api/v1/shops/{shop_id}/upgrade-applications", json=payload, headers=headers or self.admin
        )

    def token(self, application_id: str) -> str:
        r = self.client.get(f"/api/v1/admin/upgrade-applications/{application_id}", headers=self.admin)
        assert r.status_code == 200, r.text
        return r.json()["confirmation_url"].rsplit("/", 1)[1]

    def accept(self, application_id: str):
        return self.client.post(f"/api/v1/confirmations/{self.token(application_id)}/accept")

    def decline(self, application_id: str):
        return self.client.post(f"/api/v1/confirmations/{self.token(application_id)}/decline")

    def application(self, application_id: str, headers: dict | None = None) -> dict:
        r = self.client.get(f"/api/v1/upgrade-applications/{application_id}", headers=headers or self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def upgrade(self, shop_id: str, **body) -> dict:
        """Submit and accept: the application, succeeded (or waiting for staff)."""
        r = self.submit(shop_id, **body)
        assert r.status_code == 201, r.text
        app_id = r.json()["application_id"]
        r = self.accept(app_id)
        assert r.status_code == 200, r.text
        return self.application(app_id)

    def official_account(self, shop_id: str, headers: dict | None = None) -> dict:
        r = self.client.get(f"/api/v1/shops/{shop_id}/official-account", headers=headers or self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    # -- staff
    def wave(self, limit: int, *, timeout: float = 30.0, **body) -> dict:
        """Starts an auto-upgrade wave and polls it until it is no longer running."""
        import time

        r = self.client.post("/api/v1/admin/auto-upgrade-waves", json={"limit": limit} | body, headers=self.admin)
        assert r.status_code == 202, r.text
        wave_id = r.json()["wave_id"]
        deadline = time.monotonic() + timeout
        while True:
            r = self.client.get(f"/api/v1/admin/auto-upgrade-waves/{wave_id}", headers=self.admin)
            assert r.status_code == 200, r.text
            if r.json()["status"] != "running":
                return r.json()
            assert time.monotonic() < deadline, f"wave {wave_id} still running after {timeout}s: {r.json()}"
            time.sleep(0.02)

    # -- sandbox
    def set_clock(self, when) -> None:
        value = when if isinstance(when, str) else when.isoformat()
        r = self.client.post("/api/v1/sandbox/clock", json={"now": value}, headers=self.admin)
        assert r.status_code == 200, r.text

    def now(self):
        import datetime as dt

        return dt.datetime.fromisoformat(self.client.get("/api/v1/sandbox/clock", headers=self.admin).json()["now"])

    def events(self, **params) -> list[dict]:
        items, cursor = [], None
        while True:
            q = dict(params) | ({"cursor": cursor} if cursor else {})
            r = self.client.get("/api/v1/admin/events", params=q, headers=self.admin)
            assert r.status_code == 200, r.text
            if not r.json()["items"]:  # caught up: the feed's cursor stays where it was
                return items
            items += r.json()["items"]
            cursor = r.json()["next_cursor"]

    def audit(self, target_id: str) -> list[dict]:
        r = self.client.get("/api/v1/admin/audit", params={"target_id": target_id}, headers=self.admin)
        assert r.status_code == 200, r.text
        return r.json()["items"]
