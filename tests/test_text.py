"""Names that hide things (issue 8 item 3, SPEC R-63): text fields are NFC-normalised; control, format
(bidi, zero-width, BOM) and noncharacter code points are refused as an error of the field that holds
them; a name shows at least one visible character; a licence date lies in 1900–2200."""

import json

import pytest

from tests.factories import person, phone

API = "/api/v1"

HIDDEN = {
    "c1_next_line": "杭州\u0085科技",
    "c1_csi": "杭州\u009b31m科技",
    "c0_escape": "杭州\x1b科技",
    "bidi_override": "杭州\u202e技科",
    "bidi_isolate": "杭州\u2066科技",
    "zero_width_space": "杭州\u200b科技",
    "zero_width_joiner": "杭州\u200d科技",
    "word_joiner": "杭州\u2060科技",
    "bom": "\ufeff杭州科技",
    "soft_hyphen": "杭州\u00adtech",
    "noncharacter": "杭州\ufdd0科技",
    "noncharacter_plane_end": "杭州\U0010ffff",
}

INVISIBLE = {
    "zero_width_only": "\u200b\u200b",
    "combining_only": "\u0301\u0308",
    "spaces_only": " \u3000 ",
    "line_break_inside": "杭州\n科技",
    "line_separator": "杭州\u2028科技",
}


def _subject(client, headers, name, subject_id="s-1"):
    return client.put(
        f"{API}/subjects/{subject_id}", json={"name": name, "subject_type": "enterprise"}, headers=headers
    )


def _fields(r) -> set[str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "VALIDATION_ERROR"
    return {e["field"] for e in body["errors"]}


@pytest.mark.parametrize("kind", sorted(HIDDEN))
def test_r63_a_hidden_code_point_is_a_field_error(client, admin_headers, kind):
    r = _subject(client, admin_headers, HIDDEN[kind])
    assert _fields(r) == {"name"}
    assert "U+" in r.json()["errors"][0]["message"]
    assert client.get(f"{API}/subjects/s-1/quotas", headers=admin_headers).status_code == 404


@pytest.mark.parametrize("kind", sorted(INVISIBLE))
def test_r63_a_name_needs_a_visible_character_on_one_line(client, admin_headers, kind):
    assert _fields(_subject(client, admin_headers, INVISIBLE[kind])) == {"name"}


def test_names_are_stored_nfc_normalised(client, admin_headers):
    decomposed = "Cafe\u0301 杭州"
    r = _subject(client, admin_headers, decomposed)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Café 杭州" == "Caf\u00e9 杭州"
    # Emoji and other visible non-Chinese text stay as they are.
    r = _subject(client, admin_headers, "茶 🍵 Tea", subject_id="s-2")
    assert r.status_code == 201
    assert r.json()["name"] == "茶 🍵 Tea"


def test_the_field_is_named_in_nested_bodies_too(api):
    r = api.client.put(
        f"{API}/accounts/a-1",
        json={
            "nickname": "示例官方号",
            "followers": 1,
            "status": "normal",
            "real_name_verified": True,
            "login_phone": phone(),
            "holder": person() | {"name": "王\u202e明"},
        },
        headers=api.admin,
    )
    assert _fields(r) == {"holder.name"}
    subject_id, shop_id, _ = api.ready_shop()
    r = api.submit(shop_id, operator=person() | {"name": "\u200b"})
    assert _fields(r) == {"operator.name"}
    r = api.client.post(f"{API}/admin/api-keys", json={"role": "admin", "label": "ops\u009b"}, headers=api.admin)
    assert _fields(r) == {"label"}


def test_an_import_line_with_a_hidden_code_point_is_one_rejected_line(api):
    lines = [
        {"kind": "subject", "id": "s-1", "name": "杭州科技", "subject_type": "enterprise"},
        {"kind": "subject", "id": "s-2", "name": "杭州\u202e科技", "subject_type": "enterprise"},
        {"kind": "subject", "id": "s-3", "name": "\u0301", "subject_type": "enterprise"},
    ]
    body = b"".join(json.dumps(x, ensure_ascii=False).encode() + b"\n" for x in lines)
    r = api.client.post(f"{API}/import", content=body, headers=api.admin | {"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200
    assert r.json()["accepted"] == 1
    assert [(x["line"], x["code"]) for x in r.json()["rejected"]] == [(2, "VALIDATION_ERROR"), (3, "VALIDATION_ERROR")]


@pytest.mark.parametrize(
    ("date", "status"),
    [("1899-12-31", 422), ("1900-01-01", 201), ("2200-12-31", 201), ("2201-01-01", 422), ("9999-12-31", 422)],
)
def test_a_licence_date_lies_between_1900_and_2200(client, admin_headers, date, status):
    r = client.put(
        f"{API}/subjects/s-1",
        json={"name": "杭州科技", "subject_type": "enterprise", "license_valid_until": date},
        headers=admin_headers,
    )
    assert r.status_code == status, r.text
    if status == 422:
        assert _fields(r) == {"license_valid_until"}


def test_the_service_level_check_names_the_code_point():
    from guanhao.schemas import refused_character

    assert refused_character("plain ascii\twith\ttabs\n") is None
    assert refused_character("中文名字") is None
    assert refused_character("a\u202eb") == "U+202E"
    assert refused_character("a\x00") == "U+0000"
    assert refused_character("\U0001fffe") == "U+1FFFE"
