"""Request bodies (API.md Conventions): each one has a size limit, and JSON is parsed here, strictly.

The middleware runs before authentication and before the Idempotency-Key middleware: a body past its
limit is 413 PAYLOAD_TOO_LARGE at once (a declared Content-Length is checked before a byte is read,
a chunked body is counted as it arrives), and a JSON body the service does not accept is 400
MALFORMED_BODY — so the rest of the app, FastAPI included, only ever sees JSON `loads` accepted.
Streamed routes (the NDJSON import) are never buffered: their bytes are counted as they pass, and
their lines are parsed one by one with the same `loads`.
"""

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import anyio

from guanhao import errors
from guanhao.i18n import Message, _l

# Deeper than any body of this API; deep enough for no legitimate client to notice.
MAX_DEPTH = 32
# Characters of one number literal: every integer the API takes fits in 10 digits, every score in a few.
MAX_NUMBER_CHARS = 40
# Bodies larger than this are parsed off the event loop.
_PARSE_IN_THREAD = 64 * 1024
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Unacceptable(ValueError):
    """The bytes are not JSON this service accepts; `reason` says why, in the catalog."""

    def __init__(self, reason: Message):
        super().__init__(reason.render("en"))
        self.reason = reason


TOO_DEEP = _l("The JSON is nested deeper than {depth} levels", depth=MAX_DEPTH)
NOT_UTF8 = _l("The body is not UTF-8 text")
BAD_UNICODE = _l("The JSON holds a string that is not valid Unicode (a lone surrogate)")
DUPLICATE_KEY = _l("An object in the JSON has the same key twice")
NOT_A_NUMBER = _l("NaN and Infinity are not JSON numbers")
LONG_NUMBER = _l("A number in the JSON has more than {most} characters", most=MAX_NUMBER_CHARS)
HUGE_NUMBER = _l("A number in the JSON is out of range")


def _int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise Unacceptable(LONG_NUMBER)
    return int(literal)


def _float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise Unacceptable(LONG_NUMBER)
    value = float(literal)
    if not math.isfinite(value):
        raise Unacceptable(HUGE_NUMBER)
    return value


def _constant(_name: str) -> Any:
    raise Unacceptable(NOT_A_NUMBER)


def _object(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise Unacceptable(DUPLICATE_KEY)
    return obj


_DECODER = json.JSONDecoder(parse_int=_int, parse_float=_float, parse_constant=_constant, object_pairs_hook=_object)


def loads(raw: bytes) -> Any:
    """JSON as this service accepts it: UTF-8, no duplicate keys, no NaN or Infinity, numbers of at most
    MAX_NUMBER_CHARS characters, strings of valid Unicode, nested at most MAX_DEPTH levels. Raises
    Unacceptable, never anything else (a RecursionError included)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Unacceptable(NOT_UTF8) from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise Unacceptable(TOO_DEEP) from None
    except json.JSONDecodeError as exc:
        raise Unacceptable(
            _l(
                "The body is not JSON: {error} (line {line}, column {column})",
                error=exc.msg,
                line=exc.lineno,
                column=exc.colno,
            )
        ) from None
    # Valid UTF-8 decodes to no surrogate: only a \u escape can make one. And nesting deeper than MAX_DEPTH
    # needs more than MAX_DEPTH brackets. Without either, the walk has nothing to find (an import line).
    if b"\\u" in raw or raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
        _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    # Iterative: the depth limit must not depend on the interpreter's recursion limit.
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            items = node.items()
        elif isinstance(node, list):
            items = enumerate(node)  # type: ignore[assignment]
        else:
            continue
        if depth > MAX_DEPTH:
            raise Unacceptable(TOO_DEEP)
        for key, child in items:
            if isinstance(key, str):
                _check_unicode(key)
            if isinstance(child, str):
                _check_unicode(child)
            elif isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


def _check_unicode(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Unacceptable(BAD_UNICODE) from None


async def parse(raw: bytes) -> Any:
    """`loads`, off the event loop when the body is large."""
    if len(raw) > _PARSE_IN_THREAD:
        return await anyio.to_thread.run_sync(loads, raw)
    return loads(raw)


def too_large(limit: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(_l("The body may have at most {limit} bytes", limit=limit), limit=limit)


# ---------------------------------------------------------------- the middleware

JSON_VALUE = "guanhao.json"  # scope key: the parsed body of a buffered JSON request

RenderError = Callable[[Any, Any, Any, errors.DomainError], Awaitable[None]]


class BodyMiddleware:
    """Sizes every request body; buffers (linearly) and parses the JSON bodies (by Content-Type) of mutating
    requests under `json_prefix`; counts the bytes of every other body as they pass. `streamed` maps the paths whose
    bodies are read as a stream by their route to their own limit."""

    def __init__(self, app, *, limit: int, streamed: dict[str, int], json_prefix: str, render_error: RenderError):
        self.app = app
        self.limit = limit
        self.streamed = streamed
        self.json_prefix = json_prefix
        self.render_error = render_error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = self.streamed.get(path, self.limit)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            return await self.render_error(scope, receive, send, too_large(limit))
        buffered = (
            scope["method"] in MUTATING
            and path.startswith(self.json_prefix)
            and path not in self.streamed
            and _is_json(scope)
        )
        if not buffered:
            return await self.app(scope, counting(receive, limit), send)

        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await self.render_error(scope, receive, send, too_large(limit))
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body.strip():
            try:
                scope[JSON_VALUE] = await parse(body)
            except Unacceptable as exc:
                return await self.render_error(scope, receive, send, errors.MalformedBody(exc.reason))
        await self.app(scope, replaying(body, receive), send)


def _is_json(scope) -> bool:
    """A JSON body by its Content-Type, as FastAPI decides whether to parse one (other bodies it never parses)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            mime = value.decode("latin-1").split(";", 1)[0].strip().lower()
            return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))
    return False


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def counting(receive, limit: int):
    """A receive that raises PAYLOAD_TOO_LARGE (to the route reading it) once more than `limit` bytes came."""
    size = 0

    async def receive_counted():
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise too_large(limit)
        return message

    return receive_counted


def replaying(body: bytes, receive):
    """A receive that hands over the buffered body once, then waits on the real one (for the disconnect)."""
    sent = False

    async def receive_again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


# ---------------------------------------------------------------- NDJSON


async def ndjson_lines(chunks: AsyncIterator[bytes], *, max_line: int) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number, line) for each line of a stream as it arrives, from 1; None for a line longer than
    `max_line` bytes, which is skipped without being held. Memory stays within one chunk and one line."""
    splitter = LineSplitter(max_line)
    async for chunk in chunks:
        for pair in splitter.feed(chunk):
            yield pair
    for pair in splitter.end():
        yield pair


def ndjson_file_lines(chunks: Iterable[bytes], *, max_line: int) -> Iterator[tuple[int, bytes | None]]:
    """The same as `ndjson_lines`, for chunks read synchronously (a file, from the command line)."""
    splitter = LineSplitter(max_line)
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.end()


class LineSplitter:
    """Cuts chunks into numbered lines; a line past `max_line` bytes comes out as None, never held whole."""

    def __init__(self, max_line: int):
        self.max_line = max_line
        self.number = 0
        self.pending = bytearray()
        self.overflow = False

    def feed(self, chunk: bytes) -> list[tuple[int, bytes | None]]:
        out: list[tuple[int, bytes | None]] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not self.overflow:
                    self.pending += chunk[start:]
                    if len(self.pending) > self.max_line:
                        self.overflow = True
                        self.pending.clear()
                return out
            self.number += 1
            if self.overflow:
                out.append((self.number, None))
            elif not self.pending:
                line = chunk[start:end]
                out.append((self.number, line if len(line) <= self.max_line else None))
            else:
                self.pending += chunk[start:end]
                line = bytes(self.pending)
                self.pending.clear()
                out.append((self.number, line if len(line) <= self.max_line else None))
            self.overflow = False
            start = end + 1

    def end(self) -> list[tuple[int, bytes | None]]:
        if self.overflow:
            return [(self.number + 1, None)]
        if self.pending:
            return [(self.number + 1, bytes(self.pending))]
        return []
