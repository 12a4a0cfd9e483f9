"""Personal data (SPEC R-50): validate at the edge, encrypt at rest, look up by keyed hash, mask on the way out.

Nothing else in the code base touches clear-text ID numbers, phones or names of persons
except through this module.
"""

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import overload

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from guanhao.settings import get_settings

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ID_RE = re.compile(r"\A[0-9]{17}[0-9X]\Z")
# Mainland mobile numbers: 11 digits, 1[3-9]x; an optional +86 / 86 prefix is accepted and dropped.
_PHONE_RE = re.compile(r"\A1[3-9][0-9]{9}\Z")


class InvalidIdNumber(ValueError):
    pass


class InvalidPhone(ValueError):
    pass


def normalize_id_number(value: str) -> str:
    """R-50: validates a GB 11643-1999 citizen ID number (18 digits, ISO 7064 MOD 11-2 check, a real birth date)."""
    candidate = value.strip().upper()
    if not _ID_RE.match(candidate):
        raise InvalidIdNumber("an ID card number has 17 digits and a check character (digit or X)")
    total = sum(int(c) * w for c, w in zip(candidate[:17], _ID_WEIGHTS, strict=True))
    if _ID_CHECK[total % 11] != candidate[17]:
        raise InvalidIdNumber("the check character of the ID card number does not match")
    try:
        born = dt.date(int(candidate[6:10]), int(candidate[10:12]), int(candidate[12:14]))
    except ValueError:
        raise InvalidIdNumber("the ID card number does not hold a real birth date") from None
    if born.year < 1900 or born > dt.date.today():
        raise InvalidIdNumber("the ID card number does not hold a plausible birth date")
    return candidate


def id_check_char(first17: str) -> str:
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def normalize_phone(value: str) -> str:
    """R-50: a mainland mobile number, with +86 and separators dropped, or InvalidPhone."""
    candidate = re.sub(r"[\s-]", "", value.strip())
    if candidate.startswith("+86"):
        candidate = candidate[3:]
    elif candidate.startswith("86") and len(candidate) == 13:
        candidate = candidate[2:]
    if not _PHONE_RE.match(candidate):
        raise InvalidPhone("a mainland mobile number has 11 digits and starts with 13–19")
    return candidate


def normalize_name(value: str) -> str:
    name = value.strip()
    if not 1 <= len(name) <= 64:
        raise ValueError("a name has 1 to 64 characters")
    return name


def mask_id_number(value: str | None) -> str | None:
    """R-50: 110***********1234."""
    if value is None:
        return None
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_phone(value: str | None) -> str | None:
    """R-50: 138****5678."""
    if value is None:
        return None
    return value[:3] + "****" + value[-4:]


def mask_name(value: str | None) -> str | None:
    """R-50: 张*."""
    if value is None:
        return None
    return value[:1] + "*" * max(len(value) - 1, 1)


_ID_IN_TEXT = re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9])")
_PHONE_IN_TEXT = re.compile(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])")


def mask_text(value: str) -> str:
    """R-50: free text (an export, a reason a person typed) with every ID card number and mobile number in it
    masked — the last line of defence where a value was not masked at its source."""
    value = _ID_IN_TEXT.sub(lambda m: mask_id_number(m.group()) or "", value)
    return _PHONE_IN_TEXT.sub(lambda m: mask_phone(m.group()) or "", value)


class Vault:
    """R-50: AES-GCM encryption at rest and HMAC-SHA256 blind indexes (lookup by keyed hash) with the service's
    two keys."""

    _PREFIX = "v1:"

    def __init__(self, pii_key: bytes, hash_key: bytes):
        self._aead = AESGCM(pii_key)
        self._hash_key = hash_key

    @overload
    def encrypt(self, value: str, *, context: str) -> str: ...
    @overload
    def encrypt(self, value: None, *, context: str) -> None: ...
    def encrypt(self, value: str | None, *, context: str) -> str | None:
        if value is None:
            return None
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, value.encode(), context.encode())
        return self._PREFIX + base64.b64encode(nonce + sealed).decode()

    @overload
    def decrypt(self, token: str, *, context: str) -> str: ...
    @overload
    def decrypt(self, token: None, *, context: str) -> None: ...
    def decrypt(self, token: str | None, *, context: str) -> str | None:
        if token is None:
            return None
        if not token.startswith(self._PREFIX):
            raise ValueError("unknown ciphertext version")
        raw = base64.b64decode(token[len(self._PREFIX) :])
        return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()

    def blind_index(self, value: str, *, kind: str) -> str:
        return hmac.new(self._hash_key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


_vault: Vault | None = None


def vault() -> Vault:
    global _vault
    if _vault is None:
        _vault = Vault(*get_settings().keys())
    return _vault


def reset_vault() -> None:
    global _vault
    _vault = None


@dataclass(frozen=True)
class Person:
    """A validated person in clear text; lives only in memory between the edge and the vault."""

    name: str
    id_number: str
    phone: str

    @property
    def id_hash(self) -> str:
        return vault().blind_index(self.id_number, kind="id_number")

    def masked(self) -> dict:
        return {
            "name": mask_name(self.name),
            "id_number": mask_id_number(self.id_number),
            "phone": mask_phone(self.phone),
        }


def seal_person(person: Person, *, context: str) -> dict[str, str]:
    """R-50: column values for a person: encrypted fields plus the ID blind index."""
    v = vault()
    return {
        "name_enc": v.encrypt(person.name, context=context),
        "id_number_enc": v.encrypt(person.id_number, context=context),
        "phone_enc": v.encrypt(person.phone, context=context),
        "id_hash": person.id_hash,
    }


def open_person(name_enc: str, id_number_enc: str, phone_enc: str, *, context: str) -> Person:
    v = vault()
    return Person(
        name=v.decrypt(name_enc, context=context),
        id_number=v.decrypt(id_number_enc, context=context),
        phone=v.decrypt(phone_enc, context=context),
    )


def masked_phone_from(token: str | None, *, context: str) -> str | None:
    return mask_phone(vault().decrypt(token, context=context))
