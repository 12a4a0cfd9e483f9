"""Idempotency-Key for every mutating request (IETF draft "The Idempotency-Key HTTP Header Field").

Keys are scoped to the caller: a keyed hash of the authenticated principal (of the path, for callers
without a token). Same key + same request →
the first response replayed; a second arrival while the first runs → 409 IDEMPOTENCY_KEY_IN_FLIGHT;
same key + another request → 422 IDEMPOTENCY_KEY_REUSED. The claim is a row inserted under a
primary key, so two identical requests at once cannot both run. Server errors release the key.
"""

import datetime as dt
import hashlib
import json
from typing import Any, cast

import anyio
from sqlalchemy import CursorResult, Integer, String, Text, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from guanhao import clock, errors
from guanhao.auth.service import authenticate, caller_scope
from guanhao.bodies import JSON_VALUE, replaying
from guanhao.db import Base, Session, UTCDateTime, session_scope
from guanhao.i18n import _l
from guanhao.pii import vault
from guanhao.policy import get_policy
from guanhao.problems import allowed_methods
from guanhao.settings import get_settings

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
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # the service clock's: retention (API.md)
    # The real clock's: a key in flight is abandoned after `in_flight_timeout_seconds` of real time, however far the
    # sandbox clock moves meanwhile (None on keys claimed before the column: their created_at is used).
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


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
            stale_flight = existing.state == "in_flight" and _in_flight_for(existing, now) > dt.timedelta(
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
                    caller=caller,
                    key=key,
                    request_hash=request_hash,
                    state="in_flight",
                    created_at=clock.now(session),
                    claimed_at=clock.real_now(),
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


def _in_flight_for(record: IdempotencyRecord, now: dt.datetime) -> dt.timedelta:
    """How long a key has been in flight, on the real clock: a request's duration is real time, and the sandbox
    clock (moved by tests, a minute a second in the soak) would make a slow request look abandoned."""
    if record.claimed_at is None:
        return now - record.created_at
    return clock.real_now() - record.claimed_at


# Answers that changed nothing and invite a retry of the same request: they do not hold the key. A 400 or
# 413 (the body) or a 401 (no or bad token; else a caller without a valid token could get
# IDEMPOTENCY_KEY_REUSED instead of 401); a 429 and a 5xx say "try again later", and the retry must run.
_RELEASED = frozenset({400, 401, 413, 429})


def _finish(caller: str, key: str, status: int, content_type: str | None, body: bytes, request_hash: str) -> None:
    with session_scope() as session:
        record = session.get(IdempotencyRecord, (caller, key))
        if record is None:
            return
        if status >= 500 or status in _RELEASED:
            session.delete(record)
        else:
            record.state, record.status_code, record.content_type = "done", status, content_type
            record.request_hash = request_hash
            record.body_enc = vault().encrypt(body.decode("utf-8", "replace"), context="idempotency")


def _release(caller: str, key: str) -> None:
    with session_scope() as session:
        session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.caller == caller, IdempotencyRecord.key == key)
        )


def purge(session: Session, *, now: dt.datetime, retention: dt.timedelta) -> int:
    """Forgets keys older than the retention (API.md: kept ≥ 24 h of the service clock)."""
    result = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - retention))
    return cast(CursorResult[Any], result).rowcount  # a DELETE's result is a CursorResult; the stubs say Result


class IdempotencyMiddleware:
    """Runs inside BodyMiddleware: a JSON body is already buffered, sized and parsed (its value in the scope);
    a streamed body (`streamed` paths, the NDJSON import) is hashed as the route reads it, never held."""

    def __init__(self, app, *, render_error, streamed: frozenset[str] = frozenset()):
        self.app = app
        self.render_error = render_error
        self.streamed = streamed

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
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        caller = await anyio.to_thread.run_sync(_caller, authorization, scope["path"])
        digest = hashlib.sha256()
        digest.update(scope["method"].encode() + b" " + scope["path"].encode() + b"?" + scope.get("query_string", b""))
        if scope["path"] in self.streamed:
            return await self._streamed(scope, receive, send, caller, key, digest)

        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        digest.update(b"\n" + _canonical(body, scope.get(JSON_VALUE, _NO_JSON)))
        request_hash = digest.hexdigest()

        existing = await anyio.to_thread.run_sync(_claim, caller, key, request_hash)
        if existing is not None:
            if existing.request_hash != request_hash:
                return await self.render_error(scope, receive, send, _reused())
            if existing.state != "done":
                return await self.render_error(scope, receive, send, _in_flight())
            return await _replay(send, existing)
        await self._run(scope, replaying(body, receive), send, caller, key, lambda: request_hash)

    async def _streamed(self, scope, receive, send, caller: str, key: str, digest) -> None:
        """The request hash is known only once the body has passed: the key is claimed first, the hash
        recorded when the route is done; a later request with the key reads its body through a hash."""
        existing = await anyio.to_thread.run_sync(_claim, caller, key, _STREAMING)
        if existing is not None:
            if existing.state != "done":
                return await self.render_error(scope, receive, send, _in_flight())
            try:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    digest.update(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
            except errors.DomainError as exc:  # past the size limit
                return await self.render_error(scope, receive, send, exc)
            if existing.request_hash != digest.hexdigest():
                return await self.render_error(scope, receive, send, _reused())
            return await _replay(send, existing)

        async def hashing_receive():
            message = await receive()
            if message["type"] == "http.request":
                digest.update(message.get("body", b""))
            return message

        await self._run(scope, hashing_receive, send, caller, key, digest.hexdigest)

    async def _run(self, scope, receive, send, caller: str, key: str, request_hash) -> None:
        status = 500
        content_type: str | None = None
        body: list[bytes] = []
        # Held back until the key is recorded as done: a client that has the response and retries
        # must get the replay, not IDEMPOTENCY_KEY_IN_FLIGHT.
        held: list[dict] = []

        async def capture_send(message):
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        content_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
            held.append(message)

        try:
            await self.app(scope, receive, capture_send)
        except BaseException:
            await anyio.to_thread.run_sync(_release, caller, key)
            raise
        await anyio.to_thread.run_sync(_finish, caller, key, status, content_type, b"".join(body), request_hash())
        for message in held:
            await send(message)


_STREAMING = "streaming"  # the request hash of a claimed streamed request, until its body has passed
_NO_JSON = object()


def _caller(authorization: str | None, path: str) -> str:
    """The key's scope: the authenticated principal, however its header was spelled; without valid
    credentials the path (a holder's capability), and the route answers 401 where it needs a token."""
    principal = None
    if authorization:
        try:
            with session_scope() as session:
                principal = authenticate(session, authorization, admin_token=get_settings().admin_token)
        except errors.Unauthenticated:
            principal = None
    return caller_scope(principal, path)


def _reused() -> errors.DomainError:
    return errors.IdempotencyKeyReused(_l("This Idempotency-Key was first used with another request"))


def _in_flight() -> errors.DomainError:
    return errors.IdempotencyKeyInFlight(
        _l("The first request with this key is still running; retry later"), retry_after=1
    )


async def _replay(send, existing: IdempotencyRecord) -> None:
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


def _canonical(body: bytes, value) -> bytes:
    # Same JSON with other whitespace or key order is the same request. The value was parsed by BodyMiddleware.
    if value is _NO_JSON:
        return body
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
