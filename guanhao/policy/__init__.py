"""The platform policy: every threshold, quota, window and limit of SPEC marked *policy*.

One typed object, loaded once from a TOML file (the built-in `default.toml`, or the file
named by GUANHAO_POLICY). A bad file stops the service at start with a message naming the key.
"""

import datetime as dt
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from guanhao.settings import get_settings

DEFAULT_POLICY_PATH = Path(__file__).with_name("default.toml")

ShopType = Literal["official_flagship", "flagship", "specialty", "franchise", "enterprise", "individual", "personal"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TypeQuota(_Strict):
    main: int = Field(ge=0, le=1)
    vertical: int = Field(ge=0)
    dedicated: int = Field(ge=0)


class FollowerBonus(_Strict):
    threshold: int = Field(ge=0)
    vertical: int = Field(ge=0)
    dedicated: int = Field(ge=0)


class Quotas(_Strict):
    enterprise: TypeQuota
    individual_business: TypeQuota
    personal: TypeQuota
    cross_border: TypeQuota
    follower_bonus: FollowerBonus

    @model_validator(mode="after")
    def _cross_border_has_no_vertical(self) -> "Quotas":
        """R-31: no policy gives cross-border subjects a vertical slot."""
        if self.cross_border.vertical != 0:
            raise ValueError(
                "quotas.cross_border.vertical must be 0 (SPEC R-31: cross-border subjects have no vertical slot)"
            )
        return self


class Eligibility(_Strict):
    shop_types: frozenset[ShopType]
    max_violations_90d: int = Field(ge=0)
    require_real_name: bool
    allowed_shop_statuses: frozenset[Literal["active", "suspended", "closed"]]
    allowed_account_statuses: frozenset[Literal["normal", "restricted", "banned"]]

    @model_validator(mode="after")
    def _personal_never(self) -> "Eligibility":
        """R-01: no policy makes personal shops eligible."""
        if "personal" in self.shop_types:
            raise ValueError("eligibility.shop_types may not contain 'personal' (SPEC R-01)")
        return self


class Confirmation(_Strict):
    ttl_hours: int = Field(gt=0)
    agreement_version: str = Field(min_length=1)


class Review(_Strict):
    staff_review_min_followers: int | None = Field(default=None, ge=0)


class Cancel(_Strict):
    window_days: int = Field(ge=0)
    allow_manual: bool


class Posting(_Strict):
    limit_before: int = Field(ge=0)
    limit_after: int = Field(ge=0)
    timezone: str


class Operators(_Strict):
    capacity: int = Field(ge=1)


class AutoUpgrade(_Strict):
    min_experience_score: float = Field(ge=0, le=5)


class Sms(_Strict):
    code_ttl_seconds: int = Field(gt=0)
    max_attempts: int = Field(ge=1)
    resend_cooldown_seconds: int = Field(ge=0)


class Webhooks(_Strict):
    max_attempts: int = Field(ge=1)
    backoff_base_seconds: float = Field(gt=0)
    backoff_max_seconds: float = Field(gt=0)
    timeout_seconds: float = Field(gt=0)


class Idempotency(_Strict):
    retention_hours: int = Field(ge=24)
    in_flight_timeout_seconds: int = Field(gt=0)


class Login(_Strict):
    """Console logins: attempts per username and per client address in a window, and how long a session lasts."""

    max_attempts_per_user: int = Field(default=5, ge=1)
    max_attempts_per_client: int = Field(default=30, ge=1)
    window_minutes: int = Field(default=15, ge=1)
    session_hours: int = Field(default=12, ge=1)


class Worker(_Strict):
    """The background worker (`guanhao worker`): how often each duty runs, and how long a worker holds a duty it
    took. `intervals` names duties of guanhao.jobs.DUTIES; a duty not named keeps its registered default."""

    intervals: dict[str, float] = Field(default_factory=dict)
    lease_seconds: float = Field(default=120.0, gt=0)
    # Longest sleep of an idle duty loop: how soon a worker notices a duty another worker let go of.
    poll_seconds: float = Field(default=1.0, gt=0)
    # Shops per wave chunk (one transaction each); a killed worker loses at most its open chunk.
    wave_chunk: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _positive(self) -> "Worker":
        for name, seconds in self.intervals.items():
            if seconds <= 0:
                raise ValueError(f"worker.intervals.{name} must be more than 0 seconds")
        return self


class Policy(_Strict):
    eligibility: Eligibility
    quotas: Quotas
    confirmation: Confirmation
    review: Review
    cancel: Cancel
    posting: Posting
    operators: Operators
    auto_upgrade: AutoUpgrade
    sms: Sms
    idempotency: Idempotency
    webhooks: Webhooks
    login: Login = Login()
    worker: Worker = Worker()
    upgrade_deadline: dt.datetime | None = None

    @model_validator(mode="after")
    def _deadline_has_offset(self) -> "Policy":
        if self.upgrade_deadline is not None and self.upgrade_deadline.tzinfo is None:
            raise ValueError("upgrade_deadline needs an offset, e.g. 2027-01-01T00:00:00+08:00")
        return self

    @property
    def confirmation_ttl(self) -> dt.timedelta:
        return dt.timedelta(hours=self.confirmation.ttl_hours)

    @property
    def cancel_window(self) -> dt.timedelta:
        return dt.timedelta(days=self.cancel.window_days)


class PolicyError(Exception):
    pass


def load_policy(path: Path | None = None) -> Policy:
    path = path or DEFAULT_POLICY_PATH
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from None
    try:
        return Policy.model_validate(_coerce(raw))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {key}: {err['msg']}")
        raise PolicyError(f"policy file {path} is invalid:\n" + "\n".join(lines)) from None


def _coerce(raw: dict) -> dict:
    # TOML has native dates and lists; the strict model wants frozensets and floats where declared.
    out = dict(raw)
    elig = out.get("eligibility")
    if isinstance(elig, dict):
        elig = dict(elig)
        for key in ("shop_types", "allowed_shop_statuses", "allowed_account_statuses"):
            if isinstance(elig.get(key), list):
                elig[key] = frozenset(elig[key])
        out["eligibility"] = elig
    auto = out.get("auto_upgrade")
    if (
        isinstance(auto, dict)
        and isinstance(auto.get("min_experience_score"), int)
        and not isinstance(auto.get("min_experience_score"), bool)
    ):
        out["auto_upgrade"] = {**auto, "min_experience_score": float(auto["min_experience_score"])}
    worker = out.get("worker")
    if isinstance(worker, dict):
        worker = dict(worker)
        for key in ("lease_seconds", "poll_seconds"):
            if isinstance(worker.get(key), int) and not isinstance(worker.get(key), bool):
                worker[key] = float(worker[key])
        if isinstance(worker.get("intervals"), dict):
            worker["intervals"] = {
                k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                for k, v in worker["intervals"].items()
            }
        out["worker"] = worker
    return out


@lru_cache
def get_policy() -> Policy:
    return load_policy(get_settings().policy)
