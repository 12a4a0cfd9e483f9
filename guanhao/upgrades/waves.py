"""Auto-upgrade waves (系统自动升级, SPEC R-11) that stay correct and cheap at a million shops.

A wave works in chunks, each one transaction: claim the next candidate shops (score ≥ the
minimum, not upgraded, not yet looked at by this wave) with FOR UPDATE SKIP LOCKED, load their
facts with a handful of set queries, ask the same pure rules as a merchant's application
(`rules.facts`, `rules.auto_decision`), and write the upgrades (applications, places in the quota
and operator pools, official-account records, audit rows, outbox events) and the wave's counters in
bulk. A killed wave loses at most its open chunk, which a resumed run redoes; several workers on one
wave never take the same shop. The wave itself moves through models.WAVE_TRANSITIONS, audited.
"""

import datetime as dt
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import case, exists, func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from guanhao import clock, errors
from guanhao.audit import service as audit
from guanhao.db import Session, among, bulk_insert, session_scope, unavailable
from guanhao.events import service as events
from guanhao.i18n import _l
from guanhao.policy import Policy
from guanhao.settings import get_settings
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.upgrades import facts, lifecycle, quotas, rules
from guanhao.upgrades import service as upgrades
from guanhao.upgrades.models import (
    IN_PROGRESS,
    WAVE_TRANSITIONS,
    AccountType,
    Application,
    OfficialAccount,
    Origin,
    State,
    Wave,
    WaveSkip,
    WaveState,
    WaveWorker,
)

CHUNK = 1000
OPTED_OUT = rules.OPTED_OUT
NEEDS_STAFF_REVIEW = rules.NEEDS_STAFF_REVIEW


@dataclass
class Outcome:
    scanned: int = 0
    upgraded: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    last_shop_id: str | None = None

    def add(self, other: "Outcome") -> None:
        self.scanned += other.scanned
        self.upgraded += other.upgraded
        self.skipped += other.skipped
        self.reasons.update(other.reasons)


class _BudgetExceeded(Exception):
    pass


# ---------------------------------------------------------------- starting and reading


def start(
    session: Session, *, limit: int, min_score: float | None, policy: Policy, actor: str, now: dt.datetime
) -> Wave:
    """R-11: a wave that upgrades at most `limit` shops (0 or more, R-63) scoring at least `min_score` (the
    policy's when None); audited (R-60). Workers do the work (`work`)."""
    if limit < 0:
        raise errors.ValidationFailed(_l("The limit must be 0 or more"))
    wave = Wave(
        id="wave_" + uuid.uuid4().hex[:16],
        status=WaveState.RUNNING.value,
        limit=limit,
        min_experience_score=policy.auto_upgrade.min_experience_score if min_score is None else min_score,
        scanned=0,
        upgraded=0,
        skipped=0,
        skip_reasons={},
        started_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(wave)
    audit.record(
        session,
        at=now,
        actor=actor,
        action="wave.started",
        target_kind="wave",
        target_id=wave.id,
        detail={"limit": limit, "min_experience_score": wave.min_experience_score},
    )
    session.flush()
    return wave


def get(session: Session, wave_id: str) -> Wave:
    wave = session.get(Wave, wave_id)
    if wave is None:
        raise errors.NotFound(_l("Wave {wave_id} not found", wave_id=wave_id))
    return wave


def recent(session: Session, *, limit: int, status: str | None = None) -> list[Wave]:
    """Waves newest first (the staff console's history), optionally of one state."""
    stmt = select(Wave).order_by(Wave.created_at.desc(), Wave.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(Wave.status == status)
    return list(session.scalars(stmt))


def running(session: Session) -> list[str]:
    """R-11: the waves some worker should be working on, oldest first (workers pick them up by themselves)."""
    return list(
        session.scalars(select(Wave.id).where(Wave.status == WaveState.RUNNING.value).order_by(Wave.created_at))
    )


def workers(session: Session, wave_id: str) -> list[WaveWorker]:
    """Each worker's share of a wave: chunks and shops it committed, its last heartbeat."""
    return list(
        session.scalars(select(WaveWorker).where(WaveWorker.wave_id == wave_id).order_by(WaveWorker.first_seen_at))
    )


def _heartbeat(session: Session, wave_id: str, worker: str, outcome: Outcome) -> None:
    """A worker's share moves in the chunk's own transaction, so it is exact even for a worker killed next."""
    at = clock.real_now()
    row = session.get(WaveWorker, (wave_id, worker))
    if row is None:
        row = WaveWorker(
            wave_id=wave_id, worker_id=worker, chunks=0, scanned=0, upgraded=0, skipped=0, first_seen_at=at
        )
        session.add(row)
    row.chunks += 1
    row.scanned += outcome.scanned
    row.upgraded += outcome.upgraded
    row.skipped += outcome.skipped
    row.heartbeat_at = at


# ---------------------------------------------------------------- the work


def work(
    wave_id: str,
    policy: Policy,
    *,
    chunk: int = CHUNK,
    progress: Callable[[Wave], None] | None = None,
    tally: Outcome | None = None,
    worker: str | None = None,
    stop: Callable[[], bool] | None = None,
) -> Wave:
    """R-11: runs (or resumes, or joins) a wave until it is done. Safe to run in several processes at once.

    `tally`, if given, adds up what this call itself committed (one worker's share of the wave); `worker`
    names the caller in the wave's per-worker progress. `stop` is asked between chunks: when it answers
    True the call returns with the wave still running, for another worker (or this one, later) to go on."""
    after = ""
    restarted = False
    retries = 0
    while True:
        try:
            # A chunk holds its shops FOR UPDATE, and a request for one of them waits for the whole chunk: it must
            # never wait behind a chunk that itself waits (for a pool a sweep or a merchant holds, for a lapsed
            # application being ended). So a chunk waits at most `wave_lock_wait` for any lock, then is redone.
            with session_scope(lock_timeout=get_settings().wave_lock_wait) as session:
                now = clock.now(session)
                wave = get(session, wave_id)
                if wave.status != WaveState.RUNNING or (stop is not None and stop()):
                    return wave
                budget = wave.limit - wave.upgraded
                outcome = (
                    None
                    if budget <= 0
                    else _chunk(session, wave, policy, now=now, after=after, size=chunk, budget=budget)
                )
                if outcome is None:
                    left = budget > 0 and _claim(
                        session, wave_id=wave.id, min_score=wave.min_experience_score, after="", size=1, lock=False
                    )
                    if left:
                        # Candidates left that this worker could not claim: another worker holds them in a chunk
                        # not yet committed (or a killed one held them when we passed). Once we have swept from the
                        # start already, wait for that chunk to end — a lock wait, no polling — then sweep again:
                        # a wave is done only when no candidate is left, never while a chunk may yet roll back.
                        if restarted:
                            _wait_for_shop(session, left[0].id)
                        after, restarted = "", True
                        continue
                    _finish(session, wave_id, now=now)
                    return get(session, wave_id)
                after = outcome.last_shop_id or after
                if worker is not None:
                    _heartbeat(session, wave_id, worker, outcome)
            retries = 0
            if tally is not None:
                tally.add(outcome)
            if progress is not None:
                progress(wave)  # the chunk's own row, counters as committed (sessions keep values after commit)
        except (_BudgetExceeded, IntegrityError, OperationalError) as exc:
            if unavailable(exc):
                # The database is restarting or busy: wait and redo the chunk; that is not a conflict.
                time.sleep(get_settings().retry_after)
                continue
            # Another worker or a manual application took the budget or a place first: redo the chunk.
            retries += 1
            if retries > 20:
                with session_scope() as session:
                    fail(session, wave_id, "gave up after repeated conflicts", now=clock.now(session))
                raise


def _wait_for_shop(session: Session, shop_id: str) -> None:
    """Blocks until whichever transaction holds `shop_id` (another worker's chunk) commits or rolls back. SQLite
    has no row locks: its writers never overlap, so there is nothing to wait for."""
    session.execute(select(Shop.id).where(Shop.id == shop_id).with_for_update(of=Shop))


def transition(
    session: Session, wave: Wave, to: WaveState, *, actor: str, now: dt.datetime, error: str | None = None
) -> Wave:
    """The one way a wave changes state (models.WAVE_TRANSITIONS, R-11); every change is audited with the
    figures (R-60)."""
    current = WaveState(wave.status)
    if to not in WAVE_TRANSITIONS[current]:
        raise errors.InvalidTransition(
            _l("A wave in state {state} cannot become {to}", state=current.value, to=to.value)
        )
    wave.status = to.value
    wave.updated_at = now
    wave.finished_at = None if to == WaveState.RUNNING else now
    wave.error = error[:500] if error else None
    audit.record(
        session,
        at=now,
        actor=actor,
        action=f"wave.{to.value}",
        target_kind="wave",
        target_id=wave.id,
        from_state=current.value,
        to_state=to.value,
        detail={
            "scanned": wave.scanned,
            "upgraded": wave.upgraded,
            "skipped": wave.skipped,
            **({"error": wave.error} if error else {}),
        },
    )
    session.flush()
    return wave


def _finish(session: Session, wave_id: str, *, now: dt.datetime) -> None:
    wave = session.get_one(Wave, wave_id, with_for_update=True)
    if wave.status == WaveState.RUNNING:
        transition(session, wave, WaveState.DONE, actor=wave.started_by, now=now)


def fail(session: Session, wave_id: str, error: str, *, now: dt.datetime) -> None:
    """A wave that cannot go on is failed — audited like one that finishes (R-60); it can be resumed (R-11)."""
    wave = session.get_one(Wave, wave_id, with_for_update=True)
    if wave.status == WaveState.RUNNING:
        transition(session, wave, WaveState.FAILED, actor=f"wave:{wave.id}", now=now, error=error)


def cancel(session: Session, wave_id: str, *, actor: str, now: dt.datetime) -> Wave:
    """R-11: staff stop a running (or failed) wave: the chunks in hand finish, no new one starts; what it upgraded
    stays. A wave that is done or cancelled already is refused (WAVE_FINISHED)."""
    wave = session.get(Wave, wave_id, with_for_update=True)
    if wave is None:
        raise errors.NotFound(_l("Wave {wave_id} not found", wave_id=wave_id))
    if WaveState.CANCELLED not in WAVE_TRANSITIONS[WaveState(wave.status)]:
        raise errors.WaveFinished(_l("The wave is {state} already", state=wave.status))
    return transition(session, wave, WaveState.CANCELLED, actor=actor, now=now)


def reopen(session: Session, wave_id: str, *, actor: str = "cli", now: dt.datetime) -> Wave:
    """For `waves resume`: a wave that died (or was marked done by a worker that lost a race) runs again (R-11)."""
    wave = session.get(Wave, wave_id, with_for_update=True)
    if wave is None:
        raise errors.NotFound(_l("Wave {wave_id} not found", wave_id=wave_id))
    if wave.status in (WaveState.FAILED, WaveState.DONE) and wave.upgraded < wave.limit:
        transition(session, wave, WaveState.RUNNING, actor=actor, now=now)
    return wave


def _chunk(
    session: Session, wave: Wave, policy: Policy, *, now: dt.datetime, after: str, size: int, budget: int
) -> Outcome | None:
    """R-11: one chunk, one transaction: claim, decide, write, and move the wave's counters, never past its
    limit."""
    # No more shops than the budget could upgrade: a wave of 6 does not hold a thousand shops while it works.
    size = min(size, budget)
    shops = _claim(session, wave_id=wave.id, min_score=wave.min_experience_score, after=after, size=size)
    if not shops:
        return None
    plan = _plan(session, shops, policy, now=now, budget=budget, planned=Counter())
    actor = f"wave:{wave.id}"
    _write(session, plan, policy, wave_id=wave.id, actor=actor, now=now)

    # The counters move with the work, under the wave's row lock, and never past the limit. NO KEY UPDATE, the
    # lock an UPDATE of the counters takes anyway: the skip rows written above hold KEY SHARE on the wave row
    # (their foreign key), and a FOR UPDATE here would deadlock two workers that both wrote skips.
    locked = session.scalars(
        select(Wave).where(Wave.id == wave.id).with_for_update(key_share=True).execution_options(populate_existing=True)
    ).one()
    if locked.upgraded + plan.outcome.upgraded > locked.limit:
        raise _BudgetExceeded()
    locked.scanned += plan.outcome.scanned
    locked.upgraded += plan.outcome.upgraded
    locked.skipped += plan.outcome.skipped
    locked.skip_reasons = dict(Counter(locked.skip_reasons) + plan.outcome.reasons)
    locked.updated_at = now
    session.flush()
    return plan.outcome


def _claim(
    session: Session, *, wave_id: str | None, min_score: float, after: str, size: int, lock: bool = True
) -> list:
    """R-11: the next candidate shops — scoring at least the minimum, not upgraded, not yet looked at by this
    wave — locked SKIP LOCKED, so that two workers never take one shop."""
    stmt = (
        select(
            Shop.id,
            Shop.subject_id,
            Shop.shop_type,
            Shop.status,
            Shop.official_account_id,
            Account.followers,
            Account.status.label("account_status"),
            Account.real_name_verified,
            Account.violations_90d,
            Account.holder_id_hash,
            Account.holder_name_enc,
            Account.holder_id_number_enc,
            Account.holder_phone_enc,
            Account.login_phone_enc,
        )
        .select_from(Shop)
        .outerjoin(Account, Account.id == Shop.official_account_id)
        .where(Shop.experience_score >= min_score, Shop.id > after)
        # `shop_id > after` repeats what the correlation implies: it bounds a merge anti-join's inner index scan,
        # which would otherwise read every upgraded (or skipped) shop below `after` on every chunk (quadratic).
        .where(~exists().where(OfficialAccount.shop_id == Shop.id, OfficialAccount.shop_id > after))
        .order_by(Shop.id)
        .limit(size)
    )
    if wave_id is not None:
        stmt = stmt.where(
            ~exists().where(WaveSkip.wave_id == wave_id, WaveSkip.shop_id == Shop.id, WaveSkip.shop_id > after)
        )
    if lock:
        stmt = stmt.with_for_update(of=Shop, skip_locked=True)
    return list(session.execute(stmt))


@dataclass
class _Plan:
    outcome: Outcome
    upgrades: list[dict]  # one per shop to upgrade, everything needed to write it
    skips: list[tuple[str, str]]


@dataclass(frozen=True)
class _Account:
    followers: int
    status: str
    real_name_verified: bool
    violations_90d: int


def _plan(
    session: Session,
    shops: list,
    policy: Policy,
    *,
    now: dt.datetime,
    budget: int,
    planned: Counter[str],
    lock: bool = True,
) -> _Plan:
    """Decides each shop of the chunk with the rules a merchant's application meets (R-11), counting the
    places each upgrade takes as it goes. `planned` carries what earlier chunks of a dry run took."""
    shop_ids = [s.id for s in shops]
    subject_ids = sorted({s.subject_id for s in shops})
    pools = [quotas.quota_pool(sid, t.value) for sid in subject_ids for t in AccountType]
    pools += [quotas.operator_pool(s.holder_id_hash) for s in shops if s.holder_id_hash]
    if lock:
        # The chunk's pools, locked in key order: a subject's shops may fall in two workers' chunks, and a
        # merchant may apply meanwhile; whoever comes second counts what the first took. What
        # lapsed among the chunk's shops and the pools' holders is recorded expired first (R-15).
        held = Counter(upgrades.lock_pools(session, pools, shop_ids=shop_ids, now=now)[0])
    else:  # a dry run writes nothing: it counts lapsed applications out instead
        held = Counter(quotas.counts(session, pools))
        held.subtract(facts.lapsed_holds(session, pools, now=now))
    held.update(planned)
    subjects = {
        s.id: s
        for s in session.execute(
            select(Subject.id, Subject.subject_type, Subject.cross_border, Subject.license_valid_until).where(
                among(session, Subject.id, subject_ids)
            )
        )
    }
    followers = dict(
        session.execute(
            select(Shop.subject_id, func.coalesce(func.sum(Account.followers), 0))
            .join(Account, Shop.official_account_id == Account.id)
            .where(among(session, Shop.subject_id, subject_ids))
            .group_by(Shop.subject_id)
        ).all()
    )
    # The chunk's earlier applications, in one query: attempts so far, one in progress, an auto upgrade cancelled.
    in_progress, opted_out, attempts = set(), set(), {}
    history = (
        select(
            Application.shop_id,
            func.max(Application.attempt),
            func.max(case((Application.status.in_(IN_PROGRESS) & ~facts.lapsed(now), 1), else_=0)),
            func.max(
                case(
                    ((Application.origin == Origin.AUTO.value) & (Application.status == State.CANCELLED.value), 1),
                    else_=0,
                )
            ),
        )
        .where(among(session, Application.shop_id, shop_ids))
        .group_by(Application.shop_id)
    )
    for shop_id, attempt, busy, cancelled in session.execute(history):
        attempts[shop_id] = attempt
        if busy:
            in_progress.add(shop_id)
        if cancelled:
            opted_out.add(shop_id)

    today = clock.china_date(now)
    outcome, chosen, skips = Outcome(), [], []
    for shop in shops:
        if outcome.upgraded >= budget:
            break
        outcome.scanned += 1
        outcome.last_shop_id = shop.id
        subject = subjects[shop.subject_id]
        bound = shop.official_account_id is not None
        operator = rules.operator_id_hash(named=None, holder=shop.holder_id_hash)
        operator_pool = quotas.operator_pool(operator) if operator else None
        shop_facts = rules.facts(
            policy,
            shop_type=shop.shop_type,
            shop_status=shop.status,
            subject=subject,
            account=_Account(shop.followers, shop.account_status, shop.real_name_verified, shop.violations_90d)
            if bound
            else None,
            bound_followers=int(followers.get(subject.id, 0)),
            quota_used={t.value: held[quotas.quota_pool(subject.id, t.value)] for t in AccountType},
            operator_used=held[operator_pool] if operator_pool else None,
            other_in_progress=shop.id in in_progress,
            already_upgraded=False,
            explicit_type=None,
            today=today,
        )
        decision = rules.auto_decision(policy, shop_facts, opted_out=shop.id in opted_out)
        if isinstance(decision, rules.Skip):
            outcome.skipped += 1
            outcome.reasons[decision.reason] += 1
            skips.append((shop.id, decision.reason))
            continue
        quota_pool = quotas.quota_pool(subject.id, decision.account_type)
        assert operator_pool is not None  # a bound account has a holder
        for pool in (quota_pool, operator_pool):
            held[pool] += 1
            planned[pool] += 1
        outcome.upgraded += 1
        chosen.append(
            {
                "shop": shop,
                "account_type": decision.account_type,
                "attempt": attempts.get(shop.id, 0) + 1,
                "pools": (quota_pool, operator_pool),
            }
        )
    return _Plan(outcome=outcome, upgrades=chosen, skips=skips)


def _write(session: Session, plan: _Plan, policy: Policy, *, wave_id: str, actor: str, now: dt.datetime) -> None:
    """R-11: a chunk's auto upgrades in bulk, succeeded at once and cancellable until the deadline (R-12): the
    applications, their places in the quota and operator pools (R-33, R-41), the official-account records, one
    audit row (R-60) and one event (R-61) each."""
    deadline = now + policy.cancel_window
    apps, places, records, trail, outbox = [], [], [], [], []
    deadline_iso = deadline.isoformat()
    # Random ids for the whole chunk at once (as random as uuid4().hex, a fraction of the cost): 20 hex digits of
    # application id and 32 of event id per upgrade.
    randomness = os.urandom(26 * len(plan.upgrades)).hex()
    for i, u in enumerate(plan.upgrades):
        shop = u["shop"]
        app_id = "app_" + randomness[52 * i : 52 * i + 20]
        apps.append(
            {
                "id": app_id,
                "shop_id": shop.id,
                "account_id": shop.official_account_id,
                "subject_id": shop.subject_id,
                "origin": Origin.AUTO.value,
                "status": State.SUCCEEDED.value,
                "account_type": u["account_type"],
                "type_chosen": False,
                "attempt": u["attempt"],
                "reasons": [],
                "operator_is_holder": True,
                "operator_name_enc": shop.holder_name_enc,
                "operator_id_number_enc": shop.holder_id_number_enc,
                "operator_phone_enc": shop.holder_phone_enc,
                "operator_id_hash": shop.holder_id_hash,
                "confirmation_token_hash": None,
                "confirmation_token_enc": None,
                "confirmation_expires_at": None,
                "staff_review": None,
                "wave_id": wave_id,
                "created_at": now,
                "updated_at": now,
                "confirmed_at": None,
                "reviewed_at": now,
                "finished_at": now,
            }
        )
        places += [
            {"pool": pool, "application_id": app_id, "account_id": shop.official_account_id} for pool in u["pools"]
        ]
        records.append(
            {
                "account_id": shop.official_account_id,
                "shop_id": shop.id,
                "subject_id": shop.subject_id,
                "application_id": app_id,
                "account_type": u["account_type"],
                "origin": Origin.AUTO.value,
                "upgraded_at": now,
                "cancel_deadline": deadline,
                "operator_name_enc": shop.holder_name_enc,
                "operator_id_number_enc": shop.holder_id_number_enc,
                "operator_phone_enc": shop.holder_phone_enc,
                "operator_id_hash": shop.holder_id_hash,
                "operator_since": now,
                "login_phone_before_enc": shop.login_phone_enc,
            }
        )
        trail.append(
            {
                "at": now,
                "actor": actor,
                "action": "upgrade.succeeded",
                "target_kind": "upgrade_application",
                "target_id": app_id,
                "subject_id": shop.subject_id,
                "shop_id": shop.id,
                "from_state": None,
                "to_state": State.SUCCEEDED.value,
                "detail": {
                    "origin": "auto",
                    "wave_id": wave_id,
                    "account_type": u["account_type"],
                    "cancel_deadline": deadline_iso,
                },
            }
        )
        outbox.append(
            {
                "event_id": "evt_" + randomness[52 * i + 20 : 52 * i + 52],
                "type": "upgrade.succeeded",
                "at": now,
                "shop_id": shop.id,
                "subject_id": shop.subject_id,
                "data": lifecycle.event_data(
                    application_id=app_id,
                    shop_id=shop.id,
                    account_id=shop.official_account_id,
                    subject_id=shop.subject_id,
                    origin=Origin.AUTO.value,
                    status=State.SUCCEEDED.value,
                    account_type=u["account_type"],
                    attempt=u["attempt"],
                    reasons=[],
                    cancel_deadline=deadline_iso,
                    wave_id=wave_id,
                ),
            }
        )
    if apps:
        # Core inserts (COPY on PostgreSQL): no ORM unit of work for rows nothing else in the session touches.
        bulk_insert(session, Application, apps)
        quotas.reserve_many(session, places, now=now)
        bulk_insert(session, OfficialAccount, records)
        audit.record_many(session, trail)
        events.emit_many(session, outbox)
    if plan.skips:
        bulk_insert(session, WaveSkip, [{"wave_id": wave_id, "shop_id": s, "reason": r} for s, r in plan.skips])


# ---------------------------------------------------------------- dry run


def simulate(
    policy: Policy,
    *,
    limit: int,
    min_score: float | None,
    chunk: int = CHUNK,
    progress: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """What a wave would do now, writing nothing (`guanhao waves run --dry-run`, R-11)."""
    min_score = policy.auto_upgrade.min_experience_score if min_score is None else min_score
    total, planned, after = Outcome(), Counter[str](), ""
    with session_scope() as session:
        now = clock.now(session)
        while total.upgraded < limit:
            shops = _claim(session, wave_id=None, min_score=min_score, after=after, size=chunk, lock=False)
            if not shops:
                break
            plan = _plan(session, shops, policy, now=now, budget=limit - total.upgraded, planned=planned, lock=False)
            total.add(plan.outcome)
            after = shops[-1].id
            if progress is not None:
                progress(total)
        session.rollback()
    return total
