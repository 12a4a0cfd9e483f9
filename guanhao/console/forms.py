"""Reading the consoles' forms with the API's own validation (the same Pydantic types), errors worded for a field."""

from dataclasses import dataclass, field

from pydantic import ValidationError

from guanhao import pii
from guanhao.i18n import Message, _l
from guanhao.schemas import PersonIn, phone_value

FIELD_ERRORS: dict[str, Message] = {
    "invalid_id_number": _l("Enter a valid 18-character ID card number"),
    "invalid_phone": _l("Enter a valid mainland mobile number (11 digits)"),
    "name": _l("Enter the name as on the ID card"),
    "code": _l("Enter the 6-digit code from the SMS"),
}


@dataclass
class PersonForm:
    name: str = ""
    id_number: str = ""
    phone: str = ""
    errors: dict[str, Message] = field(default_factory=dict)

    def person(self) -> pii.Person | None:
        """The validated person, or None with `errors` filled in."""
        try:
            valid = PersonIn(name=self.name, id_number=self.id_number, phone=self.phone)
        except ValidationError as exc:
            for err in exc.errors():
                where = str(err["loc"][0]) if err["loc"] else "name"
                kind = err.get("type", "")
                self.errors[where] = FIELD_ERRORS.get(kind) or FIELD_ERRORS.get(where) or FIELD_ERRORS["name"]
            return None
        return valid.person()


def person_form(form: dict, prefix: str = "") -> PersonForm:
    return PersonForm(
        name=str(form.get(f"{prefix}name", "")).strip()[:64],
        id_number=str(form.get(f"{prefix}id_number", "")).strip()[:32],
        phone=str(form.get(f"{prefix}phone", "")).strip()[:20],
    )


def phone_or_error(value: str) -> tuple[str | None, Message | None]:
    try:
        return phone_value(value.strip()[:20]), None
    except ValueError:
        return None, FIELD_ERRORS["invalid_phone"]


def code_or_error(value: str) -> tuple[str | None, Message | None]:
    code = value.strip()
    if len(code) == 6 and code.isdigit():
        return code, None
    return None, FIELD_ERRORS["code"]
