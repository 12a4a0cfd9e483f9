"""Every type of event the outbox carries (SPEC R-61, API.md "Types include …"), in one place: `emit`
refuses any other, and webhook endpoints may subscribe to these only."""

TYPES: tuple[str, ...] = (
    "upgrade.submitted",
    "upgrade.confirmation_requested",
    "upgrade.reviewing",
    "upgrade.succeeded",
    "upgrade.rejected",
    "upgrade.expired",
    "upgrade.withdrawn",
    "upgrade.cancelled",
    "operator.changed",
    "login_phone.changed",
)
KNOWN = frozenset(TYPES)


def check(type_: str) -> str:
    if type_ not in KNOWN:
        raise ValueError(f"unknown event type {type_!r}: list it in guanhao.events.types")
    return type_
