"""Sending SMS. The service depends on the `SmsSender` protocol only; the sandbox sender stores
messages so tests and the sandbox API can read them. A real provider plugs in by implementing
`send` and being returned from `get_sender`."""

import datetime as dt
from typing import Protocol

import structlog
from sqlalchemy import select

from guanhao.db import Session
from guanhao.pii import mask_phone, vault
from guanhao.sandbox.models import SmsMessage


class SmsSender(Protocol):
    def send(
        self, session: Session, *, phone: str, text: str, code: str | None, purpose: str, now: dt.datetime
    ) -> None: ...


class SandboxSmsSender:
    def send(
        self, session: Session, *, phone: str, text: str, code: str | None, purpose: str, now: dt.datetime
    ) -> None:
        v = vault()
        session.add(
            SmsMessage(
                phone_enc=v.encrypt(phone, context="sms"),
                phone_hash=v.blind_index(phone, kind="phone"),
                text=text,
                code=code,
                purpose=purpose,
                at=now,
            )
        )


class UnconfiguredSmsSender:
    """Outside sandbox mode with no provider plugged in: say so in the log (masked), send nothing."""

    def send(
        self, session: Session, *, phone: str, text: str, code: str | None, purpose: str, now: dt.datetime
    ) -> None:
        structlog.get_logger("guanhao.sms").warning(
            "sms.not_sent", reason="no SMS provider configured", phone=mask_phone(phone), purpose=purpose
        )


def get_sender() -> SmsSender:
    from guanhao.settings import get_settings

    return SandboxSmsSender() if get_settings().sandbox else UnconfiguredSmsSender()


def messages_for(session: Session, phone: str, *, limit: int = 50) -> list[SmsMessage]:
    phone_hash = vault().blind_index(phone, kind="phone")
    stmt = select(SmsMessage).where(SmsMessage.phone_hash == phone_hash).order_by(SmsMessage.seq.desc()).limit(limit)
    return list(session.scalars(stmt))


def decrypt_phone(message: SmsMessage) -> str:
    return vault().decrypt(message.phone_enc, context="sms")
