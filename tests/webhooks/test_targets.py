"""Webhook endpoints are no door into the private network (issue 8 item 4, SPEC R-61): outside sandbox mode
only https:// URLs whose host resolves to public addresses, checked at registration and again at delivery,
after DNS; only known event types; in sandbox mode loopback receivers are allowed."""

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from guanhao.events import types as event_types
from guanhao.webhooks import targets
from tests.conftest import reset_caches
from tests.webhooks.receiver import Receiver

API = "/api/v1"
PRIVATE = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "::ffff:127.0.0.1",
    "224.0.0.1",
]
PUBLIC = "93.184.216.34"


def _fixed(*addresses: str):
    def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize("address", PRIVATE)
def test_r61_a_name_resolving_to_a_private_address_is_refused(address):
    with pytest.raises(targets.Refused):
        targets.check("https://hooks.example.com/in", sandbox=False, resolve=_fixed(address))
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(targets.Refused):
        targets.check(f"https://{literal}/in", sandbox=False, resolve=_fixed(PUBLIC))


def test_r61_a_public_https_url_is_accepted_and_one_private_address_spoils_a_name():
    target = targets.check("https://hooks.example.com/in", sandbox=False, resolve=_fixed(PUBLIC, "2606:2800::1"))
    assert target.host == "hooks.example.com"
    with pytest.raises(targets.Refused):
        targets.check("https://hooks.example.com/in", sandbox=False, resolve=_fixed(PUBLIC, "10.0.0.7"))
    with pytest.raises(targets.Refused):
        targets.check("http://hooks.example.com/in", sandbox=False, resolve=_fixed(PUBLIC))
    with pytest.raises(targets.Refused):
        targets.check("https://user:pw@hooks.example.com/in", sandbox=False, resolve=_fixed(PUBLIC))

    def unresolvable(host, port):
        raise OSError("no such host")

    with pytest.raises(targets.Refused):
        targets.check("https://nowhere.example/in", sandbox=False, resolve=unresolvable)


def test_sandbox_mode_allows_http_and_loopback_but_not_the_private_network():
    assert targets.check("http://127.0.0.1:9/in", sandbox=True).addresses == ("127.0.0.1",)
    assert targets.check("http://receiver.test/in", sandbox=True, resolve=_fixed("::1")).host == "receiver.test"
    for address in ("10.1.2.3", "192.168.1.1", "169.254.169.254"):
        with pytest.raises(targets.Refused):
            targets.check("http://receiver.test/in", sandbox=True, resolve=_fixed(address))


@pytest.fixture
def production_api(database, monkeypatch, admin_headers):
    monkeypatch.setenv("GUANHAO_SANDBOX", "0")
    reset_caches()
    from guanhao.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client
    reset_caches()


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/in",  # not https
        "https://127.0.0.1/in",
        "https://localhost:8443/in",  # a name for loopback
        "https://10.0.0.8/in",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/in",
        "https://[fc00::5]/in",
        "https://192.168.0.10/in",
    ],
)
def test_r61_registration_outside_sandbox_refuses_private_targets(production_api, admin_headers, url):
    r = production_api.post(f"{API}/admin/webhook-endpoints", json={"url": url}, headers=admin_headers)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "VALIDATION_ERROR"
    assert [e["field"] for e in r.json()["errors"]] == ["url"]
    assert production_api.get(f"{API}/admin/webhook-endpoints", headers=admin_headers).json()["items"] == []


def test_r61_registration_outside_sandbox_takes_a_public_https_url(production_api, admin_headers):
    r = production_api.post(
        f"{API}/admin/webhook-endpoints", json={"url": f"https://{PUBLIC}/in"}, headers=admin_headers
    )
    assert r.status_code == 201, r.text


def test_r61_event_types_must_be_known(api):
    r = api.client.post(
        f"{API}/admin/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/in", "event_types": ["upgrade.succeeded", "upgrade.exploded"]},
        headers=api.admin,
    )
    assert r.status_code == 422, r.text
    assert {e["field"] for e in r.json()["errors"]} == {"event_types.1"}
    r = api.client.post(
        f"{API}/admin/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/in", "event_types": list(event_types.TYPES)},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    doc = api.client.get(f"{API}/openapi.json").json()
    item = doc["components"]["schemas"]["EndpointIn"]["properties"]["event_types"]["anyOf"][0]["items"]
    assert item["enum"] == list(event_types.TYPES)


def test_r61_the_outbox_carries_only_the_listed_event_types(api):
    _, shop_id, _ = api.ready_shop()
    api.upgrade(shop_id)
    emitted = {e["type"] for e in api.events()}
    assert emitted <= event_types.KNOWN
    assert {"upgrade.submitted", "upgrade.confirmation_requested", "upgrade.succeeded"} <= emitted
    from guanhao.events import service as events

    with pytest.raises(ValueError):
        events.emit(None, "upgrade.exploded", at=None, shop_id=None, subject_id=None, data={})


def _message(url: str) -> "object":
    from guanhao.webhooks.service import Message

    return Message(delivery_seq=1, url=url, headers={"content-type": "application/json"}, body=b'{"data": {}}')


def test_r61_delivery_checks_the_address_again_after_dns_so_a_rebinding_name_reaches_nothing():
    """Registered while the name resolved to a public address; at delivery it resolves to loopback."""
    from guanhao.webhooks import service

    receiver = Receiver()
    receiver.start()
    try:
        url = f"https://hooks.example.com:{receiver.port}/hooks"
        targets.check(url, sandbox=False, resolve=_fixed(PUBLIC))  # what registration saw
        with targets.client(sandbox=False, resolve=_fixed("127.0.0.1")) as client:
            attempt = service.send(_message(url), client, timeout=2)
        assert attempt.status is None
        assert attempt.error.startswith("refused:"), attempt.error
        # Outside sandbox mode http:// is refused before any connection too.
        with targets.client(sandbox=False, resolve=_fixed(PUBLIC)) as client:
            attempt = service.send(_message(f"http://hooks.example.com:{receiver.port}/hooks"), client, timeout=2)
        assert attempt.error.startswith("refused:")
        assert receiver.received() == []
    finally:
        receiver.stop()


def test_sandbox_delivery_connects_to_the_checked_address_with_the_registered_name():
    from guanhao.webhooks import service

    receiver = Receiver()
    receiver.start()
    try:
        url = f"http://receiver.test:{receiver.port}/hooks"
        with targets.client(sandbox=True, resolve=_fixed("127.0.0.1")) as client:
            attempt = service.send(_message(url), client, timeout=5)
        assert attempt.ok, attempt
        [got] = receiver.received()
        assert got["headers"]["host"] == f"receiver.test:{receiver.port}"
        assert json.loads(got["body"]) == {"data": {}}
        with targets.client(sandbox=True, resolve=_fixed("10.9.8.7")) as client:
            attempt = service.send(_message(url), client, timeout=5)
        assert attempt.error.startswith("refused:")
    finally:
        receiver.stop()


def test_the_delivery_client_takes_no_proxy_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    with targets.client(sandbox=True, resolve=_fixed("127.0.0.1")) as client:
        assert isinstance(client._transport, httpx.HTTPTransport)
        assert not client._mounts
