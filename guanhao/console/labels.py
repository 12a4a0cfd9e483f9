"""The words and colours the consoles show for stored values (types, states, origins, audit actions, events)."""

from guanhao.i18n import Message, _l

LABELS: dict[str, dict[str, Message]] = {
    "shop_type": {
        "official_flagship": _l("Official flagship store"),
        "flagship": _l("Flagship store"),
        "specialty": _l("Specialty store"),
        "franchise": _l("Franchise store"),
        "enterprise": _l("Enterprise store"),
        "individual": _l("Individual business store"),
        "personal": _l("Personal store"),
    },
    "shop_status": {
        "active": _l("Active"),
        "suspended": _l("Suspended"),
        "closed": _l("Closed"),
    },
    "account_type": {
        "main": _l("Main account"),
        "vertical": _l("Vertical account"),
        "dedicated": _l("Dedicated account"),
    },
    "origin": {
        "manual": _l("Upgraded by the merchant"),
        "auto": _l("Upgraded automatically by the platform"),
    },
    # The shop's official account as a whole (the account card's 升级状态).
    "upgrade_status": {
        "not_upgraded": _l("Not upgraded"),
        "in_progress": _l("Upgrading"),
        "upgraded": _l("Upgraded"),
        "cancelled": _l("Cancelled"),
        "failed": _l("Upgrade failed"),
    },
    "application_status": {
        "submitted": _l("Waiting for the account holder"),
        "reviewing": _l("Under review"),
        "succeeded": _l("Succeeded"),
        "rejected": _l("Rejected"),
        "expired": _l("Expired"),
        "withdrawn": _l("Withdrawn"),
        "cancelled": _l("Cancelled"),
    },
    "step": {
        "submitted": _l("Submit the upgrade"),
        "holder_confirmation": _l("Account holder confirms"),
        "review": _l("Platform review"),
        "result": _l("Upgrade complete"),
    },
    "step_state": {
        "done": _l("Done"),
        "current": _l("In progress"),
        "pending": _l("Not started"),
        "failed": _l("Failed"),
        "skipped": _l("Skipped"),
    },
    "action": {
        "upgrade.submitted": _l("Upgrade application submitted"),
        "upgrade.reviewing": _l("The account holder confirmed"),
        "upgrade.queued_for_staff_review": _l("Waiting for platform staff to review"),
        "upgrade.succeeded": _l("Upgrade succeeded"),
        "upgrade.rejected": _l("Upgrade rejected"),
        "upgrade.expired": _l("The confirmation expired"),
        "upgrade.withdrawn": _l("Application withdrawn"),
        "official_account.cancelled": _l("Upgrade cancelled"),
        "operator.change_requested": _l("Operator change requested (code sent)"),
        "operator.changed": _l("Operator changed"),
        "login_phone.change_requested": _l("Login phone rebind requested (code sent)"),
        "login_phone.changed": _l("Login phone changed"),
        "shop.created": _l("Shop synced"),
        "shop.updated": _l("Shop updated by the platform"),
        "shop.official_account_bound": _l("Official account bound"),
    },
    # The rest of the trail, as staff read it in 操作日志 (the merchant's timeline keeps to the actions above).
    "staff_action": {
        "upgrade.review.waiting": _l("Queued for staff review"),
        "upgrade.review.approved": _l("Approved by staff"),
        "upgrade.review.rejected": _l("Rejected by staff"),
        "upgrade.cancelled": _l("Upgrade cancelled"),
        "wave.started": _l("Wave started"),
        "wave.running": _l("Wave resumed"),
        "wave.done": _l("Wave finished"),
        "wave.failed": _l("Wave failed"),
        "wave.cancelled": _l("Wave stopped"),
        "api_key.created": _l("API key created"),
        "api_key.revoked": _l("API key revoked"),
        "user.created": _l("Console user created"),
        "user.disabled": _l("Console user disabled"),
        "subject.created": _l("Subject synced"),
        "subject.updated": _l("Subject updated by the platform"),
        "account.created": _l("Account synced"),
        "account.updated": _l("Account updated by the platform"),
    },
    "event": {
        "upgrade.submitted": _l("Upgrade application submitted"),
        "upgrade.confirmation_requested": _l("The account holder was asked to confirm"),
        "upgrade.reviewing": _l("The account holder confirmed the upgrade"),
        "upgrade.succeeded": _l("The upgrade succeeded"),
        "upgrade.rejected": _l("The upgrade was rejected"),
        "upgrade.expired": _l("The account holder did not confirm in time"),
        "upgrade.withdrawn": _l("The application was withdrawn"),
        "upgrade.cancelled": _l("The upgrade was cancelled"),
        "operator.changed": _l("The operator was changed"),
        "login_phone.changed": _l("The login phone was changed"),
    },
    "skip_reason": {
        "AUTO_UPGRADE_CANCELLED": _l("The merchant cancelled an earlier auto upgrade"),
        "NEEDS_STAFF_REVIEW": _l("A big account: it needs staff review"),
    },
    "wave_status": {
        "running": _l("Running"),
        "done": _l("Done"),
        "failed": _l("Failed"),
        "cancelled": _l("Stopped"),
    },
    "review": {
        "waiting": _l("Waiting for review"),
        "approved": _l("Approved"),
        "rejected": _l("Rejected"),
    },
    # Who did it, by the prefix of an audit row's actor ("staff:usr_…", "wave:wave_…", "holder").
    "role": {
        "staff": _l("Platform staff"),
        "admin": _l("Platform system (API key)"),
        "merchant": _l("Merchant"),
        "holder": _l("Account holder"),
        "wave": _l("Auto-upgrade wave"),
        "job": _l("Background job"),
        "system": _l("System"),
        "cli": _l("Command line"),
    },
    "key_role": {
        "admin": _l("Platform (admin)"),
        "merchant": _l("Merchant"),
    },
    "delivery_health": {
        "healthy": _l("Healthy"),
        "retrying": _l("Retrying"),
        "failing": _l("Failing (dead letters)"),
    },
    "delivery_status": {
        "pending": _l("Pending"),
        "delivered": _l("Delivered"),
        "dead": _l("Dead letter"),
    },
}

# Semi tag colours (`semi-tag-<colour>-light`), with the darker text shade from console.css for contrast.
COLOURS: dict[str, dict[str, str]] = {
    "upgrade_status": {
        "not_upgraded": "grey",
        "in_progress": "blue",
        "upgraded": "green",
        "cancelled": "grey",
        "failed": "red",
    },
    "wave_status": {"running": "blue", "done": "green", "failed": "red", "cancelled": "grey"},
    "review": {"waiting": "orange", "approved": "green", "rejected": "red"},
    "delivery_health": {"healthy": "green", "retrying": "orange", "failing": "red"},
    "check": {"passed": "green", "failed": "red"},
    "application_status": {
        "submitted": "blue",
        "reviewing": "blue",
        "succeeded": "green",
        "rejected": "red",
        "expired": "orange",
        "withdrawn": "grey",
        "cancelled": "grey",
    },
}


def text(kind: str, value: str | None, lang: str) -> str:
    if value is None:
        return "—"
    message = LABELS.get(kind, {}).get(value)
    return message.render(lang) if message is not None else value


def colour(kind: str, value: str | None) -> str:
    return COLOURS.get(kind, {}).get(value or "", "grey")


def role_of(actor: str) -> str:
    """The kind of actor of an audit row: the part before the colon ("staff:usr_1" → staff)."""
    return actor.split(":", 1)[0]


def action_text(action: str, lang: str) -> str:
    """An audit action in words, from either list; an action without words shows its code."""
    for kind in ("action", "staff_action"):
        if action in LABELS[kind]:
            return text(kind, action, lang)
    return action
