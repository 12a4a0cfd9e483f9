"""Imports every ORM model so that metadata (Alembic, tests) sees all tables."""

from guanhao.audit.models import AuditEntry
from guanhao.auth.models import ApiKey, ConsoleSession, LoginThrottle, User
from guanhao.clock import SandboxClock
from guanhao.db import Base
from guanhao.events.models import OutboxEvent
from guanhao.idempotency import IdempotencyRecord
from guanhao.keyring import KeyFingerprint
from guanhao.operators.models import PendingChange
from guanhao.posting.models import PostingCounter
from guanhao.sandbox.models import SmsMessage
from guanhao.subjects.models import Account, ImportFile, ImportRejection, Shop, Subject
from guanhao.upgrades.models import Application, Consent, OfficialAccount, Slot, Wave, WaveSkip, WaveWorker
from guanhao.webhooks.models import WebhookDelivery, WebhookEndpoint
from guanhao.worker.models import DutyRow

__all__ = [
    "Account",
    "ApiKey",
    "Application",
    "AuditEntry",
    "Base",
    "Consent",
    "ConsoleSession",
    "DutyRow",
    "IdempotencyRecord",
    "ImportFile",
    "ImportRejection",
    "KeyFingerprint",
    "LoginThrottle",
    "OfficialAccount",
    "OutboxEvent",
    "PendingChange",
    "PostingCounter",
    "SandboxClock",
    "Shop",
    "Slot",
    "SmsMessage",
    "Subject",
    "User",
    "Wave",
    "WaveSkip",
    "WaveWorker",
    "WebhookDelivery",
    "WebhookEndpoint",
]
