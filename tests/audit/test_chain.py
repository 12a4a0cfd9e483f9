"""The audit trail is tamper-evident (SPEC R-60): each subject's rows form a hash chain that
`guanhao audit verify` walks, naming the first row that was edited, removed or moved."""

import itertools
from contextlib import contextmanager

import sqlalchemy as sa
from typer.testing import CliRunner

from guanhao.audit import service as audit
from guanhao.cli import app as cli
from guanhao.db import session_scope
from tests.conftest import is_postgres
from tests.factories import Api, person

runner = CliRunner()


@contextmanager
def trail_unlocked(engine):
    """Steps behind the append-only triggers, as someone with direct database access could."""
    with engine.begin() as conn:
        if is_postgres():
            conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        else:
            conn.execute(sa.text("DROP TRIGGER audit_log_no_update"))
            conn.execute(sa.text("DROP TRIGGER audit_log_no_delete"))
        yield conn
        if is_postgres():
            conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
        else:
            for verb in ("UPDATE", "DELETE"):
                conn.execute(
                    sa.text(
                        f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                        f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {verb} refused'); END"
                    )
                )


def verify_cli():
    return runner.invoke(cli, ["audit", "verify"])


def full_flow(api: Api) -> tuple[str, str, str]:
    """A manual upgrade, a staff rejection, an operator change and a phone rebind: rows in several chains."""
    subject_id, shop_id, account_id = api.ready_shop()
    merchant = api.merchant(subject_id)
    assert api.upgrade(shop_id)["status"] == "succeeded"
    _, big_shop, _ = api.ready_shop(subject_id, account_fields={"followers": 2_000_000})
    app = api.upgrade(big_shop)
    r = api.client.post(
        f"/api/v1/admin/upgrade-applications/{app['application_id']}/reject",
        json={"reason": "资料不符"},
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    new = person()
    r = api.client.post(f"/api/v1/shops/{shop_id}/official-account/operator-changes", json=new, headers=merchant)
    assert r.status_code == 201, r.text
    code = api.client.get("/api/v1/sandbox/sms", params={"phone": new["phone"]}, headers=api.admin).json()["items"][0][
        "code"
    ]
    r = api.client.post(
        f"/api/v1/shops/{shop_id}/official-account/operator-changes/{r.json()['change_id']}/verify",
        json={"code": code},
        headers=merchant,
    )
    assert r.status_code == 200, r.text
    return subject_id, shop_id, account_id


def rows(engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.text("SELECT seq, chain, prev_hash, row_hash, subject_id FROM audit_log ORDER BY seq"))
        )


def test_r60_verify_says_intact_after_a_full_flow(api):
    full_flow(api)
    full_flow(api)
    result = verify_cli()
    assert result.exit_code == 0, result.output
    assert "audit trail intact" in result.output
    assert "BROKEN" not in result.output


def test_r60_an_edited_row_is_caught_with_its_seq(api, engine):
    subject_id, _, _ = full_flow(api)
    victim = [r for r in rows(engine) if r.chain == subject_id][2]
    with trail_unlocked(engine) as conn:
        conn.execute(sa.text("UPDATE audit_log SET actor = 'forged' WHERE seq = :s"), {"s": victim.seq})
    result = verify_cli()
    assert result.exit_code == 1, result.output
    assert f"BROKEN seq={victim.seq} chain={subject_id}" in result.output


def test_r60_an_edited_row_with_a_recomputed_own_hash_breaks_the_next_link(api, engine):
    subject_id, _, _ = full_flow(api)
    chain = [r for r in rows(engine) if r.chain == subject_id]
    victim, after = chain[1], chain[2]
    with session_scope() as session:
        entry = session.get(audit.AuditEntry, victim.seq)
        forged_hash = audit.row_hash(entry.prev_hash, audit.as_row(entry) | {"to_state": "forged"})
    with trail_unlocked(engine) as conn:
        conn.execute(
            sa.text("UPDATE audit_log SET to_state = 'forged', row_hash = :h WHERE seq = :s"),
            {"h": forged_hash, "s": victim.seq},
        )
    result = verify_cli()
    assert result.exit_code == 1
    assert f"BROKEN seq={after.seq} chain={subject_id}" in result.output


def test_r60_a_deleted_middle_row_is_caught_at_the_next_row(api, engine):
    subject_id, _, _ = full_flow(api)
    chain = [r for r in rows(engine) if r.chain == subject_id]
    victim, after = chain[3], chain[4]
    with trail_unlocked(engine) as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE seq = :s"), {"s": victim.seq})
    result = verify_cli()
    assert result.exit_code == 1
    assert f"BROKEN seq={after.seq} chain={subject_id}" in result.output
    assert "removed" in result.output


def test_r60_a_row_moved_to_another_subject_is_caught(api, engine):
    subject_id, _, _ = full_flow(api)
    other, _, _ = full_flow(api)
    victim = [r for r in rows(engine) if r.chain == subject_id][1]
    with trail_unlocked(engine) as conn:
        conn.execute(sa.text("UPDATE audit_log SET subject_id = :o WHERE seq = :s"), {"o": other, "s": victim.seq})
    result = verify_cli()
    assert result.exit_code == 1
    assert f"BROKEN seq={victim.seq} chain={subject_id}" in result.output


def test_r60_chains_are_per_subject_and_interleave(api):
    a = api.subject()
    b = api.subject()
    shops = {s: [api.ready_shop(s)[1] for _ in range(2)] for s in (a, b)}
    for i in range(2):
        for s in (a, b):
            assert api.upgrade(shops[s][i])["status"] == "succeeded"
    with session_scope() as session:
        chain_a = audit.chain_rows(session, a)
        chain_b = audit.chain_rows(session, b)
        assert audit.verify(session).ok
    # the two subjects' rows interleave in the trail...
    seqs_a = {r.seq for r in chain_a}
    seqs_b = {r.seq for r in chain_b}
    assert min(seqs_b) < max(seqs_a) and min(seqs_a) < max(seqs_b)
    # ...and each chain links only its own rows, starting from the genesis hash
    for chain, subject_id in ((chain_a, a), (chain_b, b)):
        assert chain[0].prev_hash == audit.GENESIS
        assert all(r.chain == subject_id == r.subject_id for r in chain)
        for prev, row in itertools.pairwise(chain):
            assert row.prev_hash == prev.row_hash
            assert row.row_hash == audit.row_hash(prev.row_hash, audit.as_row(row))


def test_r60_audit_api_shows_the_chain(api):
    subject_id = api.subject()
    api.subject(subject_id, name="改名")
    first, second = api.audit(subject_id)
    assert first["chain"] == second["chain"] == subject_id
    assert first["prev_hash"] == audit.GENESIS
    assert second["prev_hash"] == first["row_hash"]


def test_r60_verify_counts_every_row_and_chain(api, engine):
    full_flow(api)
    full_flow(api)
    with session_scope() as session:
        result = audit.verify(session)
    trail = rows(engine)
    assert result.ok
    assert result.rows == len(trail)
    assert result.chains == len({r.chain for r in trail})
