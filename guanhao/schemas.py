"""Schema pieces shared by every domain's API: strict scalars, the person block, pages, problems."""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from guanhao import pii

# Strict where lax parsing would accept what the schema does not say (false as 0, "5" as 5).
Int = Annotated[int, Field(strict=True)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
Bool = Annotated[bool, Field(strict=True)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PersonIn(RequestBody):
    """A real-name identity: validated here, sealed by guanhao.pii, never echoed back in clear."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    id_number: Annotated[str, Field(description="18-character mainland ID card number (GB 11643)", examples=["11010519491231002X"])]
    phone: Annotated[str, Field(description="mainland mobile number", examples=["13800138000"])]

    @field_validator("id_number")
    @classmethod
    def _id(cls, value: str) -> str:
        try:
            return pii.normalize_id_number(value)
        except pii.InvalidIdNumber as exc:
            raise PydanticCustomError("invalid_id_number", str(exc)) from None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return phone_value(value)

    def person(self) -> pii.Person:
        return pii.Person(name=self.name, id_number=self.id_number, phone=self.phone)


def phone_value(value: str) -> str:
    try:
        return pii.normalize_phone(value)
    except pii.InvalidPhone as exc:
        raise PydanticCustomError("invalid_phone", str(exc)) from None


class PersonOut(BaseModel):
    name: str = Field(examples=["张*"])
    id_number: str = Field(examples=["110***********1234"])
    phone: str = Field(examples=["138****5678"])


class Reason(BaseModel):
    code: str
    message: str
    fix: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    reasons: list[Reason] | None = None
    errors: list[dict[str, Any]] | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "Malformed body (MALFORMED_BODY)",
        401: "No or bad token (UNAUTHENTICATED)",
        403: "Not for this role (FORBIDDEN)",
        404: "Not found, or not the caller's (NOT_FOUND)",
        409: "Refused in the current state (see code)",
        422: "Invalid input (see code)",
        429: "Limit reached (see code)",
    }
    return {
        s: {"model": Problem, "description": described[s], "content": {"application/problem+json": {}}}
        for s in statuses
    }
