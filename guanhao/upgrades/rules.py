"""Pure rules: eligibility checks (SPEC R-01..R-04, R-30..R-32, R-41), quotas and type resolution.

No database, no clock: plain values in, plain values out.
"""

import datetime as dt
from dataclasses import dataclass, field

from guanhao.policy import Policy
from guanhao.upgrades.models import FALLBACK_ORDER, AccountType

# code → (zh-CN message, en message, zh-CN fix, en fix)
CATALOG: dict[str, tuple[str, str, str, str]] = {
    "SHOP_TYPE_NOT_ELIGIBLE": (
        "店铺类型需为官方旗舰店、旗舰店、专卖店、专营店、企业店或个体店（个人店不支持升级）",
        "The shop type must be official flagship, flagship, specialty, franchise, enterprise or individual (personal shops cannot upgrade)",
        "个人店可先升级为个体店或企业店后再申请",
        "Upgrade the personal shop to an individual or enterprise shop first",
    ),
    "SHOP_NOT_ACTIVE": (
        "店铺需处于正常营业状态",
        "The shop must be active",
        "处理店铺的限制或关店状态后再申请",
        "Resolve the shop's suspension or closure, then apply again",
    ),
    "LICENSE_EXPIRED": (
        "资质主体的营业执照需在有效期内",
        "The subject's business licence must be valid",
        "在「店铺」-「资质管理」中更新营业执照",
        "Renew the business licence in the shop's qualification settings",
    ),
    "ACCOUNT_NOT_BOUND": (
        "店铺需已绑定官方抖音账号",
        "The shop must have a bound official Douyin account",
        "在「经营账号管理」中绑定店铺官方账号",
        "Bind the shop's official account under account management",
    ),
    "ACCOUNT_NOT_VERIFIED": (
        "抖音账号需已完成实名认证",
        "The Douyin account must be real-name verified",
        "请账号实名人在抖音 App 中完成实名认证",
        "Ask the account holder to finish real-name verification in the Douyin app",
    ),
    "ACCOUNT_NOT_NORMAL": (
        "抖音账号状态需正常（未被限制或封禁）",
        "The Douyin account must be in normal status (not restricted or banned)",
        "处理账号的限制或封禁后再申请",
        "Resolve the account's restriction or ban, then apply again",
    ),
    "ACCOUNT_HAS_VIOLATIONS": (
        "抖音账号近 90 天违规次数超过上限",
        "The Douyin account has too many violations in the last 90 days",
        "违规记录满 90 天后或申诉成功后再申请",
        "Apply again once the violations are older than 90 days or appealed",
    ),
    "ALREADY_UPGRADED": (
        "抖音账号不能是已升级的官方账号",
        "The account must not be upgraded already",
        "该账号已升级，无需再次申请",
        "The account is already upgraded; nothing to do",
    ),
    "APPLICATION_IN_PROGRESS": (
        "店铺不能有其他进行中的升级申请",
        "The shop must have no other application in progress",
        "等待当前申请完成，或撤回后再申请",
        "Wait for the current application to finish, or withdraw it",
    ),
    "QUOTA_EXHAUSTED": (
        "资质主体需有可用的账号类型额度",
        "The subject must have a free account-type slot",
        "主账号、垂直号、专用号额度均已用完；可取消其他店铺的自动升级以释放额度",
        "Main, vertical and dedicated slots are all in use; cancelling another shop's auto upgrade frees one",
    ),
    "TYPE_QUOTA_EXHAUSTED": (
        "所选账号类型需有可用额度",
        "The chosen account type must have a free slot",
        "改选其他账号类型，或不选择类型由系统按主账号→垂直号→专用号顺序分配",
        "Choose another type, or none to get main → vertical → dedicated in order",
    ),
    "VERTICAL_NOT_AVAILABLE": (
        "资质主体需可使用垂直号（跨境商家没有垂直号）",
        "The subject must be allowed vertical accounts (cross-border subjects have none)",
        "跨境商家没有垂直号，请选择主账号或专用号",
        "Cross-border subjects have no vertical accounts; choose main or dedicated",
    ),
    "OPERATOR_LIMIT_REACHED": (
        "运营人可运营的官方账号数需未达上限",
        "The operator must be below the limit of official accounts one person may run",
        "更换运营人，或先为该运营人正在运营的其他账号更换运营人",
        "Name another operator, or replace this person on one of their other accounts first",
    ),
}

NOT_CHECKED = ("尚未绑定官方账号，无法检查此项", "Not checked: no official account is bound")


@dataclass(frozen=True)
class Check:
    code: str
    passed: bool
    evaluated: bool = True

    def render(self, lang: str) -> dict:
        zh, en, fix_zh, fix_en = CATALOG[self.code]
        if not self.evaluated:
            message = NOT_CHECKED[1] if lang == "en" else NOT_CHECKED[0]
            fix = CATALOG["ACCOUNT_NOT_BOUND"][3 if lang == "en" else 2]
        else:
            message = en if lang == "en" else zh
            fix = None if self.passed else (fix_en if lang == "en" else fix_zh)
        return {"code": self.code, "passed": self.passed, "evaluated": self.evaluated, "message": message, "fix": fix}

    def reason(self, lang: str = "zh-CN") -> dict:
        rendered = self.render(lang)
        return {"code": self.code, "message": rendered["message"], "fix": rendered["fix"]}


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
    already_upgraded: bool
    other_in_progress: bool
    quota: QuotaFacts
    explicit_type: str | None
    operator_used: int | None
    operator_capacity: int = field(default=5)


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
