"""Pure rules: eligibility checks (SPEC R-01..R-04, R-30..R-32, R-41), quotas and type resolution, who
operates the account (R-40), which accounts wait for staff (R-16), and what an auto-upgrade wave does
with a shop (R-11) — asked alike by a merchant's application and by a wave.

No database, no clock: plain values in, plain values out.
"""

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

from guanhao.errors import Reason
from guanhao.i18n import Message, _l
from guanhao.policy import Policy
from guanhao.upgrades.models import FALLBACK_ORDER, AccountType

# each check with what it means and what to do about it (the catalog has them in every language).
CHECKS: dict[str, tuple[Message, Message]] = {
    "SHOP_TYPE_NOT_ELIGIBLE": (
        _l(
            "The shop type must be official flagship, flagship, specialty, franchise, enterprise or individual (personal shops cannot upgrade)"
        ),
        _l("Upgrade the personal shop to an individual or enterprise shop first"),
    ),
    "SHOP_NOT_ACTIVE": (
        _l("The shop must be active"),
        _l("Resolve the shop's suspension or closure, then apply again"),
    ),
    "LICENSE_EXPIRED": (
        _l("The subject's business licence must be valid"),
        _l("Renew the business licence in the shop's qualification settings"),
    ),
    "ACCOUNT_NOT_BOUND": (
        _l("The shop must have a bound official Douyin account"),
        _l("Bind the shop's official account under account management"),
    ),
    "ACCOUNT_NOT_VERIFIED": (
        _l("The Douyin account must be real-name verified"),
        _l("Ask the account holder to finish real-name verification in the Douyin app"),
    ),
    "ACCOUNT_NOT_NORMAL": (
        _l("The Douyin account must be in normal status (not restricted or banned)"),
        _l("Resolve the account's restriction or ban, then apply again"),
    ),
    "ACCOUNT_HAS_VIOLATIONS": (
        _l("The Douyin account has too many violations in the last 90 days"),
        _l("Apply again once the violations are older than 90 days or appealed"),
    ),
    "ALREADY_UPGRADED": (
        _l("The account must not be upgraded already"),
        _l("The account is already upgraded; nothing to do"),
    ),
    "APPLICATION_IN_PROGRESS": (
        _l("The shop must have no other application in progress"),
        _l("Wait for the current application to finish, or withdraw it"),
    ),
    "QUOTA_EXHAUSTED": (
        _l("The subject must have a free account-type slot"),
        _l("Main, vertical and dedicated slots are all in use; cancelling another shop's auto upgrade frees one"),
    ),
    "TYPE_QUOTA_EXHAUSTED": (
        _l("The chosen account type must have a free slot"),
        _l("Choose another type, or none to get main → vertical → dedicated in order"),
    ),
    "VERTICAL_NOT_AVAILABLE": (
        _l("The subject must be allowed vertical accounts (cross-border subjects have none)"),
        _l("Cross-border subjects have no vertical accounts; choose main or dedicated"),
    ),
    "OPERATOR_LIMIT_REACHED": (
        _l("The operator must be below the limit of official accounts one person may run"),
        _l("Name another operator, or replace this person on one of their other accounts first"),
    ),
}
NOT_CHECKED = _l("Not checked: no official account is bound")

# What the upgrade changes and what it keeps, as the holder and the merchant are told.
WHAT_CHANGES = [
    _l("The account's usage right belongs to the shop's qualification subject, not to a person"),
    _l("The shop can replace the operator and rebind the login phone"),
]
WHAT_STAYS = [
    _l("Followers, following and content"),
    _l("The binding between the account and the shop"),
    _l("The subject behind the account"),
]

# Reasons an application ended that are not eligibility checks.
OUTCOMES: dict[str, Message] = {
    "HOLDER_DECLINED": _l("The account holder declined the upgrade"),
    "CONFIRMATION_EXPIRED": _l("The account holder did not confirm in time"),
    "STAFF_REJECTED": _l("Rejected by platform staff"),
}


def reason(code: str, text: str | None = None) -> Reason:
    """A stored reason (`{"code", "text"?}` on an application) with its words: staff's own text when given."""
    if code in CHECKS:
        return Check(code, False).reason()
    return Reason(code, text or OUTCOMES.get(code) or code)


@dataclass(frozen=True)
class Check:
    code: str
    passed: bool
    evaluated: bool = True

    @property
    def message(self) -> Message:
        return CHECKS[self.code][0] if self.evaluated else NOT_CHECKED

    @property
    def fix(self) -> Message | None:
        if not self.evaluated:
            return CHECKS["ACCOUNT_NOT_BOUND"][1]
        return None if self.passed else CHECKS[self.code][1]

    def reason(self) -> Reason:
        return Reason(self.code, self.message, self.fix)


@dataclass(frozen=True)
class QuotaFacts:
    totals: dict[str, int]
    used: dict[str, int]
    cross_border: bool


@dataclass(frozen=True)
class Facts:
    shop_type: str
    shop_status: str
    license_valid_until: dt.date | None
    today: dt.date
    account_bound: bool
    real_name_verified: bool | None
    account_status: str | None
    violations_90d: int | None
    followers: int | None
    already_upgraded: bool
    other_in_progress: bool
    quota: QuotaFacts
    explicit_type: str | None
    operator_used: int | None
    operator_capacity: int = field(default=5)


class SubjectLike(Protocol):
    @property
    def subject_type(self) -> str: ...
    @property
    def cross_border(self) -> bool: ...
    @property
    def license_valid_until(self) -> dt.date | None: ...


class AccountLike(Protocol):
    @property
    def followers(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def real_name_verified(self) -> bool: ...
    @property
    def violations_90d(self) -> int: ...


def facts(
    policy: Policy,
    *,
    shop_type: str,
    shop_status: str,
    subject: SubjectLike,
    account: AccountLike | None,
    bound_followers: int,
    quota_used: dict[str, int],
    operator_used: int | None,
    other_in_progress: bool,
    already_upgraded: bool,
    explicit_type: str | None,
    today: dt.date,
) -> Facts:
    """The facts every decision reads, built the same way for a merchant's application and for a wave."""
    totals = quota_totals(
        policy, subject_type=subject.subject_type, cross_border=subject.cross_border, bound_followers=bound_followers
    )
    return Facts(
        shop_type=shop_type,
        shop_status=shop_status,
        license_valid_until=subject.license_valid_until,
        today=today,
        account_bound=account is not None,
        real_name_verified=account.real_name_verified if account else None,
        account_status=account.status if account else None,
        violations_90d=account.violations_90d if account else None,
        followers=account.followers if account else None,
        already_upgraded=already_upgraded,
        other_in_progress=other_in_progress,
        quota=QuotaFacts(totals=totals, used=quota_used, cross_border=subject.cross_border),
        explicit_type=explicit_type,
        operator_used=operator_used,
        operator_capacity=policy.operators.capacity,
    )


def operator_id_hash(*, named: str | None, holder: str | None) -> str | None:
    """R-40: the account's operator is its holder's real-name identity, unless the merchant names another person."""
    return named if named is not None else holder


def needs_staff_review(policy: Policy, followers: int) -> bool:
    """R-16: an account with at least this many followers (policy) waits for staff after the checks pass."""
    threshold = policy.review.staff_review_min_followers
    return threshold is not None and followers >= threshold


OPTED_OUT = "AUTO_UPGRADE_CANCELLED"
NEEDS_STAFF_REVIEW = "NEEDS_STAFF_REVIEW"


@dataclass(frozen=True)
class Upgrade:
    account_type: str


@dataclass(frozen=True)
class Skip:
    reason: str


def auto_decision(policy: Policy, facts: Facts, *, opted_out: bool) -> Upgrade | Skip:
    """R-11: what a wave does with a candidate shop. Every check of a manual application (the first failure
    is the counted reason); then accounts that would need staff review (R-16) and shops whose auto upgrade
    the merchant cancelled before (they may still upgrade manually) are skipped."""
    if opted_out:
        return Skip(OPTED_OUT)
    checks, account_type = evaluate(policy, facts)
    failures = failed(checks)
    if failures:
        return Skip(failures[0].code)
    if needs_staff_review(policy, facts.followers or 0):
        return Skip(NEEDS_STAFF_REVIEW)
    assert account_type is not None
    return Upgrade(account_type)


def quota_totals(policy: Policy, *, subject_type: str, cross_border: bool, bound_followers: int) -> dict[str, int]:
    """SPEC R-30, R-31: slots per type for a subject."""
    base = policy.quotas.cross_border if cross_border else getattr(policy.quotas, subject_type)
    totals = {"main": base.main, "vertical": base.vertical, "dedicated": base.dedicated}
    bonus = policy.quotas.follower_bonus
    if bound_followers >= bonus.threshold:
        if not cross_border:
            totals["vertical"] += bonus.vertical
        totals["dedicated"] += bonus.dedicated
    return totals


def resolve_type(quota: QuotaFacts, explicit: str | None) -> tuple[str | None, str | None]:
    """SPEC R-32: (type, None) or (None, failure code). An explicit full type never falls back."""
    if explicit is not None:
        # cross-border subjects have no vertical type at all; elsewhere a vertical total of 0 is a full type.
        if explicit == AccountType.VERTICAL and quota.cross_border:
            return None, "VERTICAL_NOT_AVAILABLE"
        if quota.used[explicit] >= quota.totals[explicit]:
            return None, "TYPE_QUOTA_EXHAUSTED"
        return explicit, None
    for candidate in FALLBACK_ORDER:
        if quota.used[candidate] < quota.totals[candidate]:
            return candidate.value, None
    return None, "QUOTA_EXHAUSTED"


def evaluate(policy: Policy, facts: Facts) -> tuple[list[Check], str | None]:
    """Every R-03 check, passed or not (SPEC R-04), and the account type it resolves to."""
    elig = policy.eligibility
    checks = [
        Check("SHOP_TYPE_NOT_ELIGIBLE", facts.shop_type in elig.shop_types),
        Check("SHOP_NOT_ACTIVE", facts.shop_status in elig.allowed_shop_statuses),
        Check("LICENSE_EXPIRED", facts.license_valid_until is None or facts.license_valid_until >= facts.today),
        Check("ACCOUNT_NOT_BOUND", facts.account_bound),
    ]
    bound = facts.account_bound
    checks += [
        Check("ACCOUNT_NOT_VERIFIED", bound and (bool(facts.real_name_verified) or not elig.require_real_name), bound),
        Check("ACCOUNT_NOT_NORMAL", bound and facts.account_status in elig.allowed_account_statuses, bound),
        Check("ACCOUNT_HAS_VIOLATIONS", bound and (facts.violations_90d or 0) <= elig.max_violations_90d, bound),
        Check("ALREADY_UPGRADED", bound and not facts.already_upgraded, bound),
        Check("APPLICATION_IN_PROGRESS", not facts.other_in_progress),
    ]
    resolved, quota_failure = resolve_type(facts.quota, facts.explicit_type)
    if quota_failure is None:
        checks.append(Check("TYPE_QUOTA_EXHAUSTED" if facts.explicit_type else "QUOTA_EXHAUSTED", True))
    else:
        checks.append(Check(quota_failure, False))
    checks.append(
        Check(
            "OPERATOR_LIMIT_REACHED",
            bound and facts.operator_used is not None and facts.operator_used < facts.operator_capacity,
            bound,
        )
    )
    return checks, resolved


def failed(checks: list[Check]) -> list[Check]:
    """The failures to report. A check not evaluated (no bound account) is not a reason of its own:
    ACCOUNT_NOT_BOUND, which always fails with it, is."""
    return [c for c in checks if not c.passed and c.evaluated]
