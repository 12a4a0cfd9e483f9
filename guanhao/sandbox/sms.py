"""The sandbox's SMS sender (guanhao.sms picks it in sandbox mode): it keeps what was 'sent', the phone
sealed like any personal data, so tests and GET /api/v1/sandbox/sms can read the codes and links."""

import datetime as dt

from sqlalchemy import select

from guanhao.db import Session
from guanhao.pii import vault
from guanhao.sandbox.models import SmsMessage


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


def messages_for(session: Session, phone: str, *, limit: int = 50) -> list[SmsMessage]:
    phone_hash = vault().blind_index(phone, kind="phone")
    stmt = select(SmsMessage).where(SmsMessage.phone_hash == phone_hash).order_by(SmsMessage.seq.desc()).limit(limit)
    return list(session.scalars(stmt))


def decrypt_phone(message: SmsMessage) -> str:
    return vault().decrypt(message.phone_enc, context="sms")
