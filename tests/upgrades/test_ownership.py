"""The ownership record (升级凭证, SPEC R-60): who consented, which subject, every operator since, each
history line pointing at its audit row, and a digest anyone can recompute."""

import copy
import json

from guanhao.upgrades.ownership import digest_of
from tests.factories import Api, person

API = "/api/v1"


def record_of(api: Api, shop_id: str, headers: dict | None = None):
    return api.client.get(f"{API}/shops/{shop_id}/official-account/ownership-record", headers=headers or api.admin)


def change_operator(api: Api, shop_id: str, new: dict, headers: dict) -> dict:
    r = api.client.post(f"{API}/shops/{shop_id}/official-account/operator-changes", json=new, headers=headers)
    assert r.status_code == 201, r.text
    change_id = r.json()["change_id"]
    r = api.client.get(f"{API}/sandbox/sms", params={"phone": new["phone"]}, headers=api.admin)
    assert r.status_code == 200, r.text
    code = r.json()["items"][0]["code"]
    r = api.client.post(
        f"{API}/shops/{shop_id}/official-account/operator-changes/{change_id}/verify",
        json={"code": code},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return r.json()


def all_audit_rows(api: Api) -> dict[int, dict]:
    rows, cursor = {}, None
    while True:
        r = api.client.get(f"{API}/admin/audit", params={"cursor": cursor} if cursor else {}, headers=api.admin)
        assert r.status_code == 200, r.text
        if not r.json()["items"]:  # caught up
            return rows
        rows |= {row["seq"]: row for row in r.json()["items"]}
        cursor = r.json()["next_cursor"]


def upgraded_with_operator_change(api: Api):
    holder = person(name="李四海")
    second = person(name="周五行")
    subject_id, shop_id, account_id = api.ready_shop(holder=holder)
    merchant = api.merchant(subject_id)
    r = api.submit(shop_id, merchant)
    assert r.status_code == 201, r.text
    app_id = r.json()["application_id"]
    assert api.accept(app_id).status_code == 200
    assert api.application(app_id)["status"] == "succeeded"
    change_operator(api, shop_id, second, merchant)
    return subject_id, shop_id, account_id, app_id, merchant, holder, second


def test_r60_record_lists_consents_subject_operators_and_history(api):
    subject_id, shop_id, account_id, app_id, merchant, holder, second = upgraded_with_operator_change(api)
    r = record_of(api, shop_id, merchant)
    assert r.status_code == 200, r.text
    record = r.json()

    assert record["subject"]["subject_id"] == subject_id
    assert record["shop"]["shop_id"] == shop_id
    assert record["account"]["account_id"] == account_id
    assert record["upgrade"]["application_id"] == app_id
    assert record["upgrade"]["origin"] == "manual"

    parties = {c["party"]: c for c in record["consents"]}
    assert set(parties) == {"merchant", "holder"}
    assert parties["merchant"]["decision"] == "agreed"
    assert parties["holder"]["decision"] == "accepted"
    assert all(c["agreement_version"] and c["at"] for c in record["consents"])

    first, now = record["operators"]
    assert first["operator"]["name"] == "李**"
    assert first["since"] == record["upgrade"]["upgraded_at"]
    assert first["until"] is not None
    assert now["operator"]["name"] == "周**"
    assert now["since"] == first["until"] and now["until"] is None
    assert now["operator"]["id_number"].endswith(second["id_number"][-4:])

    actions = [line["action"] for line in record["history"]]
    assert "operator.changed" in actions
    assert any(line["target_id"] == app_id and line["to"] == "succeeded" for line in record["history"])


def test_r60_history_lines_match_the_audit_trail(api):
    _, shop_id, account_id, app_id, *_ = upgraded_with_operator_change(api)
    record = record_of(api, shop_id).json()
    trail = all_audit_rows(api)
    assert record["history"]
    for line in record["history"]:
        row = trail[line["audit_seq"]]
        assert row["row_hash"] == line["row_hash"]
        assert (row["action"], row["target_id"], row["from"], row["to"], row["actor"]) == (
            line["action"],
            line["target_id"],
            line["from"],
            line["to"],
            line["actor"],
        )
    # every audit row about the account or its application is in the record
    about = [seq for seq, row in trail.items() if row["target_id"] in (account_id, app_id)]
    assert sorted(about) == [line["audit_seq"] for line in record["history"]]


def test_r60_digest_recomputes_and_changes_with_any_field(api):
    _, shop_id, *_ = upgraded_with_operator_change(api)
    record = record_of(api, shop_id).json()
    assert digest_of(record) == record["digest"]
    assert digest_of(json.loads(json.dumps(record))) == record["digest"]

    def tampered(mutate) -> str:
        other = copy.deepcopy(record)
        mutate(other)
        return digest_of(other)

    assert tampered(lambda r: r["subject"].update(name="别的公司")) != record["digest"]
    assert tampered(lambda r: r["consents"][0].update(agreement_version="v0")) != record["digest"]
    assert tampered(lambda r: r["operators"][1].update(since=r["operators"][0]["since"])) != record["digest"]
    assert tampered(lambda r: r["history"][-1].update(row_hash="0" * 64)) != record["digest"]
    assert tampered(lambda r: r["history"].pop(0)) != record["digest"]


def test_r60_no_record_before_an_upgrade(api):
    subject_id, shop_id, _ = api.ready_shop()
    r = record_of(api, shop_id)
    assert r.status_code == 409
    assert r.json()["code"] == "NOT_UPGRADED"
    merchant = api.merchant(subject_id)
    app_id = api.submit(shop_id, merchant).json()["application_id"]
    assert record_of(api, shop_id, merchant).json()["code"] == "NOT_UPGRADED"
    assert api.accept(app_id).status_code == 200
    assert record_of(api, shop_id, merchant).status_code == 200


def test_r62_other_merchant_gets_404(api):
    _, shop_id, *_ = upgraded_with_operator_change(api)
    stranger = api.merchant(api.subject())
    r = record_of(api, shop_id, stranger)
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND"
    assert "digest" not in r.text


def test_r50_record_holds_personal_data_masked_only(api):
    _, shop_id, _, _, merchant, holder, second = upgraded_with_operator_change(api)
    text = record_of(api, shop_id, merchant).text
    for p in (holder, second):
        assert p["id_number"] not in text
        assert p["phone"] not in text
        assert p["name"] not in text
    assert "李**" in text and "周**" in text


def test_r60_history_lines_name_their_chain_and_the_record_anchors_the_subject_chain(api):
    subject_id, shop_id, *_ = upgraded_with_operator_change(api)
    record = record_of(api, shop_id).json()
    trail = all_audit_rows(api)
    for line in record["history"]:
        assert trail[line["audit_seq"]]["chain"] == line["chain"]
    # the account was synced in before it belonged to anyone: its first row is in the no-subject chain
    assert {line["chain"] for line in record["history"]} == {subject_id, "-"}
    subject_rows = [seq for seq, row in trail.items() if row["chain"] == subject_id]
    anchor = record["audit_chain"]
    assert anchor["chain"] == subject_id
    assert anchor["head_seq"] == max(subject_rows)
    assert anchor["head_hash"] == trail[max(subject_rows)]["row_hash"]


def test_r60_operators_follow_the_trail_even_when_the_sandbox_clock_goes_back(api):
    """The sandbox clock may be set backwards (API.md); the record still lists every operator since the upgrade."""
    import datetime as dt

    t1 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    api.set_clock(t1)
    holder = person(name="李四海")
    subject_id, shop_id, _ = api.ready_shop(holder=holder)
    merchant = api.merchant(subject_id)
    assert api.upgrade(shop_id)["status"] == "succeeded"
    api.set_clock(t1 - dt.timedelta(days=1))
    change_operator(api, shop_id, person(name="周五行"), merchant)
    record = record_of(api, shop_id, merchant).json()
    assert [o["operator"]["name"] for o in record["operators"]] == ["李**", "周**"]
    assert record["operators"][0]["until"] is not None and record["operators"][1]["until"] is None
