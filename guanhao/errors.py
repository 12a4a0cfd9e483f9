"""One DomainError base, one class per refusal: `code` (stable, in API.md), `status` and `title`.

Raised by services and edges alike; rendered as RFC 9457 problem+json by the API and as a message
by the consoles. Every sentence (title, detail, reasons) is a catalog `Message`, rendered in the
reader's language on the way out.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from guanhao.i18n import Message, _l


@dataclass(frozen=True)
class Reason:
    """Why something was refused or failed: a stable code, what it means and what to do about it."""

    code: str
    message: "Message | str"
    fix: Message | None = None


class DomainError(Exception):
    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    title: ClassVar[Message] = _l("Internal error")
    # Seconds a client should wait before trying again (API.md: every 429, 503 and 409 IDEMPOTENCY_KEY_IN_FLIGHT
    # carries Retry-After). Raise sites give the real figure; this is the floor when one cannot be known.
    default_retry_after: ClassVar[int | None] = None

    def __init__(
        self,
        detail: Message | None = None,
        *,
        reasons: list[Reason] | None = None,
        retry_after: int | None = None,
        **extra: Any,
    ):
        self.detail = detail or self.title
        self.reasons = reasons
        self.retry_after = retry_after if retry_after is not None else self.default_retry_after
        self.extra = extra
        super().__init__(self.detail.render("en"))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


# ---------------------------------------------------------------- 400, 401, 403, 404, 405


class MalformedBody(DomainError):
    code, status, title = "MALFORMED_BODY", 400, _l("The request body is not valid JSON")


class Unauthenticated(DomainError):
    code, status, title = "UNAUTHENTICATED", 401, _l("Missing or invalid credentials")

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError):
    code, status, title = "FORBIDDEN", 403, _l("Not allowed")


class NotFound(DomainError):
    code, status, title = "NOT_FOUND", 404, _l("Not found")


class MethodNotAllowed(DomainError):
    code, status, title = "METHOD_NOT_ALLOWED", 405, _l("Method not allowed")


# ---------------------------------------------------------------- 409: refused in the current state


class NotEligible(DomainError):
    code, status, title = "NOT_ELIGIBLE", 409, _l("Not eligible for the upgrade")


class TypeQuotaExhausted(DomainError):
    code, status, title = "TYPE_QUOTA_EXHAUSTED", 409, _l("No slot left for the chosen account type")


class QuotaExhausted(DomainError):
    code, status, title = "QUOTA_EXHAUSTED", 409, _l("No account-type slot left")


class VerticalNotAvailable(DomainError):
    code, status, title = "VERTICAL_NOT_AVAILABLE", 409, _l("Vertical accounts are not available to this subject")


class ApplicationInProgress(DomainError):
    code, status, title = "APPLICATION_IN_PROGRESS", 409, _l("An application is already in progress")


class AlreadyUpgraded(DomainError):
    code, status, title = "ALREADY_UPGRADED", 409, _l("The account is already upgraded")


class InvalidTransition(DomainError):
    code, status, title = "INVALID_TRANSITION", 409, _l("Not allowed in the current state")


class WaveFinished(InvalidTransition):
    code, status, title = "WAVE_FINISHED", 409, _l("The wave has finished")


class CancelWindowClosed(DomainError):
    code, status, title = "CANCEL_WINDOW_CLOSED", 409, _l("The cancel window has closed")


class CancelNotAllowed(DomainError):
    code, status, title = "CANCEL_NOT_ALLOWED", 409, _l("This upgrade cannot be cancelled")


class OperatorLimitReached(DomainError):
    code, status, title = (
        "OPERATOR_LIMIT_REACHED",
        409,
        _l("The operator already runs the most official accounts allowed"),
    )


class NotUpgraded(DomainError):
    code, status, title = "NOT_UPGRADED", 409, _l("The account is not upgraded")


class AccountAlreadyBound(DomainError):
    code, status, title = "ACCOUNT_ALREADY_BOUND", 409, _l("The account is bound to another shop")


class UsernameTaken(DomainError):
    code, status, title = "USERNAME_TAKEN", 409, _l("The username is taken")


class IdempotencyKeyInFlight(DomainError):
    code, status, title = "IDEMPOTENCY_KEY_IN_FLIGHT", 409, _l("A request with this Idempotency-Key is in flight")
    default_retry_after = 1


class CodeExpired(DomainError):
    code, status, title = "CODE_EXPIRED", 409, _l("The code has expired")


class ConfirmationExpired(DomainError):
    code, status, title = "CONFIRMATION_EXPIRED", 409, _l("The confirmation has expired")


class ManagedBySubject(DomainError):
    code, status, title = "MANAGED_BY_SUBJECT", 409, _l("Managed by the subject since the upgrade")


# ---------------------------------------------------------------- 422: the payload is invalid


class ValidationFailed(DomainError):
    code, status, title = "VALIDATION_ERROR", 422, _l("The request is invalid")


class InvalidIdNumber(DomainError):
    code, status, title = "INVALID_ID_NUMBER", 422, _l("Invalid ID card number")


class InvalidPhone(DomainError):
    code, status, title = "INVALID_PHONE", 422, _l("Invalid mobile number")


class TermsNotAccepted(DomainError):
    code, status, title = "TERMS_NOT_ACCEPTED", 422, _l("The terms must be accepted")


class CodeInvalid(DomainError):
    code, status, title = "CODE_INVALID", 422, _l("Wrong code")


class IdempotencyKeyReused(DomainError):
    code, status, title = "IDEMPOTENCY_KEY_REUSED", 422, _l("The Idempotency-Key was used with another request")


# ---------------------------------------------------------------- 413, 429, 503


class PayloadTooLarge(DomainError):
    code, status, title = "PAYLOAD_TOO_LARGE", 413, _l("The request body is too large")


class DailyPostLimitReached(DomainError):
    code, status, title = "DAILY_POST_LIMIT_REACHED", 429, _l("Daily post limit reached")
    default_retry_after = 60


class TooManyAttempts(DomainError):
    code, status, title = "TOO_MANY_ATTEMPTS", 429, _l("Too many attempts")
    default_retry_after = 60


class ServiceUnavailable(DomainError):
    code, status, title = "SERVICE_UNAVAILABLE", 503, _l("The service is busy or its database is unreachable")
    default_retry_after = 1


def _all(cls: type[DomainError]) -> list[type[DomainError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _all(direct))]


BY_CODE: dict[str, type[DomainError]] = {cls.code: cls for cls in _all(DomainError)}


def field_errors(errs: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Pydantic errors without the offending input (it may be personal data, R-50)."""
    out = []
    for e in errs:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        out.append({"field": ".".join(loc), "type": e.get("type"), "message": e.get("msg")})
    return out


def invalid_payload(errs: Sequence[Mapping[str, Any]]) -> DomainError:
    """R-63: the error for a set of payload errors: the specific personal-data codes win (API.md, R-50)."""
    types = {e.get("type") for e in errs}
    fields = field_errors(errs)
    detail = _l(
        "Invalid fields: {fields}", fields="; ".join(f"{f['field'] or '(body)'}: {f['message']}" for f in fields)
    )
    cls: type[DomainError] = ValidationFailed
    if "invalid_id_number" in types:
        cls = InvalidIdNumber
    elif "invalid_phone" in types:
        cls = InvalidPhone
    return cls(detail, errors=fields)
