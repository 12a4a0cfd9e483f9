"""Schema pieces shared by every domain's API: strict scalars, the person block, pages, problems."""

import datetime as dt
import re
import unicodedata
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from guanhao import pii

# Strict where lax parsing would accept what the schema does not say (false as 0, "5" as 5).
INT32_MAX = 2_147_483_647  # the columns are 32-bit on PostgreSQL
Int = Annotated[int, Field(strict=True, ge=-INT32_MAX, le=INT32_MAX)]
NonNegInt = Annotated[int, Field(strict=True, ge=0, le=INT32_MAX)]
Bool = Annotated[bool, Field(strict=True)]


def _a_number(value: Any) -> Any:
    # Lax float parsing would take true as 1.0 and "4.6" as 4.6; the schema says number.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError("float_type", "must be a number")
    return value


Score = Annotated[float, BeforeValidator(_a_number), Field(ge=0, le=5, description="店铺体验分, 0–5")]
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_ID_PATTERN)]
# Ids in paths: the same shape as ids in bodies (synced ids are chosen by the platform, ≤ 64 characters).
IdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=_ID_PATTERN)]

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    # Pydantic alone also takes "0" or ".0" as a Unix timestamp: the document promises RFC 3339 with an offset.
    if isinstance(value, dt.datetime) or (isinstance(value, str) and _RFC3339.fullmatch(value)):
        return value
    raise PydanticCustomError("datetime_format", "give an RFC 3339 time with an offset, e.g. 2026-01-01T09:00:00+08:00")


Rfc3339 = Annotated[dt.datetime, BeforeValidator(_rfc3339)]


# ---------------------------------------------------------------- text that hides nothing

# Line breaks and tabs are the only controls free text may hold; a name holds none.
_FREE_TEXT_CONTROLS = frozenset("\t\n\r")
# Cc: C0 and C1 controls (U+0085, U+009B …); Cf: format characters (bidi overrides U+202E, zero-width
# U+200B..U+200D, U+2060, the BOM U+FEFF …); Cs: lone surrogates, which no encoding can store.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Text made only of these ranges holds no refused code point (tests/test_text_fast_path.py walks every one of
# them): printable ASCII with tab and line breaks, CJK symbols and punctuation, CJK unified ideographs, fullwidth
# forms. Most names the platform syncs are such text, and a match spares the walk code point by code point.
_COMMON_TEXT = re.compile(r"[\t\n\r\x20-\x7e\u3000-\u303f\u4e00-\u9fff\uff01-\uff60]*")
_LINE_BREAKS = re.compile(r"[\t\n\r]")


def _is_noncharacter(cp: int) -> bool:
    return 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE


def refused_character(text: str) -> str | None:
    """The first code point no text field may hold — a control (but tab and line breaks), a format
    character, a surrogate or a noncharacter — as "U+XXXX", or None."""
    if text.isascii():
        found = _ASCII_CONTROL.search(text)
        return f"U+{ord(found.group()):04X}" if found else None
    if _COMMON_TEXT.fullmatch(text):
        return None
    for ch in text:
        if ch not in _FREE_TEXT_CONTROLS and _refused_alone(ch):
            return f"U+{ord(ch):04X}"
    return None


def _refused_alone(ch: str) -> bool:
    return unicodedata.category(ch) in _REFUSED_CATEGORIES or _is_noncharacter(ord(ch))


def _clean(value: Any, loc: tuple, problems: list) -> Any:
    """Every string NFC-normalised; every refused code point noted with the field it is in."""
    if isinstance(value, str):
        return _clean_str(value, loc, problems)
    if isinstance(value, dict):
        cleaned = {}
        for k, v in value.items():
            kind = type(v)
            if kind is str and v.isascii() and _ASCII_CONTROL.search(v) is None:
                cleaned[k] = v  # the common case: nothing to normalise, nothing refused, no location to build
            elif isinstance(v, (str, dict, list)):
                cleaned[k] = _clean(v, (*loc, k), problems)
            else:
                cleaned[k] = v
        return cleaned
    if isinstance(value, list):
        return [_clean(v, (*loc, i), problems) for i, v in enumerate(value)]
    return value


def _clean_str(value: str, loc: tuple, problems: list) -> str:
    bad = refused_character(value)
    if bad is not None:
        problems.append(
            InitErrorDetails(
                type=PydanticCustomError(
                    "forbidden_character",
                    "contains {code_point}: no control, format, surrogate or noncharacter code points",
                    {"code_point": bad},
                ),
                loc=loc,
                input=bad,
            )
        )
        return value
    return value if value.isascii() else unicodedata.normalize("NFC", value)


def _one_visible_line(value: str) -> str:
    # After NFC and stripping: a name shows at least one letter, digit, mark of punctuation or symbol — not only
    # combining marks or spaces — and stays on one line.
    if _COMMON_TEXT.fullmatch(value):  # no U+2028/U+2029 in those ranges: only tab and line breaks to look for
        if _LINE_BREAKS.search(value):
            raise PydanticCustomError("one_line", "must be one line")
    elif any(ch in _FREE_TEXT_CONTROLS or unicodedata.category(ch) in ("Zl", "Zp") for ch in value):
        raise PydanticCustomError("one_line", "must be one line")
    if not any(unicodedata.category(ch)[0] in "LNPS" for ch in value):
        raise PydanticCustomError("no_visible_character", "must have at least one visible character")
    return value


# Names a person reads — subjects, shops, nicknames (Text), people (PersonName): stripped, one line, visible.
Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_one_visible_line)
]
PersonName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), AfterValidator(_one_visible_line)
]


# Ids in queries: the same shape as ids in paths.
IdQuery = Annotated[str, Query(min_length=1, max_length=64, pattern=_ID_PATTERN)]
ID_RE = re.compile(_ID_PATTERN)


class RequestBody(BaseModel):
    """Every request body: unknown fields refused; every string NFC-normalised, and a control, format,
    surrogate or noncharacter code point refused as an error of the field that holds it (R-63)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _clean_text(cls, data: Any) -> Any:
        problems: list[InitErrorDetails] = []
        cleaned = _clean(data, (), problems)
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return cleaned


def phone_value(value: str) -> str:
    """R-50: a mainland mobile number is validated on input (INVALID_PHONE)."""
    try:
        return pii.normalize_phone(value)
    except pii.InvalidPhone as exc:
        raise PydanticCustomError("invalid_phone", str(exc)) from None


# A mainland mobile number, validated and normalised (+86 and separators dropped) on the way in.
Phone = Annotated[
    str, AfterValidator(phone_value), Field(description="mainland mobile number", examples=["13800138000"])
]


class PersonIn(RequestBody):
    """A real-name identity: validated here, sealed by guanhao.pii, never echoed back in clear (R-50)."""

    name: PersonName
    id_number: Annotated[
        str, Field(description="18-character mainland ID card number (GB 11643)", examples=["11010519491231002X"])
    ]
    phone: Phone

    @field_validator("id_number")
    @classmethod
    def _id(cls, value: str) -> str:
        try:
            return pii.normalize_id_number(value)
        except pii.InvalidIdNumber as exc:
            raise PydanticCustomError("invalid_id_number", str(exc)) from None

    def person(self) -> pii.Person:
        return pii.Person(name=self.name, id_number=self.id_number, phone=self.phone)


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
