"""The pure upgrade rules (guanhao.upgrades.rules): admission checks, quotas, account-type resolution."""

import dataclasses
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guanhao.policy import load_policy
from guanhao.upgrades import rules

POLICY = load_policy()
TODAY = dt.date(2026, 3, 10)
ALL_CODES = [
    "SHOP_TYPE_NOT_ELIGIBLE",
    "SHOP_NOT_ACTIVE",
    "LICENSE_EXPIRED",
    "ACCOUNT_NOT_BOUND",
    "ACCOUNT_NOT_VERIFIED",
    "ACCOUNT_NOT_NORMAL",
    "ACCOUNT_HAS_VIOLATIONS",
    "ALREADY_UPGRADED",
    "APPLICATION_IN_PROGRESS",
    "QUOTA_EXHAUSTED",
    "OPERATOR_LIMIT_REACHED",
]
TYPES = ("main", "vertical", "dedicated")


def quota(totals=(1, 2, 3), used=(0, 0, 0), *, cross_border=False) -> rules.QuotaFacts:
    return rules.QuotaFacts(
        totals=dict(zip(TYPES, totals, strict=False)),
        used=dict(zip(TYPES, used, strict=False)),
        cross_border=cross_border,
    )


def facts(**changes) -> rules.Facts:
    """Facts of a shop that passes every check; `changes` breaks the ones a test is about."""
    base = rules.Facts(
        shop_type="flagship",
        shop_status="active",
        license_valid_until=None,
        today=TODAY,
        account_bound=True,
        real_name_verified=True,
        account_status="normal",
        violations_90d=0,
        followers=12_000,
        already_upgraded=False,
        other_in_progress=False,
        quota=quota(),
        explicit_type=None,
        operator_used=0,
        operator_capacity=5,
    )
    return dataclasses.replace(base, **changes)


def outcome(policy=POLICY, **changes) -> dict[str, bool]:
    checks, _ = rules.evaluate(policy, facts(**changes))
    return {c.code: c.passed for c in checks}


def failed_codes(policy=POLICY, **changes) -> list[str]:
    checks, _ = rules.evaluate(policy, facts(**changes))
    return [c.code for c in rules.failed(checks)]


def with_policy(**sections) -> object:
    """The default policy with some sections' fields replaced."""
    updates = {name: getattr(POLICY, name).model_copy(update=fields) for name, fields in sections.items()}
    return POLICY.model_copy(update=updates)


# ---------------------------------------------------------------- the checks


def test_r03_a_shop_meeting_every_threshold_passes_every_check_and_gets_main():
    """R-03, R-04: every check is listed, each passed, in a stable order."""
    checks, resolved = rules.evaluate(POLICY, facts())
    assert [c.code for c in checks] == ALL_CODES
    assert all(c.passed for c in checks)
    assert rules.failed(checks) == []
    assert resolved == "main"


@pytest.mark.parametrize(
    "shop_type", ["official_flagship", "flagship", "specialty", "franchise", "enterprise", "individual"]
)
def test_r01_eligible_shop_types_pass(shop_type):
    """R-01 every listed shop type may upgrade."""
    assert failed_codes(shop_type=shop_type) == []


def test_r01_personal_shop_is_never_eligible():
    """R-01 个人店 never upgrades."""
    assert failed_codes(shop_type="personal") == ["SHOP_TYPE_NOT_ELIGIBLE"]


def test_r01_policy_cannot_make_personal_shops_eligible(tmp_path):
    """R-01 not even a policy file can list 'personal'."""
    from guanhao.policy import DEFAULT_POLICY_PATH, PolicyError

    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").replace(
        'shop_types = ["official_flagship"', 'shop_types = ["personal", "official_flagship"'
    )
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError, match=r"eligibility\.shop_types"):
        load_policy(path)


def test_r02_cross_border_subject_is_eligible_like_a_domestic_one():
    """R-02 a cross-border subject passes with its cross-border quota."""
    checks, resolved = rules.evaluate(POLICY, facts(quota=quota((1, 0, 2), cross_border=True)))
    assert rules.failed(checks) == []
    assert resolved == "main"


@pytest.mark.parametrize("status", ["suspended", "closed"])
def test_r03_shop_must_be_active(status):
    """R-03 shop active."""
    assert failed_codes(shop_status=status) == ["SHOP_NOT_ACTIVE"]


def test_r03_licence_expired_yesterday_fails_valid_today_passes():
    """R-03 subject licence valid: the last valid day still passes."""
    assert failed_codes(license_valid_until=TODAY - dt.timedelta(days=1)) == ["LICENSE_EXPIRED"]
    assert failed_codes(license_valid_until=TODAY) == []
    assert failed_codes(license_valid_until=TODAY + dt.timedelta(days=400)) == []


def test_r03_licence_without_validity_never_expires():
    """R-03 a licence validity of null means no expiry."""
    assert failed_codes(license_valid_until=None, today=dt.date(2999, 12, 31)) == []


def test_r03_account_must_be_bound_and_dependent_checks_are_not_claimed_passed():
    """R-03, R-04 with no bound account the account checks are not evaluated, and none is shown as passed."""
    checks, _ = rules.evaluate(
        POLICY,
        facts(
            account_bound=False, real_name_verified=None, account_status=None, violations_90d=None, operator_used=None
        ),
    )
    by_code = {c.code: c for c in checks}
    assert by_code["ACCOUNT_NOT_BOUND"].passed is False
    assert by_code["ACCOUNT_NOT_BOUND"].evaluated is True
    for code in (
        "ACCOUNT_NOT_VERIFIED",
        "ACCOUNT_NOT_NORMAL",
        "ACCOUNT_HAS_VIOLATIONS",
        "ALREADY_UPGRADED",
        "OPERATOR_LIMIT_REACHED",
    ):
        assert by_code[code].passed is False and by_code[code].evaluated is False, code
    assert by_code["SHOP_TYPE_NOT_ELIGIBLE"].passed is True
    assert [c.code for c in rules.failed(checks)] == ["ACCOUNT_NOT_BOUND"]


def test_r03_account_must_be_real_name_verified():
    """R-03 account real-name verified."""
    assert failed_codes(real_name_verified=False) == ["ACCOUNT_NOT_VERIFIED"]


def test_r03_real_name_requirement_follows_the_policy():
    """R-03 (policy) with require_real_name off an unverified account passes."""
    relaxed = with_policy(eligibility={"require_real_name": False})
    assert failed_codes(relaxed, real_name_verified=False) == []


@pytest.mark.parametrize("status", ["restricted", "banned"])
def test_r03_account_status_must_be_normal(status):
    """R-03 account status normal."""
    assert failed_codes(account_status=status) == ["ACCOUNT_NOT_NORMAL"]


def test_r03_violations_threshold_default_zero():
    """R-03 violations in the last 90 days ≤ policy 0."""
    assert failed_codes(violations_90d=0) == []
    assert failed_codes(violations_90d=1) == ["ACCOUNT_HAS_VIOLATIONS"]


def test_r03_violations_threshold_comes_from_the_policy():
    """R-03 (policy) max_violations_90d = 2: 2 passes, 3 fails."""
    lenient = with_policy(eligibility={"max_violations_90d": 2})
    assert failed_codes(lenient, violations_90d=2) == []
    assert failed_codes(lenient, violations_90d=3) == ["ACCOUNT_HAS_VIOLATIONS"]


def test_r03_account_already_upgraded_fails():
    """R-03, R-18 an upgraded account cannot apply again."""
    assert failed_codes(already_upgraded=True) == ["ALREADY_UPGRADED"]


def test_r03_r19_other_application_in_progress_fails():
    """R-03, R-19 no other application for this shop in progress."""
    assert failed_codes(other_in_progress=True) == ["APPLICATION_IN_PROGRESS"]


def test_r03_r30_no_free_slot_fails_with_quota_exhausted():
    """R-03, R-30 a free account-type slot must exist."""
    assert failed_codes(quota=quota((1, 2, 3), (1, 2, 3))) == ["QUOTA_EXHAUSTED"]


def test_r03_r41_operator_capacity():
    """R-03, R-41 the operator runs at most 5 official accounts: 4 used passes, 5 used fails."""
    assert failed_codes(operator_used=4) == []
    assert failed_codes(operator_used=5) == ["OPERATOR_LIMIT_REACHED"]
    assert failed_codes(operator_used=1, operator_capacity=1) == ["OPERATOR_LIMIT_REACHED"]


def test_r04_every_failure_is_listed_not_just_the_first():
    """R-04 all checks listed with pass/fail, every failure at once."""
    result = outcome(
        shop_type="personal",
        shop_status="closed",
        license_valid_until=TODAY - dt.timedelta(days=1),
        real_name_verified=False,
        account_status="banned",
        violations_90d=7,
        already_upgraded=True,
        other_in_progress=True,
        quota=quota((1, 0, 0), (1, 0, 0)),
        operator_used=5,
    )
    assert list(result) == ALL_CODES
    assert [code for code, ok in result.items() if not ok] == [c for c in ALL_CODES if c != "ACCOUNT_NOT_BOUND"]


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.mark.parametrize("code", list(rules.CHECKS))
def test_r04_every_check_has_zh_and_en_message_and_a_fix_when_failed(code):
    """R-03, R-04 a stable code, a zh-CN and an en message, and what to do about it."""
    check = rules.Check(code, False)
    zh = {"message": check.message.render("zh-CN"), "fix": check.fix.render("zh-CN")}
    en = {"message": check.message.render("en"), "fix": check.fix.render("en")}
    assert zh["message"] != en["message"]
    assert _has_cjk(zh["message"]) and _has_cjk(zh["fix"])
    assert not _has_cjk(en["message"]) and not _has_cjk(en["fix"])
    assert zh["fix"] and en["fix"]
    assert rules.Check(code, True).fix is None


# ---------------------------------------------------------------- quota totals


@pytest.mark.parametrize(
    ("subject_type", "cross_border", "expected"),
    [
        ("enterprise", False, {"main": 1, "vertical": 2, "dedicated": 3}),
        ("individual_business", False, {"main": 1, "vertical": 1, "dedicated": 1}),
        ("personal", False, {"main": 1, "vertical": 0, "dedicated": 0}),
        ("enterprise", True, {"main": 1, "vertical": 0, "dedicated": 2}),
        ("individual_business", True, {"main": 1, "vertical": 0, "dedicated": 2}),
        ("personal", True, {"main": 1, "vertical": 0, "dedicated": 2}),
    ],
)
def test_r30_r31_quota_table(subject_type, cross_border, expected):
    """R-30 the default table; R-31 any cross-border subject: 1/0/2 whatever its type."""
    assert (
        rules.quota_totals(POLICY, subject_type=subject_type, cross_border=cross_border, bound_followers=999_999)
        == expected
    )


@pytest.mark.parametrize(
    ("subject_type", "cross_border", "expected"),
    [
        ("enterprise", False, {"main": 1, "vertical": 3, "dedicated": 4}),
        ("individual_business", False, {"main": 1, "vertical": 2, "dedicated": 2}),
        ("enterprise", True, {"main": 1, "vertical": 0, "dedicated": 3}),
    ],
)
def test_r30_follower_bonus_at_one_million(subject_type, cross_border, expected):
    """R-30 +1 vertical +1 dedicated at ≥ 1,000,000 followers; R-31 cross-border gets no vertical bonus."""
    assert (
        rules.quota_totals(POLICY, subject_type=subject_type, cross_border=cross_border, bound_followers=1_000_000)
        == expected
    )


@given(
    st.sampled_from(["enterprise", "individual_business", "personal"]),
    st.booleans(),
    st.integers(min_value=0, max_value=10**9),
)
def test_r30_r31_main_is_always_one_and_cross_border_never_has_vertical(subject_type, cross_border, followers):
    """R-30 exactly one main slot; R-31 cross-border: no vertical slot at any follower count."""
    totals = rules.quota_totals(POLICY, subject_type=subject_type, cross_border=cross_border, bound_followers=followers)
    assert totals["main"] == 1
    if cross_border:
        assert totals["vertical"] == 0
    assert all(v >= 0 for v in totals.values())


# ---------------------------------------------------------------- type resolution


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        ((0, 0, 0), "main"),
        ((1, 0, 0), "vertical"),
        ((1, 1, 0), "vertical"),
        ((1, 2, 0), "dedicated"),
        ((1, 2, 2), "dedicated"),
    ],
)
def test_r32_no_choice_falls_back_main_vertical_dedicated(used, expected):
    """R-32 按序后补: main, then vertical, then dedicated."""
    assert rules.resolve_type(quota((1, 2, 3), used), None) == (expected, None)


def test_r32_no_choice_and_every_slot_full_is_quota_exhausted():
    """R-32, R-30 nothing free → QUOTA_EXHAUSTED."""
    assert rules.resolve_type(quota((1, 2, 3), (1, 2, 3)), None) == (None, "QUOTA_EXHAUSTED")


def test_r32_r31_cross_border_fallback_skips_vertical():
    """R-31, R-32 cross-border: main full → dedicated."""
    assert rules.resolve_type(quota((1, 0, 2), (1, 0, 0), cross_border=True), None) == ("dedicated", None)


@pytest.mark.parametrize("chosen", TYPES)
def test_r32_an_explicit_free_type_is_taken(chosen):
    """R-32 the merchant may choose a type."""
    assert rules.resolve_type(quota((1, 2, 3), (0, 0, 0)), chosen) == (chosen, None)


@pytest.mark.parametrize("chosen", TYPES)
def test_r32_an_explicit_full_type_is_refused_not_fallen_back(chosen):
    """R-32 an explicitly chosen full type is refused (TYPE_QUOTA_EXHAUSTED) even when others are free."""
    used = {"main": (1, 0, 0), "vertical": (0, 2, 0), "dedicated": (0, 0, 3)}[chosen]
    assert rules.resolve_type(quota((1, 2, 3), used), chosen) == (None, "TYPE_QUOTA_EXHAUSTED")


def test_r32_explicit_vertical_on_cross_border_is_vertical_not_available():
    """R-31, R-32 a cross-border subject choosing vertical → VERTICAL_NOT_AVAILABLE."""
    assert rules.resolve_type(quota((1, 0, 2), (0, 0, 0), cross_border=True), "vertical") == (
        None,
        "VERTICAL_NOT_AVAILABLE",
    )


def test_r32_explicit_vertical_with_zero_domestic_quota_is_a_full_type():
    """R-31, R-32 VERTICAL_NOT_AVAILABLE is about cross-border; a domestic subject with 0 vertical slots is just full."""
    assert rules.resolve_type(quota((1, 0, 0), (0, 0, 0)), "vertical") == (None, "TYPE_QUOTA_EXHAUSTED")


def test_r32_explicit_choice_shows_as_type_check_in_evaluate():
    """R-04, R-32 with a chosen full type the listed check is TYPE_QUOTA_EXHAUSTED, failing."""
    checks, resolved = rules.evaluate(POLICY, facts(quota=quota((1, 2, 3), (1, 0, 0)), explicit_type="main"))
    assert resolved is None
    assert [c.code for c in rules.failed(checks)] == ["TYPE_QUOTA_EXHAUSTED"]
    checks, resolved = rules.evaluate(
        POLICY, facts(quota=quota((1, 0, 2), cross_border=True), explicit_type="vertical")
    )
    assert [c.code for c in rules.failed(checks)] == ["VERTICAL_NOT_AVAILABLE"]


slots = st.tuples(st.integers(0, 1), st.integers(0, 4), st.integers(0, 4))


@given(
    totals=slots,
    used_frac=st.tuples(st.floats(0, 1.5), st.floats(0, 1.5), st.floats(0, 1.5)),
    explicit=st.sampled_from([None, *TYPES]),
    cross_border=st.booleans(),
)
def test_r32_resolve_type_never_returns_a_full_type(totals, used_frac, explicit, cross_border):
    """R-32, R-33 whatever the counts, a resolved type has a free slot; an explicit choice is never swapped."""
    if cross_border:
        totals = (totals[0], 0, totals[2])
    used = tuple(min(int(t * f + 0.5), t + 1) for t, f in zip(totals, used_frac, strict=False))
    q = quota(totals, used, cross_border=cross_border)
    resolved, failure = rules.resolve_type(q, explicit)
    assert (resolved is None) != (failure is None)
    if resolved is not None:
        assert q.used[resolved] < q.totals[resolved]
        if explicit is not None:
            assert resolved == explicit
        else:
            earlier = TYPES[: TYPES.index(resolved)]
            assert all(q.used[t] >= q.totals[t] for t in earlier)
    elif explicit is None:
        assert failure == "QUOTA_EXHAUSTED"
        assert all(q.used[t] >= q.totals[t] for t in TYPES)
    else:
        vertical_missing = explicit == "vertical" and cross_border
        assert failure == ("VERTICAL_NOT_AVAILABLE" if vertical_missing else "TYPE_QUOTA_EXHAUSTED")
        assert q.used[explicit] >= q.totals[explicit]
