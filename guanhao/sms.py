"""Sending SMS: the holder's confirmation link (R-15), the codes of operator changes and phone rebinds
(R-24, R-42). Services call `send` with a catalog message (rendered in Chinese: the phones are mainland
numbers); which sender carries it is chosen here — a provider plugged in with `use`, else in sandbox
mode the sandbox's sender (it keeps what was sent, for tests and GET /api/v1/sandbox/sms), else one
that only logs, masked, that nothing was sent."""

import datetime as dt
from typing import Protocol

import structlog

from guanhao.db import Session
from guanhao.i18n import Message
from guanhao.pii import mask_phone
from guanhao.sandbox.sms import SandboxSmsSender
from guanhao.settings import get_settings

SMS_LANGUAGE = "zh-CN"


class Sender(Protocol):
    def send(
        self, session: Session, *, phone: str, text: str, code: str | None, purpose: str, now: dt.datetime
    ) -> None: ...


class NotSent:
    """No provider configured outside sandbox mode: say so in the log (masked), send nothing."""

    def send(
        self, session: Session, *, phone: str, text: str, code: str | None, purpose: str, now: dt.datetime
    ) -> None:
        structlog.get_logger("guanhao.sms").warning(
            "sms.not_sent", reason="no SMS provider configured", phone=mask_phone(phone), purpose=purpose
        )


_provider: Sender | None = None


def use(provider: Sender | None) -> None:
    """Plugs in a real SMS provider (None: back to the default)."""
    global _provider
    _provider = provider


def sender() -> Sender:
    if _provider is not None:
        return _provider
    return SandboxSmsSender() if get_settings().sandbox else NotSent()


def send(session: Session, *, phone: str, message: Message, code: str | None, purpose: str, now: dt.datetime) -> None:
    sender().send(session, phone=phone, text=message.render(SMS_LANGUAGE), code=code, purpose=purpose, now=now)
