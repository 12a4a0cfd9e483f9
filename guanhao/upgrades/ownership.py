"""The ownership record (升级凭证, SPEC R-60): evidence of who owns an upgraded account.

Built from the application, the consents and the audit trail; every history line names the audit
row it comes from (seq and row_hash), and `digest` is the SHA-256 of the record's canonical JSON.
Anyone holding the record can recompute the digest, and with the audit trail (or an export of it)
check that each named row exists with that hash and that the subject's chain verifies.
"""

import datetime as dt
import hashlib
import json

from sqlalchemy import or_, select

from guanhao import errors, pii
from guanhao.audit import service as audit
from guanhao.audit.models import AuditEntry
from guanhao.db import Session
from guanhao.i18n import _l
from guanhao.subjects.models import Account, Shop, Subject
from guanhao.upgrades.models import Application, OfficialAccount
from guanhao.upgrades.service import consents

VERSION = 1


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def digest_of(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "digest"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    ).hexdigest()


def build(session: Session, shop_id: str, *, now: dt.datetime) -> dict:
    """R-60: the ownership record (升级凭证) of the shop's upgraded account: who consented, when, which subject,
    every operator since, each line naming its audit row, and the digest over it all."""
    official = session.scalar(select(OfficialAccount).where(OfficialAccount.shop_id == shop_id))
    if official is None:
        raise errors.NotUpgraded(_l("The shop's official account is not upgraded; there is no ownership record yet"))
    shop = session.get_one(Shop, shop_id)
    account = session.get_one(Account, official.account_id)
    subject = session.get_one(Subject, official.subject_id)
    app = session.scalars(select(Application).where(Application.id == official.application_id)).one()
    app_ids = list(session.scalars(select(Application.id).where(Application.account_id == official.account_id)))
    trail = list(
        session.scalars(
            select(AuditEntry)
            .where(or_(AuditEntry.target_id == official.account_id, AuditEntry.target_id.in_(app_ids)))
            .order_by(AuditEntry.seq)
        )
    )

    first_operator = pii.open_person(
        app.operator_name_enc, app.operator_id_number_enc, app.operator_phone_enc, context="person"
    ).masked()
    operators = [
        {
            "operator": first_operator,
            "since": _iso(official.upgraded_at),
            "until": None,
            "by": "holder" if app.operator_is_holder else "merchant",
        }
    ]
    # Changes after this upgrade, by trail order: the (sandbox) clock may move backwards, and changes made
    # before a cancelled earlier upgrade of the same account may share its timestamps.
    upgraded_seq = max((r.seq for r in trail if r.target_id == app.id and r.to_state == "succeeded"), default=0)
    for row in trail:
        if row.action == "operator.changed" and row.seq > upgraded_seq:
            operators[-1]["until"] = _iso(row.at)
            operators.append({"operator": row.detail.get("to"), "since": _iso(row.at), "until": None, "by": row.actor})

    chain = audit.chain_of(subject.id)
    head = session.scalar(select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.seq.desc()).limit(1))
    record = {
        "record_version": VERSION,
        "generated_at": _iso(now),
        "shop": {"shop_id": shop.id, "name": shop.name},
        "account": {"account_id": account.id, "nickname": account.nickname},
        "subject": {"subject_id": subject.id, "name": subject.name, "subject_type": subject.subject_type},
        "upgrade": {
            "application_id": app.id,
            "origin": official.origin,
            "account_type": official.account_type,
            "upgraded_at": _iso(official.upgraded_at),
            "cancel_deadline": _iso(official.cancel_deadline),
            "usage_right": "enterprise",
        },
        "consents": [
            {
                "party": c.party,
                "decision": c.decision,
                "actor": c.actor,
                "agreement_version": c.agreement_version,
                "at": _iso(c.at),
            }
            for c in consents(session, app.id)
        ],
        "operators": operators,
        "history": [
            {
                "at": _iso(r.at),
                "actor": r.actor,
                "action": r.action,
                "target_id": r.target_id,
                "from": r.from_state,
                "to": r.to_state,
                "audit_seq": r.seq,
                "chain": r.chain,
                "row_hash": r.row_hash,
            }
            for r in trail
        ],
        # The head of the subject's chain when the record was made: a later verifier who finds this row
        # still there, with this hash, knows no row of the chain up to it was removed or edited.
        "audit_chain": {
            "chain": chain,
            "head_seq": head.seq if head else None,
            "head_hash": head.row_hash if head else None,
        },
    }
    record["digest"] = digest_of(record)
    return record
