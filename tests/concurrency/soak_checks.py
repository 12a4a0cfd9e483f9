"""The soak's end (issue 8): wait for the waves and the outbox, then every invariant checked in SQL, and the
report of what the clients did."""

import os
import subprocess
import time
from collections import Counter, defaultdict

import httpx
import sqlalchemy as sa

from guanhao.policy import get_policy
from guanhao.upgrades import quotas, rules
from tests.concurrency.soak import API, TRANSITION_ACTIONS, Tally, World
from tests.concurrency.soak_processes import GUANHAO, Sink


def settle(client: httpx.Client, admin: dict, sql: sa.Engine, tally: Tally, *, timeout: float) -> None:
    """Waits for the waves to end and the outbox to be delivered."""
    deadline = time.monotonic() + timeout
    for wave_id in tally.waves:
        while client.get(f"{API}/admin/auto-upgrade-waves/{wave_id}", headers=admin).json()["status"] == "running":
            assert time.monotonic() < deadline, f"wave {wave_id} still running"
            time.sleep(0.2)
    while True:
        with sql.connect() as conn:
            events = conn.execute(sa.text("SELECT count(*) FROM outbox_events")).scalar()
            delivered = conn.execute(
                sa.text("SELECT count(*) FROM webhook_deliveries WHERE status <> 'pending'")
            ).scalar()
        if delivered >= events:
            return
        if time.monotonic() > deadline:
            return  # `invariants` names what is still pending
        time.sleep(0.5)


def invariants(sql: sa.Engine, world: World, tally: Tally, sink: Sink | None) -> list[str]:
    """Every invariant, in SQL; a sentence per violation."""
    policy = get_policy()
    bad: list[str] = []
    with sql.connect() as conn:

        def q(text: str, **params):
            return conn.execute(sa.text(text), params)

        # Quota pools: held is what the slots say, never above the largest quota the subject had.
        most = {
            t: max(
                rules.quota_totals(policy, subject_type="enterprise", cross_border=cb, bound_followers=f)[t]
                for cb in (False, True)
                for f in (0, 10**9)
            )
            for t in ("main", "vertical", "dedicated")
        }
        pools = q("SELECT p.key, p.held, (SELECT count(*) FROM slots s WHERE s.pool = p.key) FROM pools p").all()
        for key, held, used in pools:
            if held != used:
                bad.append(f"pool {key}: held {held} but {used} slots")
            if key.startswith("quota:") and used > most[key.rsplit(":", 1)[1]]:
                bad.append(f"pool {key}: {used} slots over the quota {most[key.rsplit(':', 1)[1]]}")
            if key.startswith("operator:") and used > policy.operators.capacity:
                bad.append(f"pool {key}: {used} operator places over {policy.operators.capacity} (R-41)")

        # Each live application holds its type's slot and its operator's place; an ended one holds nothing.
        operators = dict(q("SELECT application_id, operator_id_hash FROM official_accounts").all())
        held: dict[str, list] = defaultdict(list)
        for app_id, pool, account_id in q("SELECT application_id, pool, account_id FROM slots"):
            held[app_id].append((pool, account_id))
        for app_id, status, subject_id, account_type, account_id, op_hash in q(
            "SELECT id, status, subject_id, account_type, account_id, operator_id_hash FROM upgrade_applications"
        ):
            want = []
            if status in ("submitted", "reviewing", "succeeded"):
                operator = operators.get(app_id, op_hash) if status == "succeeded" else op_hash
                want = sorted(
                    [
                        (quotas.quota_pool(subject_id, account_type), account_id),
                        (quotas.operator_pool(operator), account_id),
                    ]
                )
            if sorted(held.pop(app_id, [])) != want:
                bad.append(f"application {app_id} ({status}) holds {held.get(app_id)} instead of {want}")
        bad += [f"slots of unknown application {a}" for a in held]

        # one application in progress per shop.
        for shop_id, n in q(
            "SELECT shop_id, count(*) FROM upgrade_applications WHERE status IN ('submitted', 'reviewing') "
            "GROUP BY shop_id HAVING count(*) > 1"
        ):
            bad.append(f"shop {shop_id}: {n} applications in progress")

        # one shop per account; one official account per shop, from its succeeded application.
        for account_id, n in q(
            "SELECT official_account_id, count(*) FROM shops WHERE official_account_id IS NOT NULL "
            "GROUP BY official_account_id HAVING count(*) > 1"
        ):
            bad.append(f"account {account_id} bound to {n} shops")
        succeeded = q("SELECT count(*) FROM upgrade_applications WHERE status = 'succeeded'").scalar()
        records = q(
            """SELECT count(*) FROM official_accounts o
               JOIN upgrade_applications a ON a.id = o.application_id AND a.status = 'succeeded'
                    AND a.shop_id = o.shop_id AND a.account_id = o.account_id
               JOIN shops s ON s.id = o.shop_id AND s.official_account_id = o.account_id"""
        ).scalar()
        total_records = q("SELECT count(*) FROM official_accounts").scalar()
        if not succeeded == records == total_records:
            bad.append(f"{succeeded} succeeded applications, {total_records} official accounts, {records} consistent")

        # What the clients were told was created is what the database holds, no more, no less.
        manual = set(q("SELECT id FROM upgrade_applications WHERE origin = 'manual'").scalars())
        if manual != tally.submitted:
            bad.append(
                f"applications: {len(tally.submitted - manual)} answered 201 but missing, "
                f"{len(manual - tally.submitted)} present but never answered 201"
            )

        # posting counters equal the posts accepted, and never pass the limit.
        counted = Counter(dict(q("SELECT account_id, sum(used) FROM posting_counters GROUP BY account_id").all()))
        if +counted != +tally.posts:
            bad.append(f"posting counters {dict(counted)} but posts accepted {dict(tally.posts)}")
        for account_id, day, used in q("SELECT account_id, day, used FROM posting_counters WHERE used > :m", m=100):
            bad.append(f"account {account_id} posted {used} times on {day}")

        # every transition has one audit row and one event, and the rows walk the state
        # machine from the start to the application's state.
        audit_rows = q(
            "SELECT target_id, action, from_state, to_state FROM audit_log "
            "WHERE target_kind = 'upgrade_application' AND action = ANY(:actions) ORDER BY seq",
            actions=list(TRANSITION_ACTIONS),
        ).all()
        trail = Counter((r.target_id, r.action) for r in audit_rows)
        outbox = Counter(
            q(
                "SELECT data->>'application_id', type FROM outbox_events WHERE type = ANY(:types)",
                types=list(TRANSITION_ACTIONS),
            ).all()
        )
        if trail != outbox:
            bad.append(
                f"transitions: audit {sum((trail - outbox).values())} rows without an event, "
                f"{sum((outbox - trail).values())} events without an audit row"
            )
        bad += [f"transition {k} recorded {n} times" for k, n in (trail + outbox).items() if n != 2]
        walked: dict[str, str | None] = {}
        for r in audit_rows:
            if walked.get(r.target_id) != r.from_state:
                bad.append(f"application {r.target_id}: {r.from_state}→{r.to_state} after {walked.get(r.target_id)}")
            walked[r.target_id] = r.to_state
        for app_id, status in q("SELECT id, status FROM upgrade_applications"):
            if walked.get(app_id) != status:
                bad.append(f"application {app_id} is {status}, its trail ends at {walked.get(app_id)}")

        # Operator and login-phone changes: one audit row, one event, one verified change each.
        for kind, action in (("operator", "operator.changed"), ("login_phone", "login_phone.changed")):
            rows = Counter(q("SELECT detail->>'change_id' FROM audit_log WHERE action = :a", a=action).scalars())
            events = Counter(q("SELECT data->>'change_id' FROM outbox_events WHERE type = :a", a=action).scalars())
            changes = Counter(
                q("SELECT id FROM pending_changes WHERE kind = :k AND status = 'verified'", k=kind).scalars()
            )
            if not rows == events == changes or set(rows.values()) - {1}:
                bad.append(f"{action}: {len(rows)} audit rows, {len(events)} events, {len(changes)} verified changes")
            if sum(changes.values()) != tally.verified[kind]:
                bad.append(f"{action}: {sum(changes.values())} verified, {tally.verified[kind]} answered 200")

        # each wave ended, its counter equal to the applications it made.
        for wave_id in tally.waves:
            status, upgraded = q("SELECT status, upgraded FROM auto_upgrade_waves WHERE id = :w", w=wave_id).one()
            made = q("SELECT count(*) FROM upgrade_applications WHERE wave_id = :w", w=wave_id).scalar()
            if status != "done" or upgraded != made:
                bad.append(f"wave {wave_id}: {status}, upgraded {upgraded}, {made} applications")

        # Webhooks: every event delivered (at least once) to the sink.
        if sink is not None:
            ids = set(q("SELECT event_id FROM outbox_events").scalars())
            missing = ids - set(sink.received)
            if missing:
                states = dict(q("SELECT status, count(*) FROM webhook_deliveries GROUP BY status").all())
                bad.append(f"{len(missing)} of {len(ids)} events never reached the sink (deliveries: {states})")

    verify = subprocess.run(
        [GUANHAO, "audit", "verify"], env=dict(os.environ), capture_output=True, text=True, timeout=120
    )
    if verify.returncode != 0 or "audit trail intact" not in verify.stderr + verify.stdout:
        bad.append(f"audit verify: {verify.stdout} {verify.stderr}")
    return bad


def report(tally: Tally, elapsed: float, requests: int, clients: int) -> str:
    lines = [
        f"soak: {requests} requests from {clients} clients in {elapsed:.1f} s ({requests / elapsed:.0f} requests/s)",
        "statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses.items())),
    ]
    per_action: dict[str, Counter] = defaultdict(Counter)
    for (action, status, code), n in tally.by_action.items():
        per_action[action][f"{status}{' ' + code if code else ''}"] += n
    for action, seen in sorted(per_action.items()):
        lines.append(f"  {action:9} " + ", ".join(f"{k}: {n}" for k, n in seen.most_common()))
    lines.append(
        f"applications created {len(tally.submitted)}, posts {sum(tally.posts.values())}, "
        f"verified operator changes {tally.verified['operator']}, phone rebinds {tally.verified['login_phone']}, "
        f"waves {len(tally.waves)}"
    )
    return "\n".join(lines)
