"""The decisions a merchant's application and an auto-upgrade wave share (guanhao.upgrades.rules):
auto_decision (R-11), needs_staff_review (R-16), operator_id_hash (R-40). Pure: no database."""

import dataclasses

from guanhao.policy import load_policy
from guanhao.upgrades import rules
from tests.upgrades.test_rules import facts, quota

POLICY = load_policy()
THRESHOLD = POLICY.review.staff_review_min_followers


def test_r11_a_shop_passing_every_check_is_upgraded_with_the_type_the_fallback_gives():
    assert rules.auto_decision(POLICY, facts(), opted_out=False) == rules.Upgrade("main")
    assert rules.auto_decision(POLICY, facts(quota=quota(used=(1, 2, 0))), opted_out=False) == rules.Upgrade(
        "dedicated"
    )


def test_r11_the_first_failed_check_is_the_counted_reason():
    decision = rules.auto_decision(POLICY, facts(shop_status="suspended", violations_90d=3), opted_out=False)
    assert decision == rules.Skip("SHOP_NOT_ACTIVE")
    assert rules.auto_decision(POLICY, facts(quota=quota(used=(1, 2, 3))), opted_out=False) == rules.Skip(
        "QUOTA_EXHAUSTED"
    )


def test_r11_r16_a_wave_skips_an_account_that_would_wait_for_staff():
    assert rules.auto_decision(POLICY, facts(followers=THRESHOLD), opted_out=False) == rules.Skip("NEEDS_STAFF_REVIEW")
    assert rules.auto_decision(POLICY, facts(followers=THRESHOLD - 1), opted_out=False) == rules.Upgrade("main")


def test_r11_a_merchant_who_cancelled_an_auto_upgrade_opted_out_of_waves():
    assert rules.auto_decision(POLICY, facts(), opted_out=True) == rules.Skip("AUTO_UPGRADE_CANCELLED")
    # Opting out wins over any other reason: the merchant's choice is what the wave reports.
    assert rules.auto_decision(POLICY, facts(shop_type="personal"), opted_out=True) == rules.Skip(
        "AUTO_UPGRADE_CANCELLED"
    )


def test_r16_staff_review_from_the_policys_follower_count_on():
    assert not rules.needs_staff_review(POLICY, THRESHOLD - 1)
    assert rules.needs_staff_review(POLICY, THRESHOLD)
    lower = POLICY.model_copy(update={"review": POLICY.review.model_copy(update={"staff_review_min_followers": 10})})
    assert rules.needs_staff_review(lower, 10) and not rules.needs_staff_review(lower, 9)
    off = POLICY.model_copy(update={"review": POLICY.review.model_copy(update={"staff_review_min_followers": None})})
    assert not rules.needs_staff_review(off, 10**9)
    assert rules.auto_decision(off, facts(followers=10**9), opted_out=False) == rules.Upgrade("main")


def test_r40_the_operator_is_the_holder_unless_the_merchant_names_someone():
    assert rules.operator_id_hash(named=None, holder="h-holder") == "h-holder"
    assert rules.operator_id_hash(named="h-named", holder="h-holder") == "h-named"
    assert rules.operator_id_hash(named=None, holder=None) is None


def test_r41_r11_a_holder_at_capacity_is_skipped_by_a_wave():
    full = dataclasses.replace(facts(), operator_used=POLICY.operators.capacity)
    assert rules.auto_decision(POLICY, full, opted_out=False) == rules.Skip("OPERATOR_LIMIT_REACHED")
