"""A small HTTP/1.1 keep-alive client for the providers' fixed POSTs (FCM and Twilio).

The push and SMS channels each send one kind of request over and over: a POST with a
small body to one URL, answered with a small JSON document. aiohttp's general client
(request context managers, a timeout handle and a streaming response per request,
multidicts) was the largest single cost on the gateway's main thread (issue 18). This
client does only what those requests need:

* one ``asyncio.Protocol`` per connection (asyncio and uvloop alike), pooled per origin
  with a connection limit, first come first served; idle connections are reused last
  in, first out, and closed after ``idle_seconds`` (``IDLE_SECONDS`` by default);
* https with ``ssl.create_default_context()`` and SNI, or plain http, as the URL says;
* the request head built once per :class:`Target` (request line, Host and the fixed
  headers) and joined with the per-send headers, ``Content-Length`` and body into one
  write;
* the answer read from its status line and headers, then a ``Content-Length`` body, a
  chunked body (Google's frontends answer chunked); an answer with neither is refused,
  since its end could not be told from a cut connection. ``Accept-Encoding`` is never
  sent, so nothing comes back compressed. The head and the body have size limits: an
  oversized or malformed answer is an error, never a hang. ``Connection: close`` and
  HTTP/1.0 answers end the connection;
* one deadline per request over waiting for a free connection, connecting, writing
  and reading; the deadlines of an origin's requests share one ``loop.call_at`` timer
  (they are all as long, so they end in the order they began).

A POST is never sent twice by this module: a pooled connection that is closed or
closing, or got an EOF or stray bytes while idle, is dropped before anything is
written to it, and any failure after the write raises :class:`TransportError` to the
caller, who decides (the SMS channel looks for an earlier accepted attempt before it
sends again). :class:`TransportError` plays the part of ``aiohttp.ClientError``: the
channels map it into gateway/errors.py's tree.

No proxy support is lost: the aiohttp sessions this replaces did not set
``trust_env``, so they never read ``HTTP(S)_PROXY`` or ``.netrc`` either.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast, overload
from urllib.parse import urlsplit

IDLE_SECONDS = 15.0  # an idle connection is closed after this long, never reused
MAX_HEAD = 64 * 1024  # status line and headers (and a chunked body's trailers)
MAX_BODY = 1024 * 1024  # the providers answer a few hundred bytes of JSON
MAX_CHUNK_LINE = 1024  # one chunk-size line with its extensions
CLOSE_WAIT = 1.0  # seconds aclose waits for the connections to close before aborting them
TIMER_SLACK = 0.001  # a deadline's timer may fire this early (libuv's resolution)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH = re.compile(r"/[!-~]*")  # printable ASCII, no space: already percent-encoded
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_NO_BODY_STATUSES = frozenset({204, 304})
_T = TypeVar("_T")


class TransportError(Exception):
    """No complete answer: connecting failed, the connection broke, or the answer was
    malformed or too large. The request may have reached the server."""


class MalformedAnswer(TransportError):
    """The server's bytes are not an HTTP/1.x answer we accept (or exceed a limit)."""


class RequestTimeout(TransportError, TimeoutError):
    """The request's deadline passed before its answer was complete."""


class Headers(Mapping[str, str]):
    """An answer's headers; lookups ignore case, repeated fields are joined with ", "."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = fields  # lower-cased names

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, /, default: str | _T) -> str | _T: ...
    def get(self, name: str, /, default: object = None) -> object:
        """The field's value, or ``default`` (without a KeyError raised and caught)."""
        return self._fields.get(name.lower(), default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A complete answer: status code, headers and the whole body."""

    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class Target:
    """Where a POST goes and the head it starts with, built once (:meth:`HttpClient.target`)."""

    origin: tuple[str, str, int]  # scheme, host, port: the pool it uses
    head: bytes  # request line, Host and the fixed headers, each ending in CRLF


def header_lines(headers: Mapping[str, str]) -> bytes:
    """``Name: value`` lines, CRLF-terminated; ValueError for a field that would break
    the request (a name that is no token, a value with CR, LF or NUL)."""
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError("an HTTP header name must be a token")
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError("an HTTP header value must not contain CR, LF or NUL")
        lines.append(f"{name}: {value.strip()}\r\n")
    return "".join(lines).encode("latin-1")


# ---------------------------------------------------------------------- answers

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _DONE = range(6)


class AnswerReader:
    """Reads one answer from a connection's bytes, fed as they arrive."""

    __slots__ = (
        "_body",
        "_body_size",
        "_buffer",
        "_headers",
        "_max_body",
        "_max_head",
        "_mode",
        "_remaining",
        "_status",
        "_trailer_size",
        "keep_alive",
    )

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> None:
        self._max_head = max_head
        self._max_body = max_body
        self._buffer = bytearray()
        self._mode = _HEAD
        self._status = 0
        self._headers = Headers({})
        self._body: list[bytes] = []
        self._body_size = 0
        self._remaining = 0  # of a Content-Length body, or of the current chunk
        self._trailer_size = 0
        self.keep_alive = False  # after the answer: may the connection carry another request

    def feed(self, data: bytes) -> HttpAnswer | None:
        """The answer once ``data`` completes it, else None; MalformedAnswer if it is one."""
        buffer = self._buffer
        buffer += data
        while True:
            mode = self._mode
            if mode == _HEAD:
                done = self._read_head(buffer)
            elif mode == _LENGTH:
                done = self._read_length(buffer)
            elif mode == _CHUNK_SIZE:
                done = self._read_chunk_size(buffer)
            elif mode == _CHUNK_DATA:
                done = self._read_chunk_data(buffer)
            else:
                done = self._read_trailer(buffer)
            if not done:
                return None
            if self._mode == _DONE:
                if buffer:
                    self.keep_alive = False  # bytes beyond the answer: the stream is out of step
                return HttpAnswer(self._status, self._headers, b"".join(self._body))

    def _finish(self) -> bool:
        self._mode = _DONE
        return True

    def _read_head(self, buffer: bytearray) -> bool:
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or end > self._max_head:
            if len(buffer) > self._max_head:
                raise MalformedAnswer("the answer's head is too large")
            return False
        lines = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        status, http10 = _status_line(lines[0])
        fields = _header_fields(lines[1:])
        if status < 200:
            if status == 101:
                raise MalformedAnswer("the server switched protocols")
            return True  # an interim answer (100 Continue): the real one follows
        self._status, self._headers = status, Headers(fields)
        connection = fields.get("connection")
        self.keep_alive = not http10 and not (connection and _has_token(connection, "close"))
        encoding = fields.get("transfer-encoding")
        length = fields.get("content-length")
        if status in _NO_BODY_STATUSES:
            return self._finish()
        if encoding is not None:
            if encoding.lower() != "chunked":
                raise MalformedAnswer("unsupported transfer-encoding")
            if length is not None:
                self.keep_alive = False  # both framings: RFC 9112 says close afterwards
            self._mode = _CHUNK_SIZE
            return True
        if length is not None:
            if not (length.isascii() and length.isdigit() and len(length) < 19):
                raise MalformedAnswer("malformed content-length")
            self._remaining = int(length)
            if self._remaining > self._max_body:
                raise MalformedAnswer("the answer's body is too large")
            self._mode = _LENGTH
            return True
        # Neither: the body would end at the close, and a close without TLS's close_notify
        # (asyncio takes it as the end, uvloop as an error) or a cut connection could not
        # be told from the end. FCM and Twilio always frame their answers.
        raise MalformedAnswer("an answer with neither Content-Length nor chunked framing")

    def _read_length(self, buffer: bytearray) -> bool:
        size = self._remaining
        if len(buffer) < size:
            return False
        self._body.append(bytes(buffer[:size]))
        del buffer[:size]
        return self._finish()

    def _read_chunk_size(self, buffer: bytearray) -> bool:
        end = buffer.find(b"\r\n")
        if end < 0 or end > MAX_CHUNK_LINE:
            if len(buffer) > MAX_CHUNK_LINE:
                raise MalformedAnswer("a chunk-size line is too long")
            return False
        size_text = bytes(buffer[:end]).split(b";", 1)[0].strip(b" \t")
        del buffer[: end + 2]
        if not _HEX.fullmatch(size_text):
            raise MalformedAnswer("malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            self._mode = _TRAILERS
            return True
        self._body_size += size
        if self._body_size > self._max_body:
            raise MalformedAnswer("the answer's body is too large")
        self._remaining = size
        self._mode = _CHUNK_DATA
        return True

    def _read_chunk_data(self, buffer: bytearray) -> bool:
        size = self._remaining
        if len(buffer) < size + 2:
            return False
        if buffer[size : size + 2] != b"\r\n":
            raise MalformedAnswer("a chunk does not end in CRLF")
        self._body.append(bytes(buffer[:size]))
        del buffer[: size + 2]
        self._mode = _CHUNK_SIZE
        return True

    def _read_trailer(self, buffer: bytearray) -> bool:
        end = buffer.find(b"\r\n")
        if end < 0:
            if self._trailer_size + len(buffer) > self._max_head:
                raise MalformedAnswer("the answer's trailers are too large")
            return False
        del buffer[: end + 2]
        if end == 0:
            return self._finish()
        self._trailer_size += end + 2  # trailer fields are read and dropped
        if self._trailer_size > self._max_head:
            raise MalformedAnswer("the answer's trailers are too large")
        return True


def _status_line(line: str) -> tuple[int, bool]:
    """The status code, and whether the answer is HTTP/1.0."""
    version, _, rest = line.partition(" ")
    code = rest[:3]
    if (
        version not in ("HTTP/1.1", "HTTP/1.0")
        or not (len(code) == 3 and code.isascii() and code.isdigit())
        or rest[3:4] not in ("", " ")
    ):
        raise MalformedAnswer("malformed status line")
    return int(code), version == "HTTP/1.0"


def _header_fields(lines: list[str]) -> dict[str, str]:
    """The header lines as a dict of lower-cased names; MalformedAnswer for a bad line."""
    fields: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name.strip(" \t") != name:
            raise MalformedAnswer("malformed header line")
        key = name.lower()
        value = value.strip(" \t")
        previous = fields.get(key)
        fields[key] = value if previous is None else f"{previous}, {value}"
    return fields


def _has_token(value: str, token: str) -> bool:
    return any(part.strip().lower() == token for part in value.split(","))


# ---------------------------------------------------------------------- connections


class _Deadline:
    """One request's deadline, failing whatever future the request awaits (its timer is
    its pool's: :class:`_Deadlines`)."""

    __slots__ = ("at", "expired", "over", "waiting")

    def __init__(self, at: float) -> None:
        self.at = at  # loop.time() when the request runs out of time
        self.waiting: asyncio.Future[Any] | None = None
        self.expired = False
        self.over = False  # the request ended, or its time ran out

    def watch(self, future: asyncio.Future[Any]) -> None:
        """Fail ``future`` when the deadline passes; RequestTimeout if it already has."""
        if self.expired:
            raise RequestTimeout("no answer within the timeout")
        self.waiting = future

    def expire(self) -> None:
        self.expired = self.over = True
        waiting = self.waiting
        if waiting is not None and not waiting.done():
            waiting.set_exception(RequestTimeout("no answer within the timeout"))

    def cancel(self) -> None:
        """The request ended: its deadline no longer matters (nor its answer, which the
        queue of deadlines would otherwise hold until the oldest one ends)."""
        self.over = True
        self.waiting = None


class _Deadlines:
    """The deadlines of one pool's requests. All are ``timeout`` long, so they end in
    the order they began, and one timer, set for the oldest one still running, serves
    them all: not a timer made and stopped per request (with uvloop a libuv timer
    each, the largest cost of the client's own per request)."""

    __slots__ = ("_loop", "_queue", "_timeout", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._queue: deque[_Deadline] = deque()  # in the order they began (and end)
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> _Deadline:
        """The deadline of a request that starts now."""
        deadline = _Deadline(self._loop.time() + self._timeout)
        queue = self._queue
        while queue and queue[0].over:  # ended before their time: no timer needed for them
            queue.popleft()
        queue.append(deadline)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline.at, self._fire)
        return deadline

    def _fire(self) -> None:
        self._timer = None
        queue = self._queue
        # A timer may fire up to a millisecond early (libuv counts whole milliseconds),
        # as the timer per request this replaces did.
        now = self._loop.time() + TIMER_SLACK
        while queue:
            first = queue[0]
            if not first.over:
                if first.at > now:
                    self._timer = self._loop.call_at(first.at, self._fire)
                    return
                first.expire()
            queue.popleft()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_head: int, max_body: int) -> None:
        self._loop = loop
        self._max_head = max_head
        self._max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        self.dead = False  # EOF, lost, or stray bytes: never reused
        self.idle_until = 0.0  # while idle in the pool: reusable until then
        self._reader = AnswerReader(max_head, max_body)
        self._waiter: asyncio.Future[HttpAnswer] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            answer = self._reader.feed(data)
        except TransportError as exc:
            self._waiter = None
            waiter.set_exception(exc)
            return
        if answer is not None:
            self._waiter = None
            waiter.set_result(answer)

    def eof_received(self) -> bool:
        self.dead = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            # Every answer is framed: an end of stream before its end is a cut answer.
            waiter.set_exception(
                TransportError("the connection closed before the answer was complete")
            )
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            error = TransportError("the connection was lost before the answer was complete")
            error.__cause__ = exc
            waiter.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)

    # requests

    def usable(self, now: float) -> bool:
        """Whether an idle connection may carry a request (checked before writing)."""
        transport = self.transport
        return (
            not self.dead
            and transport is not None
            and not transport.is_closing()
            and now < self.idle_until
        )

    def reusable(self) -> bool:
        """Whether the connection may go back to the pool after its answer."""
        transport = self.transport
        return (
            self._reader.keep_alive
            and not self.dead
            and transport is not None
            and not transport.is_closing()
        )

    def send(self, data: bytes) -> asyncio.Future[HttpAnswer]:
        """Write one request; the future gets its answer."""
        transport = self.transport
        assert transport is not None
        self._reader = AnswerReader(self._max_head, self._max_body)
        self._waiter = waiter = self._loop.create_future()
        try:
            transport.write(data)
        except (OSError, RuntimeError) as exc:
            self._waiter = None
            raise TransportError("the request could not be written") from exc
        return waiter

    def close(self) -> None:
        self.dead = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _Pool:
    """The connections to one origin: at most ``limit`` open, idle ones reused LIFO."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: tuple[str, str, int],
        limit: int,
        idle_seconds: float,
        ssl_context: ssl.SSLContext | None,
        max_head: int,
        max_body: int,
        timeout: float,
    ) -> None:
        self.loop = loop
        self.deadlines = _Deadlines(loop, timeout)  # of the requests to this origin
        self._host, self._port = origin[1], origin[2]
        self._limit = limit
        self._idle_seconds = idle_seconds
        self._ssl = ssl_context
        self._max_head, self._max_body = max_head, max_body
        self._idle: deque[_Connection] = deque()  # oldest left, newest right
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._handed = 0  # waiters woken for a free slot that have not taken it yet
        self._connections: set[_Connection] = set()
        self._closing: set[_Connection] = set()  # discarded, not closed yet (aclose waits)
        self._opening = 0  # connects under way (they count against the limit)
        self._connects: set[asyncio.Task[None]] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    async def acquire(self, deadline: _Deadline) -> _Connection:
        """A usable connection: the newest idle one, a new one, or the next one freed.

        First come, first served: a caller queues behind those already waiting (or woken
        and not yet running), so a busy sender cannot take every freed connection while
        another request runs out of time in the queue."""
        if self._closed:
            raise TransportError("the HTTP client is closed")
        front = False
        if self._waiters or self._handed >= self._available():
            await self._wait_for_slot(deadline, front=False)
            front = True
        while True:
            if self._closed:
                raise TransportError("the HTTP client is closed")
            idle = self._idle
            if idle:
                now = self.loop.time()
                while idle:
                    connection = idle.pop()
                    if connection.usable(now):
                        return connection
                    self.discard(connection)
            if len(self._connections) + self._opening < self._limit:
                return await self._connect(deadline)
            # Woken, but the slot is gone (an idle connection found dead): first again.
            await self._wait_for_slot(deadline, front=front)
            front = True

    def _available(self) -> int:
        """Idle connections and unused slots (an idle one may turn out dead)."""
        return len(self._idle) + self._limit - len(self._connections) - self._opening

    async def _wait_for_slot(self, deadline: _Deadline, *, front: bool) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()
        deadline.watch(waiter)
        if front:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._handed -= 1
                self._wake()  # woken, but leaving: pass the free slot on
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            raise
        self._handed -= 1

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._handed += 1
                return

    async def _connect(self, deadline: _Deadline) -> _Connection:
        # In a task of its own, so the deadline can fail ``ready`` and cancel the connect.
        ready: asyncio.Future[_Connection] = self.loop.create_future()
        deadline.watch(ready)
        self._opening += 1
        task = self.loop.create_task(self._open(ready))
        self._connects.add(task)
        task.add_done_callback(functools.partial(self._connect_done, ready))
        try:
            connection = await ready
        except BaseException:
            task.cancel()
            if ready.done() and not ready.cancelled() and ready.exception() is None:
                self.discard(ready.result())
            raise
        return connection

    def _connect_done(self, ready: asyncio.Future[_Connection], task: asyncio.Task[None]) -> None:
        # Here rather than in _open: a task cancelled before its first step runs no code.
        self._connects.discard(task)
        self._opening -= 1
        if not ready.done():  # the connect was cancelled by aclose
            ready.set_exception(TransportError("the HTTP client is closed"))
        if ready.cancelled() or ready.exception() is not None:
            self._wake()  # the slot this connect held is free (a connection made is counted)

    async def _open(self, ready: asyncio.Future[_Connection]) -> None:
        try:
            _, connection = await self.loop.create_connection(
                lambda: _Connection(self.loop, self._max_head, self._max_body),
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl is not None else None,
            )
        except Exception as exc:  # OSError, ssl.SSLError, uvloop's own: all "could not connect"
            if not ready.done():
                error = TransportError("could not connect")
                error.__cause__ = exc
                ready.set_exception(error)
            return
        self._connections.add(connection)
        if ready.done() or self._closed:
            self.discard(connection)  # timed out or cancelled meanwhile
        else:
            ready.set_result(connection)

    def release(self, connection: _Connection) -> None:
        """Back to the pool after a complete answer, or closed if it cannot be reused."""
        if self._closed or not connection.reusable():
            self.discard(connection)
            return
        connection.idle_until = self.loop.time() + self._idle_seconds
        self._idle.append(connection)
        if self._sweep is None:
            self._sweep = self.loop.call_at(connection.idle_until, self._expire)
        if self._waiters:
            self._wake()

    def discard(self, connection: _Connection) -> None:
        """Close a connection taken out of the pool (idle or in use) and free its slot."""
        connection.close()
        self._connections.discard(connection)
        if not connection.closed.done():
            self._closing.add(connection)
            connection.closed.add_done_callback(lambda _: self._closing.discard(connection))
        self._wake()

    def _expire(self) -> None:
        """Close the idle connections past their time (the oldest are on the left)."""
        self._sweep = None
        idle = self._idle
        now = self.loop.time()
        while idle and not idle[0].usable(now):
            self.discard(idle.popleft())
        for connection in [c for c in idle if not c.usable(now)]:
            idle.remove(connection)  # lost while idle, out of order
            self.discard(connection)
        if idle:
            self._sweep = self.loop.call_at(idle[0].idle_until, self._expire)

    async def aclose(self) -> None:
        self._closed = True
        self.deadlines.close()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(TransportError("the HTTP client is closed"))
        self._waiters.clear()
        connects = list(self._connects)
        for task in connects:
            task.cancel()
        await asyncio.gather(*connects, return_exceptions=True)
        self._idle.clear()
        for connection in list(self._connections):
            self.discard(connection)
        connections = list(self._closing)
        closing = [c.closed for c in connections if not c.closed.done()]
        if closing:
            _, late = await asyncio.wait(closing, timeout=CLOSE_WAIT)
            for connection in connections:
                if connection.closed in late and connection.transport is not None:
                    connection.transport.abort()


# ---------------------------------------------------------------------- the client


class HttpClient:
    """POSTs to fixed targets over pooled HTTP/1.1 keep-alive connections.

    ``connections`` is the limit per origin, ``timeout`` the total seconds one request
    may take (waiting for a connection included), ``idle_seconds`` how long an idle
    connection is kept. ``ssl_context`` is for https targets; by default
    ``ssl.create_default_context()``, made when the first https target is.
    """

    def __init__(
        self,
        *,
        connections: int,
        timeout: float,
        idle_seconds: float = IDLE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
        max_head: int = MAX_HEAD,
        max_body: int = MAX_BODY,
    ) -> None:
        if connections < 1:
            raise ValueError("an HTTP client needs at least one connection")
        self._limit = connections
        self._timeout = timeout
        self._idle_seconds = idle_seconds
        self._ssl = ssl_context
        self._max_head, self._max_body = max_head, max_body
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._closed = False

    def target(self, url: str, headers: Mapping[str, str]) -> Target:
        """A POST to ``url`` (http or https, already percent-encoded) with these fixed
        headers; ValueError for a URL or header this client cannot send."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError("an HTTP target needs an http or https URL with a host")
        if parts.username is not None or parts.password is not None or parts.fragment:
            raise ValueError("an HTTP target takes no credentials or fragment in its URL")
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS[scheme]
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not _PATH.fullmatch(path):
            raise ValueError("an HTTP target's path must be percent-encoded ASCII")
        if scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()
        authority = f"[{host}]" if ":" in host else host
        if port != _DEFAULT_PORTS[scheme]:
            authority = f"{authority}:{port}"
        lines = {"Host": authority, **headers}
        head = f"POST {path} HTTP/1.1\r\n".encode("ascii") + header_lines(lines)
        return Target((scheme, host, port), head)

    async def post(
        self, target: Target, body: bytes, headers: Mapping[str, str] | None = None
    ) -> HttpAnswer:
        """POST ``body`` to ``target`` with these extra headers, if any; the complete answer.

        Raises TransportError (RequestTimeout past the timeout) when no complete answer
        came; the request is never sent twice.
        """
        pool = self._pools.get(target.origin)
        if pool is None:
            pool = self._pool(target.origin)
        extra = header_lines(headers) if headers else b""
        data = b"".join((target.head, extra, b"Content-Length: %d\r\n\r\n" % len(body), body))
        deadline = pool.deadlines.start()
        try:
            connection = await pool.acquire(deadline)
            if deadline.expired:  # while this task waited to run: nothing was written
                pool.release(connection)
                raise RequestTimeout("no answer within the timeout")
            try:
                pending = connection.send(data)
                deadline.waiting = pending
                answer = await pending
            except BaseException:
                pool.discard(connection)  # its state is unknown: never reused
                raise
            pool.release(connection)
            return answer
        finally:
            deadline.cancel()

    def _pool(self, origin: tuple[str, str, int]) -> _Pool:
        if self._closed:
            raise TransportError("the HTTP client is closed")
        ssl_context = self._ssl if origin[0] == "https" else None
        pool = _Pool(
            asyncio.get_running_loop(),
            origin,
            self._limit,
            self._idle_seconds,
            ssl_context,
            self._max_head,
            self._max_body,
            self._timeout,
        )
        self._pools[origin] = pool
        return pool

    async def aclose(self) -> None:
        """Close every connection (requests in flight fail) and wait until they are closed."""
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
