"""Request bodies (API.md Conventions, issue 8 items 1 and 2): every body has a size limit — past it 413
PAYLOAD_TOO_LARGE at once, before authentication and without reading the rest — and a body that is not
acceptable JSON is 400 MALFORMED_BODY, never a 500, with or without a token (SPEC R-63)."""

import asyncio
import json
import socket
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from guanhao import bodies
from tests.conftest import reset_caches, serving

API = "/api/v1"
JSON = {"Content-Type": "application/json"}
SUBJECT = {"name": "杭州示例科技有限公司", "subject_type": "enterprise"}


@pytest.fixture
def limited(database, monkeypatch):
    """A fresh app built with the given settings (GUANHAO_<NAME>=value)."""

    def build(**settings):
        for name, value in settings.items():
            monkeypatch.setenv(f"GUANHAO_{name.upper()}", str(value))
        reset_caches()
        from guanhao.app import create_app

        return create_app()

    yield build
    reset_caches()


def _raw(base_url: str, request: bytes) -> tuple[int, dict, bytes]:
    """Sends raw bytes and reads one response; a server still waiting for the body times out (a failure)."""
    url = urlsplit(base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without a response: {data!r}"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return status, headers, rest


# ---------------------------------------------------------------- item 1: sizes


def test_a_declared_body_past_the_limit_is_413_before_a_byte_of_it_is_read(limited):
    with serving(limited(max_body_bytes=4096)) as url:
        # 90 MB announced, nothing sent, no token: the answer comes at once.
        status, headers, body = _raw(
            url,
            b"PUT /api/v1/subjects/s-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Idempotency-Key: k-big\r\nContent-Length: 90000000\r\n\r\n",
        )
    assert status == 413
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "PAYLOAD_TOO_LARGE"


def test_a_chunked_body_is_counted_as_it_arrives_and_refused_once_past_the_limit(limited):
    with serving(limited(max_body_bytes=4096)) as url:
        chunk = b"1000\r\n" + b" " * 4096 + b"\r\n"
        # Two chunks (8 KiB) of a body that never ends: the server answers without waiting for the rest.
        status, _, body = _raw(
            url,
            b"POST /api/v1/admin/api-keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunk + chunk,
        )
    assert status == 413
    assert json.loads(body)["code"] == "PAYLOAD_TOO_LARGE"


def test_the_limit_applies_before_authentication_and_the_idempotency_key(limited, admin_headers):
    with TestClient(limited(max_body_bytes=2048), raise_server_exceptions=False) as client:
        big = json.dumps(SUBJECT | {"pad": "x" * 4000}).encode()
        for headers in ({}, admin_headers, admin_headers | {"Idempotency-Key": "k-1"}):
            r = client.put(f"{API}/subjects/s-1", content=big, headers=JSON | headers)
            assert r.status_code == 413, r.text
            assert r.json()["code"] == "PAYLOAD_TOO_LARGE"
            assert r.json()["title"] == "请求体过大"
        # Within the limit the same request goes through.
        r = client.put(f"{API}/subjects/s-1", json=SUBJECT, headers=admin_headers | {"Idempotency-Key": "k-1"})
        assert r.status_code == 201, r.text


def test_the_default_limit_is_one_mebibyte_for_json(client, admin_headers):
    body = json.dumps(SUBJECT | {"pad": "x" * (1024 * 1024)}).encode()
    r = client.put(f"{API}/subjects/s-1", content=body, headers=JSON | admin_headers)
    assert r.status_code == 413
    from guanhao.settings import get_settings

    assert get_settings().max_body_bytes == 1024 * 1024
    assert get_settings().max_import_bytes > get_settings().max_body_bytes


# ---------------------------------------------------------------- item 2: JSON the service accepts

UNACCEPTABLE = {
    "deep": b'{"a":' * 50_000,
    "just_too_deep": b"[" * 33 + b"]" * 33,
    "invalid_utf8": b'{"name": "\xff\xfe"}',
    "utf16": json.dumps(SUBJECT).encode("utf-16"),
    "long_number": b'{"name": "x", "n": ' + b"7" * 5000 + b"}",
    "huge_float": b'{"name": "x", "n": 1e999}',
    "duplicate_keys": b'{"name": "a", "name": "b", "subject_type": "enterprise"}',
    "nan": b'{"name": "x", "subject_type": "enterprise", "n": NaN}',
    "infinity": b'{"name": "x", "n": -Infinity}',
    "lone_surrogate": b'{"name": "\\ud800", "subject_type": "enterprise"}',
    "trailing_data": b'{"name": "x"} {}',
}


@pytest.mark.parametrize("name", sorted(UNACCEPTABLE))
def test_r63_a_body_that_is_not_acceptable_json_is_400_malformed_body(client, admin_headers, name):
    raw = UNACCEPTABLE[name]
    for headers in ({}, admin_headers, admin_headers | {"Idempotency-Key": f"k-{name}"}, {"Idempotency-Key": "k"}):
        r = client.put(f"{API}/subjects/s-1", content=raw, headers=JSON | headers)
        assert r.status_code == 400, (headers, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["code"] == "MALFORMED_BODY"
        assert body["title"] == "请求体不是有效的 JSON"
        en = client.put(f"{API}/subjects/s-1", content=raw, headers=JSON | headers | {"Accept-Language": "en"}).json()
        assert en["title"] == "The request body is not valid JSON"
        assert en["detail"] != body["detail"], "the detail is translated too"
    assert client.get(f"{API}/shops/s-1/official-account", headers=admin_headers).status_code == 404


def test_json_at_the_depth_limit_is_accepted_and_validated(client, admin_headers):
    nested = {"x": 1}
    for _ in range(bodies.MAX_DEPTH - 2):
        nested = {"x": nested}
    r = client.put(f"{API}/subjects/s-1", json=SUBJECT | {"extra": nested}, headers=admin_headers)
    assert r.status_code == 422, r.text  # reaches validation: an unknown field, not a malformed body
    assert r.json()["code"] == "VALIDATION_ERROR"


def test_the_strict_loader_refuses_with_a_reason_and_nothing_else():
    for name, raw in UNACCEPTABLE.items():
        with pytest.raises(bodies.Unacceptable) as refused:
            bodies.loads(raw)
        assert refused.value.reason.render("en"), name
    assert bodies.loads(b'{"a": [1, 2.5, "\xe5\xad\x97", null, true]}') == {"a": [1, 2.5, "字", None, True]}


# ---------------------------------------------------------------- the NDJSON import


def _line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def _subject_line(subject_id: str) -> bytes:
    return _line({"kind": "subject", "id": subject_id} | SUBJECT)


def test_an_unacceptable_import_line_is_one_rejected_line_and_the_others_land(api):
    body = (
        _subject_line("s-1")
        + b'{"kind": "subject", "id": "s-2", "a":' * 5_000
        + b"\n"
        + _subject_line("s-3")
        + b'{"kind": "subject", "id": "s-4", "name": "x", "name": "y", "subject_type": "enterprise"}\n'
        + b'{"kind": "subject", "id": "s-5", "name": "\xff"}\n'
        + _subject_line("s-6")
    )
    r = api.client.post(f"{API}/import", content=body, headers=api.admin | {"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 3
    assert [(x["line"], x["code"]) for x in out["rejected"]] == [
        (2, "MALFORMED_BODY"),
        (4, "MALFORMED_BODY"),
        (5, "MALFORMED_BODY"),
    ]
    for subject_id in ("s-1", "s-3", "s-6"):
        assert api.client.get(f"{API}/subjects/{subject_id}/quotas", headers=api.admin).status_code == 200


def test_line_numbers_and_counts_are_exact_across_batches(limited, admin_headers):
    with TestClient(limited(import_batch_lines=2, max_body_bytes=2048), raise_server_exceptions=False) as client:
        lines = [
            _subject_line("s-1"),
            b"[" * 40 + b"]" * 40 + b"\n",  # 2: too deep
            b"   \n",  # 3: blank, skipped
            _subject_line("s-4"),
            b'{"kind": "subject", "id": "s-5", "pad": "' + b"x" * 3000 + b'"}\n',  # 5: longer than a body may be
            _subject_line("s-6"),
            _line({"kind": "planet", "id": "p-7"}),  # 7: unknown kind
            _subject_line("s-8"),
            _subject_line("s-9"),
        ]
        r = client.post(
            f"{API}/import", content=b"".join(lines), headers=admin_headers | {"Content-Type": "application/x-ndjson"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 5
        assert [(x["line"], x["code"]) for x in r.json()["rejected"]] == [
            (2, "MALFORMED_BODY"),
            (5, "PAYLOAD_TOO_LARGE"),
            (7, "VALIDATION_ERROR"),
        ]


def test_an_import_past_its_own_limit_stops_with_413(limited, admin_headers):
    with TestClient(limited(max_import_bytes=4096), raise_server_exceptions=False) as client:
        ndjson = {"Content-Type": "application/x-ndjson"}
        declared = b"".join(_subject_line(f"s-{n}") for n in range(100))
        r = client.post(f"{API}/import", content=declared, headers=admin_headers | ndjson)
        assert r.status_code == 413
        assert r.json()["code"] == "PAYLOAD_TOO_LARGE"

        def chunked():
            for n in range(100):
                yield _subject_line(f"t-{n}")

        r = client.post(f"{API}/import", content=chunked(), headers=admin_headers | ndjson)
        assert r.status_code == 413, r.text
        assert r.json()["code"] == "PAYLOAD_TOO_LARGE"
        assert r.json()["accepted"] >= 0


def test_the_import_is_split_into_lines_as_they_arrive():
    async def chunks():
        for part in (b'{"a":1}\n{"b"', b":2}\n\n", b"x" * 10, b"y" * 10, b"\n", b'{"c":3}'):
            yield part

    async def collect():
        return [item async for item in bodies.ndjson_lines(chunks(), max_line=15)]

    assert asyncio.run(collect()) == [(1, b'{"a":1}'), (2, b'{"b":2}'), (3, b""), (4, None), (5, b'{"c":3}')]


def test_an_import_with_an_idempotency_key_is_replayed_and_its_body_hashed_as_it_streams(api):
    headers = api.admin | {"Content-Type": "application/x-ndjson", "Idempotency-Key": "import-1"}
    body = _subject_line("s-1") + _subject_line("s-2")
    first = api.client.post(f"{API}/import", content=body, headers=headers)
    assert first.status_code == 200, first.text
    again = api.client.post(f"{API}/import", content=body, headers=headers)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert [a["action"] for a in api.audit("s-1")] == ["subject.created"]
    other = api.client.post(f"{API}/import", content=body + _subject_line("s-3"), headers=headers)
    assert other.status_code == 422
    assert other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_of_another_type_on_a_json_route_is_malformed_too(client, admin_headers, content_type):
    headers = admin_headers | ({"Content-Type": content_type} if content_type else {})
    for raw in (UNACCEPTABLE["deep"], json.dumps(SUBJECT).encode(), b"name=x"):
        r = client.put(f"{API}/subjects/s-1", content=raw, headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "MALFORMED_BODY"
