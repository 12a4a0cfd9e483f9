"""R-60: the ownership record's consents are checkable against the audit trail's hash chain — each names the
audit row that carries it, whose content (party, decision, agreement version, actor, time) and hash a verifier
recomputes from the exported trail alone, link by link from the chain's start."""

import datetime as dt

import sqlalchemy as sa

from guanhao.audit.service import GENESIS, row_hash
from tests.factories import Api

API = "/api/v1"


def export(api: Api) -> list[dict]:
    """The whole trail as staff export it, page by page."""
    rows, cursor = [], None
    while True:
        r = api.client.get(f"{API}/admin/audit", params={"cursor": cursor} if cursor else {}, headers=api.admin)
        assert r.status_code == 200, r.text
        page = r.json()
        if not page["items"]:
            return rows
        rows += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def chain_verifies(rows: list[dict], chain: str) -> dict[int, dict]:
    """What anyone holding the export can do: recompute every row hash of one chain and its links."""
    prev, seen = GENESIS, {}
    for row in sorted((r for r in rows if r["chain"] == chain), key=lambda r: r["seq"]):
        content = {
            "at": dt.datetime.fromisoformat(row["at"]),
            "actor": row["actor"],
            "action": row["action"],
            "target_kind": row["target_kind"],
            "target_id": row["target_id"],
            "subject_id": row["subject_id"],
            "shop_id": row["shop_id"],
            "from_state": row["from"],
            "to_state": row["to"],
            "detail": row["detail"],
        }
        assert row["prev_hash"] == prev, f"link broken at {row['seq']}"
        assert row_hash(prev, content) == row["row_hash"], f"row {row['seq']} does not match its hash"
        prev = row["row_hash"]
        seen[row["seq"]] = row
    return seen


def _upgraded(api: Api) -> tuple[str, str, str]:
    subject_id, shop_id, _ = api.ready_shop()
    merchant = api.merchant(subject_id)
    app_id = api.submit(shop_id, merchant).json()["application_id"]
    assert api.accept(app_id).status_code == 200
    return subject_id, shop_id, app_id


def _record(api: Api, shop_id: str) -> dict:
    r = api.client.get(f"{API}/shops/{shop_id}/official-account/ownership-record", headers=api.admin)
    assert r.status_code == 200, r.text
    return r.json()


def test_r60_each_consent_of_the_record_names_its_row_in_the_verified_chain(api):
    subject_id, shop_id, app_id = _upgraded(api)
    record = _record(api, shop_id)
    chain = chain_verifies(export(api), subject_id)
    assert {c["party"] for c in record["consents"]} == {"merchant", "holder"}
    for consent in record["consents"]:
        row = chain[consent["audit_seq"]]
        assert (consent["chain"], consent["row_hash"]) == (subject_id, row["row_hash"])
        assert row["target_id"] == app_id
        assert row["detail"]["consent"] == {
            "party": consent["party"],
            "decision": consent["decision"],
            "agreement_version": consent["agreement_version"],
        }
        assert row["actor"] == consent["actor"]
        assert dt.datetime.fromisoformat(row["at"]) == dt.datetime.fromisoformat(consent["at"])
    # the chain's head named by the record is in the verified chain too
    assert chain[record["audit_chain"]["head_seq"]]["row_hash"] == record["audit_chain"]["head_hash"]


def test_r60_a_consent_changed_behind_the_trails_back_no_longer_matches_a_row(api, engine):
    """The consents table is not the evidence: a consent edited there finds no audit row that carries it."""
    _, shop_id, app_id = _upgraded(api)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE consents SET agreement_version = 'forged' WHERE application_id = :a AND party = 'holder'"),
            {"a": app_id},
        )
    holder = next(c for c in _record(api, shop_id)["consents"] if c["party"] == "holder")
    assert holder["agreement_version"] == "forged"
    assert (holder["audit_seq"], holder["row_hash"]) == (None, None)
