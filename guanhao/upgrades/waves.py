"""Auto-upgrade waves (系统自动升级, SPEC R-11) that stay correct and cheap at a million shops.

A wave works in chunks, each one transaction: claim the next candidate shops (score ≥ the
minimum, not upgraded, not yet looked at by this wave) with FOR UPDATE SKIP LOCKED, load their
facts with a handful of set queries, run the same pure rules as a manual application, and write
the upgrades (applications, slots, official-account records, audit rows, outbox events) and the
wave's counters in bulk. A killed wave loses at most its open chunk, which a resumed run redoes;
several workers on one wave never take the same shop.
"""

import datetime as dt
import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import any_, bindparam, case, exists, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError, OperationalError

from guanhao import clock, errors
from guanhao.audit import service as audit
from guanhao.db import Session, bulk_insert, session_scope
from guanhao.events import service as events
from guanhao.i18n import _l
from guanhao.policy import Policy
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.upgrades import quotas, rules
from guanhao.upgrades.models import (
    IN_PROGRESS,
    AccountType,
    Application,
    OfficialAccount,
    Origin,
    Slot,
    State,
    Wave,
    WaveSkip,
)

CHUNK = 1000
OPTED_OUT = "AUTO_UPGRADE_CANCELLED"
NEEDS_STAFF_REVIEW = "NEEDS_STAFF_REVIEW"


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
    if limit < 0:
        raise errors.ValidationFailed(_l("The limit must be 0 or more"))
    wave = Wave(
        id="wave_" + uuid.uuid4().hex[:16],
        status="running",
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


# ---------------------------------------------------------------- the work


def work(
    wave_id: str,
    policy: Policy,
    *,
    chunk: int = CHUNK,
    progress: Callable[[Wave], None] | None = None,
    tally: Outcome | None = None,
) -> Wave:
    """Runs (or resumes, or joins) a wave until it is done. Safe to run in several processes at once.

    `tally`, if given, adds up what this call itself committed (one worker's share of the wave)."""
    after = ""
    restarted = False
    retries = 0
    while True:
        try:
            with session_scope() as session:
                now = clock.now(session)
                wave = get(session, wave_id)
                if wave.status == "failed":
                    return wave
                budget = wave.limit - wave.upgraded
                outcome = (
                    None
                    if budget <= 0
                    else _chunk(session, wave, policy, now=now, after=after, size=chunk, budget=budget)
                )
                if outcome is None:
                    if after and not restarted and budget > 0:
                        # Shops a killed or concurrent worker held when we passed them: one more sweep.
                        after, restarted = "", True
                        continue
                    _finish(session, wave_id, now=now)
                    return get(session, wave_id)
                after = outcome.last_shop_id
            retries = 0
            if tally is not None:
                tally.add(outcome)
            if progress is not None:
                progress(wave)  # the chunk's own row, counters as committed (sessions keep values after commit)
        except (_BudgetExceeded, IntegrityError, OperationalError):
            # Another worker or a manual application took the budget or a slot first: redo the chunk.
            retries += 1
            if retries > 20:
                with session_scope() as session:
                    fail(session, wave_id, "gave up after repeated conflicts", now=clock.now(session))
                raise


def _finish(session: Session, wave_id: str, *, now: dt.datetime) -> None:
    wave = session.get(Wave, wave_id, with_for_update=True)
    if wave.status == "running":
        wave.status, wave.finished_at, wave.updated_at = "done", now, now
        audit.record(
            session,
            at=now,
            actor=wave.started_by,
            action="wave.done",
            target_kind="wave",
            target_id=wave.id,
            from_state="running",
            to_state="done",
            detail={"scanned": wave.scanned, "upgraded": wave.upgraded, "skipped": wave.skipped},
        )


def fail(session: Session, wave_id: str, error: str, *, now: dt.datetime) -> None:
    wave = session.get(Wave, wave_id, with_for_update=True)
    wave.status, wave.error, wave.finished_at, wave.updated_at = "failed", error[:500], now, now


def reopen(session: Session, wave_id: str, *, now: dt.datetime) -> Wave:
    """For `waves resume`: a wave that died (or was marked done by a worker that lost a race) runs again."""
    wave = session.get(Wave, wave_id, with_for_update=True)
    if wave is None:
        raise errors.NotFound(_l("Wave {wave_id} not found", wave_id=wave_id))
    if wave.status != "running" and wave.upgraded < wave.limit:
        wave.status, wave.finished_at, wave.error, wave.updated_at = "running", None, None, now
    return wave


def _chunk(
    session: Session, wave: Wave, policy: Policy, *, now: dt.datetime, after: str, size: int, budget: int
) -> Outcome | None:
    shops = _claim(session, wave_id=wave.id, min_score=wave.min_experience_score, after=after, size=size)
    if not shops:
        return None
    plan = _plan(session, shops, policy, now=now, budget=budget, overlay={})
    actor = f"wave:{wave.id}"
    _write(session, plan, policy, wave_id=wave.id, actor=actor, now=now)

    # The counters move with the work, under the wave's row lock, and never past the limit. NO KEY UPDATE, the
    # lock an UPDATE of the counters takes anyway: the skip rows written above hold KEY SHARE on the wave row
    # (their foreign key), and a FOR UPDATE here would deadlock two workers that both wrote skips.
    locked = session.scalar(
        select(Wave).where(Wave.id == wave.id).with_for_update(key_share=True).execution_options(populate_existing=True)
    )
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


def _plan(
    session: Session,
    shops: list,
    policy: Policy,
    *,
    now: dt.datetime,
    budget: int,
    overlay: dict[str, set],
    lock: bool = True,
) -> _Plan:
    """Decides each shop of the chunk with the pure rules, allocating slot numbers as it goes."""
    shop_ids = [s.id for s in shops]
    subject_ids = sorted({s.subject_id for s in shops})
    subjects_stmt = (
        select(Subject.id, Subject.subject_type, Subject.cross_border, Subject.license_valid_until)
        .where(_among(session, Subject.id, subject_ids))
        .order_by(Subject.id)
    )
    if lock:
        # A subject's shops may fall in two workers' chunks: its row lock (taken in id order, so two waves never
        # deadlock; NO KEY UPDATE, so inserts referencing it go on) makes the second read the first's slots after
        # it commits, instead of both picking the same slot number and one redoing its whole chunk.
        subjects_stmt = subjects_stmt.with_for_update(key_share=True)
    subjects = {s.id: s for s in session.execute(subjects_stmt)}
    followers = dict(
        session.execute(
            select(Shop.subject_id, func.coalesce(func.sum(Account.followers), 0))
            .join(Account, Shop.official_account_id == Account.id)
            .where(_among(session, Shop.subject_id, subject_ids))
            .group_by(Shop.subject_id)
        ).all()
    )
    pools = [quotas.quota_pool(sid, t.value) for sid in subject_ids for t in AccountType]
    pools += [quotas.operator_pool(s.holder_id_hash) for s in shops if s.holder_id_hash]
    taken: dict[str, set] = {p: set(overlay.get(p, ())) for p in pools}
    for pool, slot_no in session.execute(select(Slot.pool, Slot.slot_no).where(_among(session, Slot.pool, pools))):
        taken[pool].add(slot_no)
    # The chunk's earlier applications, in one query: attempts so far, one in progress, an auto upgrade cancelled.
    in_progress, opted_out, attempts = set(), set(), {}
    history = (
        select(
            Application.shop_id,
            func.max(Application.attempt),
            func.max(case((Application.status.in_(IN_PROGRESS), 1), else_=0)),
            func.max(
                case(
                    ((Application.origin == Origin.AUTO.value) & (Application.status == State.CANCELLED.value), 1),
                    else_=0,
                )
            ),
        )
        .where(_among(session, Application.shop_id, shop_ids))
        .group_by(Application.shop_id)
    )
    for shop_id, attempt, busy, cancelled in session.execute(history):
        attempts[shop_id] = attempt
        if busy:
            in_progress.add(shop_id)
        if cancelled:
            opted_out.add(shop_id)

    today = clock.china_date(now)
    threshold = policy.review.staff_review_min_followers
    totals_of = {
        sid: rules.quota_totals(
            policy, subject_type=s.subject_type, cross_border=s.cross_border, bound_followers=int(followers.get(sid, 0))
        )
        for sid, s in subjects.items()
    }
    pools_of = {sid: [(t.value, quotas.quota_pool(sid, t.value)) for t in AccountType] for sid in subject_ids}
    outcome, upgrades, skips = Outcome(), [], []
    for shop in shops:
        if outcome.upgraded >= budget:
            break
        outcome.scanned += 1
        outcome.last_shop_id = shop.id
        subject = subjects[shop.subject_id]
        totals = totals_of[subject.id]
        used = {t: len(taken[pool]) for t, pool in pools_of[subject.id]}
        operator_pool = quotas.operator_pool(shop.holder_id_hash) if shop.holder_id_hash else None
        facts = rules.Facts(
            shop_type=shop.shop_type,
            shop_status=shop.status,
            license_valid_until=subject.license_valid_until,
            today=today,
            account_bound=shop.official_account_id is not None,
            real_name_verified=shop.real_name_verified,
            account_status=shop.account_status,
            violations_90d=shop.violations_90d,
            already_upgraded=False,
            other_in_progress=shop.id in in_progress,
            quota=rules.QuotaFacts(totals=totals, used=used, cross_border=subject.cross_border),
            explicit_type=None,
            operator_used=len(taken[operator_pool]) if operator_pool else None,
            operator_capacity=policy.operators.capacity,
        )
        checks, account_type = rules.evaluate(policy, facts)
        failures = rules.failed(checks)
        reason = None
        if shop.id in opted_out:
            reason = OPTED_OUT
        elif failures:
            reason = failures[0].code
        elif threshold is not None and shop.followers >= threshold:
            reason = NEEDS_STAFF_REVIEW
        if reason is not None:
            outcome.skipped += 1
            outcome.reasons[reason] += 1
            skips.append((shop.id, reason))
            continue
        quota_pool = quotas.quota_pool(subject.id, account_type)
        quota_no = _lowest_free(taken[quota_pool], totals[account_type])
        operator_no = _lowest_free(taken[operator_pool], policy.operators.capacity)
        taken[quota_pool].add(quota_no)
        taken[operator_pool].add(operator_no)
        overlay.setdefault(quota_pool, set()).add(quota_no)
        overlay.setdefault(operator_pool, set()).add(operator_no)
        outcome.upgraded += 1
        upgrades.append(
            {
                "shop": shop,
                "account_type": account_type,
                "attempt": attempts.get(shop.id, 0) + 1,
                "quota_pool": quota_pool,
                "quota_no": quota_no,
                "operator_pool": operator_pool,
                "operator_no": operator_no,
            }
        )
    return _Plan(outcome=outcome, upgrades=upgrades, skips=skips)


def _among(session: Session, column, values: list):
    """`column IN values`; on PostgreSQL `= ANY(array)`, one parameter: the statement text stays the same from chunk
    to chunk (no re-rendering of thousands of placeholders, and psycopg can prepare it)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def _lowest_free(taken: set, capacity: int) -> int:
    return next(n for n in range(1, capacity + 1) if n not in taken)


def _write(session: Session, plan: _Plan, policy: Policy, *, wave_id: str, actor: str, now: dt.datetime) -> None:
    deadline = now + policy.cancel_window
    apps, slots, records, trail, outbox = [], [], [], [], []
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
                "awaiting_staff": False,
                "wave_id": wave_id,
                "created_at": now,
                "updated_at": now,
                "confirmed_at": None,
                "reviewed_at": now,
                "finished_at": now,
            }
        )
        for pool, number in ((u["quota_pool"], u["quota_no"]), (u["operator_pool"], u["operator_no"])):
            slots.append(
                {
                    "pool": pool,
                    "slot_no": number,
                    "application_id": app_id,
                    "account_id": shop.official_account_id,
                    "created_at": now,
                }
            )
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
                "data": {
                    "application_id": app_id,
                    "shop_id": shop.id,
                    "account_id": shop.official_account_id,
                    "subject_id": shop.subject_id,
                    "origin": "auto",
                    "status": "succeeded",
                    "account_type": u["account_type"],
                    "attempt": u["attempt"],
                    "reasons": [],
                    "wave_id": wave_id,
                    "cancel_deadline": deadline_iso,
                },
            }
        )
    if apps:
        # Core inserts (COPY on PostgreSQL): no ORM unit of work for rows nothing else in the session touches.
        bulk_insert(session, Application.__table__, apps)
        bulk_insert(session, Slot.__table__, slots)
        bulk_insert(session, OfficialAccount.__table__, records)
        audit.record_many(session, trail)
        events.emit_many(session, outbox)
    if plan.skips:
        bulk_insert(
            session, WaveSkip.__table__, [{"wave_id": wave_id, "shop_id": s, "reason": r} for s, r in plan.skips]
        )


# ---------------------------------------------------------------- dry run


def simulate(
    policy: Policy,
    *,
    limit: int,
    min_score: float | None,
    chunk: int = CHUNK,
    progress: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """What a wave would do now, writing nothing (`guanhao waves run --dry-run`)."""
    min_score = policy.auto_upgrade.min_experience_score if min_score is None else min_score
    total, overlay, after = Outcome(), {}, ""
    with session_scope() as session:
        now = clock.now(session)
        while total.upgraded < limit:
            shops = _claim(session, wave_id=None, min_score=min_score, after=after, size=chunk, lock=False)
            if not shops:
                break
            plan = _plan(session, shops, policy, now=now, budget=limit - total.upgraded, overlay=overlay, lock=False)
            total.add(plan.outcome)
            after = shops[-1].id
            if progress is not None:
                progress(total)
        session.rollback()
    return total
