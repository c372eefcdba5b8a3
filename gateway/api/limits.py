"""HTTP limits against slow and greedy clients (settings ``http.*``, README "Timeouts and
limits").

* **Header timeout**: a connection must send a complete request head within
  ``header_timeout`` seconds of opening (or of its previous response); otherwise
  it is closed. This is aiohttp's keep-alive timer, which runs from the start of a
  connection and closes it when no complete request has arrived.
* **Body timeout**: once the head is in, the whole body must arrive within
  ``body_timeout`` seconds; a read of the body after that fails, the client gets
  ``408`` and the connection is closed (:func:`body_deadline`).
* **Connections**: at most ``max_connections`` open at once; one more is answered
  ``503`` and closed at once (:class:`ConnectionLimit`).
* **Body size** per route: :func:`body_limit`.
* **Malformed requests**: a request line or header over 8,190 bytes, a character a URL
  may not hold, a broken header. aiohttp answers these itself, before any middleware;
  :func:`json_errors` makes that answer the JSON every other 4xx is, and its log line
  an ``info`` with the error code (aiohttp's own is an ``error`` with a traceback
  quoting the client's bytes).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import http_exceptions as bad
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.api.context import CTX
from gateway.errors import ConfigError, RequestTimeout
from gateway.settings import HttpSettings, Settings

Handler = Callable[[web.Request], Any]
log = logging.getLogger(__name__)


def runner_options(http: HttpSettings) -> dict[str, Any]:
    """Keyword arguments of ``web.AppRunner`` that enforce the header timeout."""
    return {
        "keepalive_timeout": http.header_timeout,
        # After an early answer (401, 408, 413) the rest of a body is drained this long at
        # most, so the client can read the answer, then the connection is closed.
        "lingering_time": min(2.0, http.body_timeout),
    }


def body_limit(request: web.Request) -> int:
    """The body size limit of this request's route: larger where the schema needs it."""
    settings: Settings = request.app[CTX].settings
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else ""
    if path in ("/v1/directory", "/v1/directory/oneroster"):
        return settings.http.directory_max_body_bytes
    if path == "/v1/events":
        return settings.http.events_max_body_bytes
    return settings.max_body_bytes


class _BodyTimedOut(TimeoutError):
    """Set on a request's body stream when its deadline passes: whatever reads the body
    then fails (and aiohttp's drain of the rest stops, as for any timeout)."""


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Fail reads of a body that has not fully arrived ``body_timeout`` seconds after the
    head: 408. A body that is all in by then is never touched."""
    if not request.body_exists:
        response: web.StreamResponse = await handler(request)
        return response
    timeout = request.app[CTX].settings.http.body_timeout
    content = request.content

    def expire() -> None:
        if not content.is_eof():
            content.set_exception(_BodyTimedOut())

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        response = await handler(request)
        return response
    except _BodyTimedOut as exc:
        raise RequestTimeout(f"the body did not arrive within {timeout:g} s") from exc
    finally:
        timer.cancel()


_BUSY = json.dumps(
    {"error": "service_unavailable", "message": "too many connections; try again shortly"}
).encode()


# What a request aiohttp could not parse did wrong: the first class it is an instance of.
_MALFORMED: tuple[tuple[type[Exception], str, str], ...] = (
    (bad.LineTooLong, "line_too_long", "the request line or a header is longer than 8190 bytes"),
    (bad.InvalidURLError, "bad_url", "the path or query holds a character a URL may not"),
    (bad.BadHttpMethod, "bad_method", "the request does not start with an HTTP method"),
    (bad.BadStatusLine, "bad_request_line", "the request line is not METHOD PATH HTTP/1.1"),
    (bad.InvalidHeader, "bad_header", "a header's name or value is malformed"),
)


def _malformed(exc: BaseException | None) -> tuple[str, str]:
    for kind, code, message in _MALFORMED:
        if isinstance(exc, kind):
            return code, message
    return "bad_request", "the request line or a header is not valid HTTP/1.1"


class _JsonErrors(RequestHandler):
    """aiohttp's handler of one connection, answering what it cannot parse in JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        code, text = _malformed(exc)
        log.info("malformed request", extra={"status": status, "error": code})
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already")
        response = web.json_response({"error": code, "message": text}, status=status)
        response.force_close()
        return response


def json_errors(protocol: asyncio.Protocol) -> asyncio.Protocol:
    """Answer what aiohttp cannot parse (it answers before any middleware) in JSON, as
    every other 4xx, and log it as ``info`` with its code: never the client's bytes,
    which may hold a link token. Its 5xx answers stay aiohttp's own. (aiohttp's server
    makes the handler; it gets this subclass's ``handle_error``, and nothing else.)"""
    if type(protocol) is RequestHandler:
        protocol.__class__ = _JsonErrors
    return protocol


class _Busy(asyncio.Protocol):
    """Answers a connection over the limit with 503 and closes it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\n"
            + f"Content-Length: {len(_BUSY)}\r\n\r\n".encode()
            + _BUSY
        )
        transport.close()


class _Counted(asyncio.Protocol):
    """Hands everything to aiohttp's protocol; counts the connection while it is open."""

    def __init__(self, inner: asyncio.Protocol, limit: ConnectionLimit) -> None:
        self._inner = inner
        self._limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._limit.open -= 1
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ConnectionLimit:
    """The protocol factory of the listening socket: aiohttp's, up to ``limit`` connections
    open at once; beyond that each new connection gets 503 and is closed."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], limit: int) -> None:
        self._factory = factory
        self._limit = limit
        self.open = 0

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self._limit:
            return _Busy()
        self.open += 1
        return _Counted(json_errors(self._factory()), self)


async def listen(runner: web.AppRunner, settings: Settings) -> asyncio.Server:
    """Listen on ``settings.host:port`` for the runner's app, within the connection limit."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(
            ConnectionLimit(server, settings.http.max_connections),
            settings.host,
            settings.port,
            backlog=128,
            reuse_address=True,
        )
    except OSError as exc:  # the port is taken, the host is no address of this machine
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            " (BUDBRINGER_HOST, BUDBRINGER_PORT)"
        ) from exc
