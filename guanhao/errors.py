"""One DomainError base; one subclass per rule. Rendered as RFC 9457 problem+json by app.py."""

from typing import Any, ClassVar

# code → (zh-CN title, en title)
TITLES: dict[str, tuple[str, str]] = {
    "MALFORMED_BODY": ("请求体不是有效的 JSON", "The request body is not valid JSON"),
    "UNAUTHENTICATED": ("未登录或令牌无效", "Missing or invalid credentials"),
    "FORBIDDEN": ("无权执行此操作", "Not allowed"),
    "NOT_FOUND": ("未找到", "Not found"),
    "NOT_ELIGIBLE": ("不满足升级条件", "Not eligible for the upgrade"),
    "TYPE_QUOTA_EXHAUSTED": ("所选账号类型额度已满", "No slot left for the chosen account type"),
    "QUOTA_EXHAUSTED": ("账号类型额度已满", "No account-type slot left"),
    "VERTICAL_NOT_AVAILABLE": ("跨境商家没有垂直号", "Vertical accounts are not available to this subject"),
    "APPLICATION_IN_PROGRESS": ("已有升级申请在进行中", "An application is already in progress"),
    "ALREADY_UPGRADED": ("账号已升级", "The account is already upgraded"),
    "INVALID_TRANSITION": ("当前状态不允许此操作", "Not allowed in the current state"),
    "CANCEL_WINDOW_CLOSED": ("已超过取消升级时效", "The cancel window has closed"),
    "CANCEL_NOT_ALLOWED": ("该升级不支持取消", "This upgrade cannot be cancelled"),
    "OPERATOR_LIMIT_REACHED": (
        "运营人可运营的官方账号数已达上限",
        "The operator already runs the most official accounts allowed",
    ),
    "NOT_UPGRADED": ("账号尚未升级", "The account is not upgraded"),
    "ACCOUNT_ALREADY_BOUND": ("该抖音账号已绑定其他店铺", "The account is bound to another shop"),
    "IDEMPOTENCY_KEY_IN_FLIGHT": (
        "相同的 Idempotency-Key 请求正在处理",
        "A request with this Idempotency-Key is in flight",
    ),
    "CODE_EXPIRED": ("验证码已过期", "The code has expired"),
    "VALIDATION_ERROR": ("请求参数有误", "The request is invalid"),
    "INVALID_ID_NUMBER": ("身份证号无效", "Invalid ID card number"),
    "INVALID_PHONE": ("手机号无效", "Invalid mobile number"),
    "TERMS_NOT_ACCEPTED": ("请先同意升级协议", "The terms must be accepted"),
    "CODE_INVALID": ("验证码错误", "Wrong code"),
    "IDEMPOTENCY_KEY_REUSED": ("Idempotency-Key 已用于其他请求", "The Idempotency-Key was used with another request"),
    "DAILY_POST_LIMIT_REACHED": ("今日投稿已达上限", "Daily post limit reached"),
    "TOO_MANY_ATTEMPTS": ("尝试次数过多", "Too many attempts"),
    "INTERNAL_ERROR": ("服务内部错误", "Internal error"),
}


def title(code: str, lang: str) -> str:
    zh, en = TITLES.get(code, (code, code))
    return en if lang == "en" else zh


class DomainError(Exception):
    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500

    def __init__(self, detail: str | None = None, *, reasons: list[dict] | None = None, **extra: Any):
        super().__init__(detail or self.code)
        self.detail = detail
        self.reasons = reasons
        self.extra = extra


def _error(name: str, code: str, status: int) -> type[DomainError]:
    return type(name, (DomainError,), {"code": code, "status": status})


MalformedBody = _error("MalformedBody", "MALFORMED_BODY", 400)
Unauthenticated = _error("Unauthenticated", "UNAUTHENTICATED", 401)
Forbidden = _error("Forbidden", "FORBIDDEN", 403)
NotFound = _error("NotFound", "NOT_FOUND", 404)
NotEligible = _error("NotEligible", "NOT_ELIGIBLE", 409)
TypeQuotaExhausted = _error("TypeQuotaExhausted", "TYPE_QUOTA_EXHAUSTED", 409)
QuotaExhausted = _error("QuotaExhausted", "QUOTA_EXHAUSTED", 409)
VerticalNotAvailable = _error("VerticalNotAvailable", "VERTICAL_NOT_AVAILABLE", 409)
ApplicationInProgress = _error("ApplicationInProgress", "APPLICATION_IN_PROGRESS", 409)
AlreadyUpgraded = _error("AlreadyUpgraded", "ALREADY_UPGRADED", 409)
InvalidTransition = _error("InvalidTransition", "INVALID_TRANSITION", 409)
CancelWindowClosed = _error("CancelWindowClosed", "CANCEL_WINDOW_CLOSED", 409)
CancelNotAllowed = _error("CancelNotAllowed", "CANCEL_NOT_ALLOWED", 409)
OperatorLimitReached = _error("OperatorLimitReached", "OPERATOR_LIMIT_REACHED", 409)
NotUpgraded = _error("NotUpgraded", "NOT_UPGRADED", 409)
AccountAlreadyBound = _error("AccountAlreadyBound", "ACCOUNT_ALREADY_BOUND", 409)
IdempotencyKeyInFlight = _error("IdempotencyKeyInFlight", "IDEMPOTENCY_KEY_IN_FLIGHT", 409)
CodeExpired = _error("CodeExpired", "CODE_EXPIRED", 409)
ValidationFailed = _error("ValidationFailed", "VALIDATION_ERROR", 422)
InvalidIdNumberError = _error("InvalidIdNumberError", "INVALID_ID_NUMBER", 422)
InvalidPhoneError = _error("InvalidPhoneError", "INVALID_PHONE", 422)
TermsNotAccepted = _error("TermsNotAccepted", "TERMS_NOT_ACCEPTED", 422)
CodeInvalid = _error("CodeInvalid", "CODE_INVALID", 422)
IdempotencyKeyReused = _error("IdempotencyKeyReused", "IDEMPOTENCY_KEY_REUSED", 422)
DailyPostLimitReached = _error("DailyPostLimitReached", "DAILY_POST_LIMIT_REACHED", 429)
TooManyAttempts = _error("TooManyAttempts", "TOO_MANY_ATTEMPTS", 429)

BY_CODE: dict[str, type[DomainError]] = {cls.code: cls for cls in DomainError.__subclasses__()}


def problem(code: str, status: int, lang: str, detail: str | None, **extra: Any) -> dict:
    body = {
        "type": f"urn:guanhao:problem:{code.lower().replace('_', '-')}",
        "title": title(code, lang),
        "status": status,
        "code": code,
        "detail": detail or title(code, lang),
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def validation_code(errs: list[dict]) -> str:
    """The stable code for a set of payload errors: the specific personal-data codes win."""
    types = {e.get("type") for e in errs}
    if "invalid_id_number" in types:
        return "INVALID_ID_NUMBER"
    if "invalid_phone" in types:
        return "INVALID_PHONE"
    return "VALIDATION_ERROR"


def field_errors(errs: list[dict]) -> list[dict]:
    """Pydantic errors without the offending input (it may be personal data)."""
    out = []
    for e in errs:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        out.append({"field": ".".join(loc), "type": e.get("type"), "message": e.get("msg")})
    return out
