"""Browser journeys against a live server: Playwright for Python driving Debian's Chromium (never a downloaded
browser), one browser for the console tests, a fresh context per test.

The console tests are one xdist group (`make test` runs `--dist loadgroup`), so one worker runs them one after
the other with one browser; the browser is package-scoped because Playwright's sync API keeps an event loop
running in the main thread while it lives, which would break later tests there that call asyncio.run().

Screenshots of every main page, at desktop and phone width, are written to $GUANHAO_SCREENSHOTS, by default
var/screenshots/ in the repository; axe-core checks every main page for serious or critical violations.
"""

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.factories import Api

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
SCREENSHOTS = Path(os.environ.get("GUANHAO_SCREENSHOTS", ROOT / "var" / "screenshots"))
PASSWORD = "merchant-pass-1"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.fixture(scope="package")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip(
            "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium fonts-wqy-zenhei)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport=DESKTOP, locale="zh-CN", timezone_id="Asia/Shanghai")
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def page(context):
    return context.new_page()


@dataclass
class Console:
    """The live server, the API as the platform (setup and checks), and helpers for the browser."""

    url: str
    api: Api

    def merchant_user(self, subject_id: str, username: str | None = None) -> str:
        username = username or f"m{subject_id.replace('-', '')[-12:]}".lower()
        return self._user(username, "merchant", subject_id)

    def staff_user(self, username: str = "staff.user") -> str:
        return self._user(username, "staff", None)

    def _user(self, username: str, role: str, subject_id: str | None) -> str:
        r = self.api.client.post(
            "/api/v1/admin/users",
            json={"username": username, "password": PASSWORD, "role": role, "subject_id": subject_id},
            headers=self.api.admin,
        )
        assert r.status_code == 201, r.text
        return username

    def login(self, page, username: str, password: str = PASSWORD, *, home: str = "/shops") -> None:
        """Signs in on the login page at `/`; a merchant lands on /shops, staff on /staff."""
        page.goto(self.url + "/")
        page.get_by_label(re.compile("用户名|Username")).fill(username)
        page.get_by_label(re.compile("密码|Password")).fill(password)
        page.get_by_test_id("login").click()
        page.wait_for_url(re.compile(re.escape(home) + "$"))

    def holder_url(self, application_id: str) -> str:
        return f"{self.url}/confirm/{self.api.token(application_id)}"

    def latest_sms_code(self, phone: str) -> str:
        r = self.api.client.get("/api/v1/sandbox/sms", params={"phone": phone}, headers=self.api.admin)
        assert r.status_code == 200, r.text
        return r.json()["items"][0]["code"]


@pytest.fixture
def console(live_server, api) -> Console:
    return Console(url=live_server, api=api)


def check_accessibility(page, name: str) -> None:
    """axe-core on the page as it is: no serious or critical violation."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    details = [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:5]}" for v in bad]
    assert not bad, f"{name}: accessibility violations: {details}"


def shoot(page, name: str, *, phone_first: bool = False) -> None:
    """A full-page screenshot at desktop and at phone width; then the viewport is as before."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    order = [("phone", PHONE), ("desktop", DESKTOP)] if phone_first else [("desktop", DESKTOP), ("phone", PHONE)]
    for label, size in order:
        page.set_viewport_size(size)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
        if label == "phone":
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= size["width"], f"{name}: scrolls sideways at {size['width']} px ({width} px wide)"
    page.set_viewport_size(before)


def main_page(page, name: str, *, phone_first: bool = False) -> None:
    """Every main page: axe-core, then screenshots at both widths."""
    check_accessibility(page, name)
    shoot(page, name, phone_first=phone_first)
