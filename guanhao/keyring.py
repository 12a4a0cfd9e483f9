"""Which keys wrote this database. Personal data is sealed with GUANHAO_PII_KEY and looked up by blind indexes
keyed with GUANHAO_HASH_KEY (R-50); a command started with other keys would fail later with `InvalidTag`, or
silently find nothing by its keyed lookups. So the database records a fingerprint of the pair that wrote it (the
first command to start records it), and every command compares its keys with it before doing anything.

The fingerprint is a SHA-256 over a domain tag and both keys — 64 random bytes: it names the pair, it reveals
neither key."""

import datetime as dt
import hashlib
from typing import cast

from sqlalchemy import Engine, Integer, String, Table, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from guanhao.db import Base, UTCDateTime
from guanhao.pii import Vault
from guanhao.subjects.models import Account

_TAG = b"guanhao key fingerprint v1\0"


class KeyFingerprint(Base):
    """The fingerprint of the key pair that writes this database (one row, id 1)."""

    __tablename__ = "key_fingerprint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class KeysMismatch(Exception):
    """The database was written with other keys."""

    def __init__(self, recorded: str, current: str, why: str):
        super().__init__(why)
        self.recorded, self.current, self.why = recorded, current, why


def fingerprint(pii_key: bytes, hash_key: bytes) -> str:
    return hashlib.sha256(_TAG + pii_key + hash_key).hexdigest()


def check(engine: Engine, pii_key: bytes, hash_key: bytes, *, now: dt.datetime) -> str | None:
    """R-50: refuses (KeysMismatch) a database whose recorded fingerprint is not these keys'. A database with no
    fingerprint yet gets these keys' — unless it already holds personal data these keys cannot open (written
    before fingerprints were kept). Returns the fingerprint, or None for a database not migrated that far."""
    current = fingerprint(pii_key, hash_key)
    with engine.begin() as conn:
        if not inspect(conn).has_table(KeyFingerprint.__tablename__):
            return None
        table = cast(Table, KeyFingerprint.__table__)
        recorded = conn.execute(select(table.c.fingerprint).where(table.c.id == 1)).scalar()
        if recorded is None:
            _sample_opens(conn, pii_key, hash_key, current)
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)
            conn.execute(
                insert.values(id=1, fingerprint=current, recorded_at=now).on_conflict_do_nothing(index_elements=["id"])
            )
            # another command may have recorded its keys at the same moment: compare with whatever won
            recorded = conn.execute(select(table.c.fingerprint).where(table.c.id == 1)).scalar_one()
        if recorded != current:
            raise KeysMismatch(recorded, current, "the recorded fingerprint is another key pair's")
    return current


def _sample_opens(conn, pii_key: bytes, hash_key: bytes, current: str) -> None:
    """A database from before fingerprints: one sealed holder must open with these keys and match its blind index."""
    row = conn.execute(select(Account.holder_id_number_enc, Account.holder_id_hash).limit(1)).first()
    if row is None:
        return
    vault = Vault(pii_key, hash_key)
    try:
        id_number = vault.decrypt(row.holder_id_number_enc, context="person")
    except Exception:  # InvalidTag, or a ciphertext of another format
        raise KeysMismatch("(none)", current, "its personal data does not open with these keys") from None
    if vault.blind_index(id_number, kind="id_number") != row.holder_id_hash:
        raise KeysMismatch("(none)", current, "its lookup hashes were made with another GUANHAO_HASH_KEY")
