"""The OpenAPI document is honest (issue: "a schemathesis run over every operation in the suite finds
no server error and no schema-violating acceptance"; API.md: error statuses and problem+json).

Schemathesis generates positive and negative requests for every operation of /api/v1/openapi.json
(its examples, coverage and fuzzing phases) and sends them to the ASGI app as the platform admin.
Each operation runs on a fresh database seeded with a subject, ready shops and applications in two
states; every other positive case that takes path ids is pointed at those real objects, so success
paths and their response schemas are exercised too, not only 404s.

`positive_data_acceptance` is left out on purpose: some refusals of schema-valid input cannot be put
in a JSON Schema (an opaque cursor the service never gave out, an unknown subject_id, an ID number
with a wrong check digit, an Idempotency-Key already used with another body) and are documented 422s.

GUANHAO_SCHEMATHESIS_EXAMPLES raises the number of examples per operation for a longer local run.
"""

import itertools
import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from guanhao.app import create_app
from tests.conftest import ADMIN_TOKEN

MAX_EXAMPLES = int(os.environ.get("GUANHAO_SCHEMATHESIS_EXAMPLES", "15"))
CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
]

config = schemathesis.Config.from_dict(
    {
        # The document's `bearer` scheme filled with the admin token: schemathesis then knows which of
        # its requests go without credentials on purpose (and expects 401 for them).
        "auth": {"openapi": {"bearer": {"bearer": ADMIN_TOKEN}}},
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "output": {"sanitization": {"enabled": False}},
    }
)
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app(), config=config)
# POST /import takes NDJSON: text on the wire.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")

STATS: Counter = Counter()
OPERATIONS: set[str] = set()
_alternate = itertools.count()
# Ids of the seeded objects, by path-parameter name; refreshed for every operation's database.
REAL: dict[str, str] = {}


@pytest.fixture
def seeded(api) -> dict[str, str]:
    subject_id, shop_id, account_id = api.ready_shop(api.subject("subj-st"))
    _, submitted_shop, _ = api.ready_shop(subject_id)
    _, big_shop, _ = api.ready_shop(subject_id, account_fields={"followers": 2_000_000})
    submitted = api.submit(submitted_shop).json()["application_id"]
    reviewing = api.upgrade(big_shop)["application_id"]  # waits for staff review (SPEC R-16)
    api.merchant(subject_id)
    REAL.clear()
    REAL.update(
        subject_id=subject_id,
        shop_id=shop_id,
        account_id=account_id,
        application_id=reviewing if next(_alternate) % 2 else submitted,
        token=api.token(submitted),
        job="expire-confirmations",
    )
    return dict(REAL)


def _point_at_real_objects(case) -> None:
    # Only positive cases: a negative case pointed at a real object could become valid.
    if not case.path_parameters or case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    if next(_alternate) % 2:
        case.path_parameters = {name: REAL.get(name, value) for name, value in case.path_parameters.items()}


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_every_operation_is_honest(case, seeded):
    if case.media_type == "application/x-ndjson" and case.body is not NOT_SET and not isinstance(case.body, str):
        # A "non-string" NDJSON body is still text once sent: no such request exists.
        STATS["skipped"] += 1
        return
    _point_at_real_objects(case)
    OPERATIONS.add(case.operation.label)
    STATS["cases"] += 1
    if case.meta is not None:
        STATS[case.meta.generation.mode.value] += 1
    response = case.call_and_validate(checks=CHECKS)
    STATS[f"{response.status_code // 100}xx"] += 1


def test_every_route_is_in_the_document_with_problem_errors():
    doc = create_app().openapi()
    ops = [(method, path) for path, item in doc["paths"].items() for method in item]
    assert len(ops) >= 27
    for method, path in ops:
        op = doc["paths"][path][method]
        assert not any(p["name"].lower() == "authorization" for p in op.get("parameters", [])), (method, path)
        for status, response in op["responses"].items():
            if status[0] in "45":
                assert set(response["content"]) == {"application/problem+json"}, (method, path, status)
        if method in ("post", "put", "patch", "delete") and "requestBody" in op:
            assert "400" in op["responses"], (method, path)


def test_a_405_lists_every_method_of_the_path(client, admin_headers):
    r = client.patch("/api/v1/sandbox/clock", headers=admin_headers | {"Idempotency-Key": "k-405"})
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST", "DELETE"}


def test_an_unauthenticated_retry_gets_401_not_a_key_conflict(client):
    # The first, malformed, attempt is answered 400 before the token is looked at; it must not hold the key.
    headers = {"Idempotency-Key": "k-401", "Content-Type": "application/json"}
    assert client.put("/api/v1/subjects/s-1", content=b"\x00", headers=headers).status_code == 400
    r = client.put("/api/v1/subjects/s-1", json={"name": "x", "subject_type": "enterprise"}, headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "UNAUTHENTICATED"


def test_clock_takes_rfc3339_only(client, admin_headers):
    for bad in (".0", "0", "1700000000", "2026-01-01", "2026-01-01T09:00+08:00"):
        r = client.post("/api/v1/sandbox/clock", json={"now": bad}, headers=admin_headers)
        assert r.status_code == 422, bad
    r = client.post("/api/v1/sandbox/clock", json={"now": "2026-01-01T09:00:00+08:00"}, headers=admin_headers)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module", autouse=True)
def _figures():
    yield
    if STATS["cases"]:
        print(f"\nschemathesis: {len(OPERATIONS)} operations, {dict(STATS)}")
