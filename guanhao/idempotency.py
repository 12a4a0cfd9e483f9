"""Idempotency-Key for every mutating request (IETF draft "The Idempotency-Key HTTP Header Field").

Keys are scoped to the caller (a hash of the Authorization header). Same key + same request →
the first response replayed; a second arrival while the first runs → 409 IDEMPOTENCY_KEY_IN_FLIGHT;
same key + another request → 422 IDEMPOTENCY_KEY_REUSED. The claim is a row inserted under a
primary key, so two identical requests at once cannot both run. Server errors release the key.
"""

import datetime as dt
import hashlib
import json

import anyio
from sqlalchemy import Integer, String, Text, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from guanhao import clock, errors
from guanhao.auth.service import caller_scope
from guanhao.db import Base, Session, UTCDateTime, session_scope
from guanhao.i18n import _l
from guanhao.pii import vault
from guanhao.policy import get_policy
from guanhao.problems import allowed_methods

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
MAX_KEY_LENGTH = 255


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    caller: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(12))  # in_flight | done
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(100))
    # Sealed: a replayed response may hold a secret shown once (an API key, a webhook secret).
    body_enc: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


def _claim(caller: str, key: str, request_hash: str) -> IdempotencyRecord | None:
    """Claims the key; returns None when claimed, else the existing record (possibly replayable)."""
    idem = get_policy().idempotency
    with session_scope() as session:
        now = clock.now(session)
        existing = session.get(IdempotencyRecord, (caller, key))
        if existing is not None:
            stale_done = existing.state == "done" and now - existing.created_at > dt.timedelta(
                hours=idem.retention_hours
            )
            stale_flight = existing.state == "in_flight" and now - existing.created_at > dt.timedelta(
                seconds=idem.in_flight_timeout_seconds
            )
            if not (stale_done or stale_flight):
                session.expunge(existing)
                return existing
            session.delete(existing)
            session.flush()
    try:
        with session_scope() as session:
            session.add(
                IdempotencyRecord(
                    caller=caller, key=key, request_hash=request_hash, state="in_flight", created_at=clock.now(session)
                )
            )
    except IntegrityError:
        with session_scope() as session:
            existing = session.get(IdempotencyRecord, (caller, key))
            if existing is None:  # released in between: treat as in flight, the client retries
                return IdempotencyRecord(caller=caller, key=key, request_hash=request_hash, state="in_flight")
            session.expunge(existing)
            return existing
    return None


def _finish(caller: str, key: str, status: int, content_type: str | None, body: bytes) -> None:
    with session_scope() as session:
        record = session.get(IdempotencyRecord, (caller, key))
        if record is None:
            return
        # Server errors may be retried. A 400 (body not JSON, answered before the token is checked) or a
        # 401 (no or bad token) changed nothing and must not hold the key either: else a caller without a
        # valid token could get IDEMPOTENCY_KEY_REUSED instead of 401.
        if status >= 500 or status in (400, 401):
            session.delete(record)
        else:
            record.state, record.status_code, record.content_type = "done", status, content_type
            record.body_enc = vault().encrypt(body.decode("utf-8", "replace"), context="idempotency")


def _release(caller: str, key: str) -> None:
    with session_scope() as session:
        session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.caller == caller, IdempotencyRecord.key == key)
        )


def purge(session: Session, *, now: dt.datetime, retention: dt.timedelta) -> int:
    """Forgets keys older than the retention (API.md: kept ≥ 24 h of the service clock)."""
    return session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - retention)).rowcount


class IdempotencyMiddleware:
    def __init__(self, app, *, render_error):
        self.app = app
        self.render_error = render_error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        raw_key = headers.get(b"idempotency-key")
        # A method or path no route serves gets its plain 405/404 and uses up no key.
        if raw_key is None or scope["method"] not in allowed_methods(scope["app"], scope["path"]):
            return await self.app(scope, receive, send)
        key = raw_key.decode("latin-1").strip().strip('"')
        # The length limit applies to the header as sent (what the OpenAPI document states), quotes included.
        if not key or len(raw_key) > MAX_KEY_LENGTH:
            return await self.render_error(
                scope,
                receive,
                send,
                errors.ValidationFailed(
                    _l("The Idempotency-Key must have 1 to {most} characters", most=MAX_KEY_LENGTH)
                ),
            )

        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        caller = caller_scope(headers.get(b"authorization", b"").decode("latin-1") or None, scope["path"])
        digest = hashlib.sha256()
        digest.update(scope["method"].encode() + b" " + scope["path"].encode() + b"?" + scope.get("query_string", b""))
        digest.update(b"\n" + _canonical(body))
        request_hash = digest.hexdigest()

        existing = await anyio.to_thread.run_sync(_claim, caller, key, request_hash)
        if existing is not None:
            if existing.request_hash != request_hash:
                return await self.render_error(
                    scope,
                    receive,
                    send,
                    errors.IdempotencyKeyReused(_l("This Idempotency-Key was first used with another request")),
                )
            if existing.state != "done":
                return await self.render_error(
                    scope,
                    receive,
                    send,
                    errors.IdempotencyKeyInFlight(
                        _l("The first request with this key is still running; retry later"), retry_after=1
                    ),
                )
            replay = (vault().decrypt(existing.body_enc, context="idempotency") or "").encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": existing.status_code,
                    "headers": [
                        (b"content-type", (existing.content_type or "application/json").encode()),
                        (b"content-length", str(len(replay)).encode()),
                        (b"idempotent-replayed", b"true"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": replay})
            return

        sent = False

        async def replay_receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        captured = {"status": 500, "content_type": None, "body": b""}
        # Held back until the key is recorded as done: a client that has the response and retries
        # must get the replay, not IDEMPOTENCY_KEY_IN_FLIGHT.
        held: list[dict] = []

        async def capture_send(message):
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        captured["content_type"] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
            held.append(message)

        try:
            await self.app(scope, replay_receive, capture_send)
        except BaseException:
            await anyio.to_thread.run_sync(_release, caller, key)
            raise
        await anyio.to_thread.run_sync(
            _finish, caller, key, captured["status"], captured["content_type"], captured["body"]
        )
        for message in held:
            await send(message)


def _canonical(body: bytes) -> bytes:
    # Same JSON with other whitespace or key order is the same request.
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, UnicodeDecodeError):
        return body
