"""The providers' HTTP/1.1 client (channels/http1.py) against small local servers.

Each scenario runs on asyncio's loop and on uvloop. The servers are raw asyncio
servers on 127.0.0.1 that read whole requests and answer scripted bytes, so every
framing (Content-Length, chunked; neither is refused), every way a connection ends and
every malformed answer can be produced exactly; they count connections and requests,
so a resent POST would show.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

from channels.http1 import (
    AnswerReader,
    HttpAnswer,
    HttpClient,
    MalformedAnswer,
    RequestTimeout,
    TransportError,
)
from tests.peers.smtp import make_certificate

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


@pytest.fixture(params=sorted(LOOPS))
def run(
    request: pytest.FixtureRequest,
) -> Callable[[Callable[[], Coroutine[Any, Any, None]]], None]:
    """Run one scenario to the end on a fresh loop of the kind under test."""

    def run_on_loop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            runner.run(scenario())

    return run_on_loop


Run = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


@dataclass
class Request:
    """One request as the server read it."""

    head: bytes
    body: bytes
    connection: int  # which accepted connection (1, 2, ...) carried it


# What the server does with one request: write (or not) and say whether to keep reading.
Respond = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]


def answer(raw: bytes = OK) -> Respond:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return True

    return respond


@dataclass
class RawServer:
    """An HTTP/1.1 server that reads whole requests and answers as ``respond`` says."""

    respond: Respond
    ssl_context: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    eofs: int = 0  # connections the client closed between requests
    _handlers: set[asyncio.Task[Any]] = field(default_factory=set)
    _server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/v1/send") -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self._exchanges(reader, writer, number)
        except asyncio.CancelledError:
            pass  # stopped by __aexit__: end as a finished handler, not a cancelled one
        finally:
            self.open_now -= 1
            writer.close()
            self._handlers.discard(task)

    async def _exchanges(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                self.eofs += 1
                return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            request = Request(head, await reader.readexactly(length), number)
            self.requests.append(request)
            if not await self.respond(request, writer):
                return

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()


@asynccontextmanager
async def client(**options: Any) -> AsyncIterator[HttpClient]:
    http = HttpClient(**{"connections": 4, "timeout": 5.0, **options})
    try:
        yield http
    finally:
        await http.aclose()


async def post(http: HttpClient, server: RawServer, body: bytes = b"hello") -> HttpAnswer:
    target = http.target(server.url(), {"Content-Type": "text/plain"})
    return await http.post(target, body)


# ---------------------------------------------------------------------- answers


def test_a_content_length_answer_and_the_request_as_sent(run: Run) -> None:
    async def scenario() -> None:
        raw = b"HTTP/1.1 429 Too Many\r\nretry-AFTER: 7\r\nContent-Length: 4\r\n\r\nslow"
        async with RawServer(answer(raw)) as server, client() as http:
            target = http.target(
                server.url("/v1/projects/p/messages:send?x=%C3%A6"),
                {"Authorization": "Bearer t", "Content-Type": "application/json"},
            )
            got = await http.post(target, b'{"a":1}', {"X-Per-Send": "1"})
            assert (got.status, got.body) == (429, b"slow")
            assert got.headers.get("Retry-After") == got.headers["retry-after"] == "7"
            head = server.requests[0].head
            assert head == (
                b"POST /v1/projects/p/messages:send?x=%C3%A6 HTTP/1.1\r\n"
                + f"Host: 127.0.0.1:{server.port}\r\n".encode()
                + b"Authorization: Bearer t\r\nContent-Type: application/json\r\n"
                + b"X-Per-Send: 1\r\nContent-Length: 7\r\n\r\n"
            )
            assert b"accept-encoding" not in head.lower()  # nothing comes back compressed
            assert server.requests[0].body == b'{"a":1}'

    run(scenario)


def test_keep_alive_reuses_one_connection(run: Run) -> None:
    async def scenario() -> None:
        async with RawServer(answer()) as server, client() as http:
            for _ in range(5):
                assert (await post(http, server)).body == b'{"ok":true}'
            assert (server.connections, len(server.requests)) == (1, 5)

    run(scenario)


def test_a_chunked_answer_in_pieces(run: Run) -> None:
    """As Google's frontends answer: chunked, here with an extension and a trailer, and
    written in pieces that split the framing anywhere."""
    body = b'{"name":"projects/p/messages/0:1"}'
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n"
        + b"\r\n4;name=x\r\n"
        + body[:4]
        + b"\r\n%X\r\n" % len(body[4:])
        + body[4:]
        + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        return True

    async def scenario() -> None:
        async with RawServer(respond) as server, client() as http:
            for _ in range(2):
                assert (await post(http, server)).body == body
            assert server.connections == 1  # the connection stays usable after a chunked body

    run(scenario)


def test_an_interim_100_continue_is_skipped(run: Run) -> None:
    async def scenario() -> None:
        interim = answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
        async with RawServer(interim) as server, client() as http:
            assert (await post(http, server)).status == 200

    run(scenario)


def test_connection_close_ends_the_connection(run: Run) -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        await asyncio.sleep(0.2)  # the client must not wait for the close to go on
        return False

    async def scenario() -> None:
        async with RawServer(respond) as server, client() as http:
            started = time.monotonic()
            for _ in range(3):
                assert (await post(http, server)).body == b"ok"
            assert time.monotonic() - started < 0.5
            assert (server.connections, len(server.requests)) == (3, 3)

    run(scenario)


def test_an_answer_without_length_or_chunks_is_refused(run: Run) -> None:
    """Read to the close, a cut connection would pass for the whole answer."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        await writer.drain()
        writer.write(b"it")
        return False

    async def scenario() -> None:
        async with RawServer(respond) as server, client() as http:
            with pytest.raises(MalformedAnswer):
                await post(http, server)
            assert (server.connections, len(server.requests)) == (1, 1)

    run(scenario)


# ---------------------------------------------------------------------- connections that end


def test_a_connection_the_server_closed_while_idle_is_not_written_to(run: Run) -> None:
    """A server's keep-alive timeout: the next request goes on a fresh connection, and
    the server sees each request once."""

    async def scenario() -> None:
        done = asyncio.Event()

        async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
            writer.write(OK)  # keep-alive, as far as the answer says
            await writer.drain()
            done.set()
            return False

        async with RawServer(respond) as server, client() as http:
            await post(http, server, b"first")
            await done.wait()
            await asyncio.sleep(0.1)  # the FIN reaches the client while it is idle
            await post(http, server, b"second")
            assert [r.body for r in server.requests] == [b"first", b"second"]
            assert [r.connection for r in server.requests] == [1, 2]

    run(scenario)


def test_stray_bytes_on_an_idle_connection_retire_it(run: Run) -> None:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK + OK)  # one answer too many: the stream is out of step
        await writer.drain()
        return True

    async def scenario() -> None:
        async with RawServer(respond) as server, client() as http:
            await post(http, server, b"first")
            await post(http, server, b"second")
            assert [r.connection for r in server.requests] == [1, 2]

    run(scenario)


def test_a_connection_dropped_after_the_request_is_an_error_not_a_resend(run: Run) -> None:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.body == b"lost":
            return False  # read it, then close without a word
        writer.write(OK)
        return True

    async def scenario() -> None:
        async with RawServer(respond) as server, client() as http:
            with pytest.raises(TransportError) as caught:
                await post(http, server, b"lost")
            assert not isinstance(caught.value, RequestTimeout)
            assert [r.body for r in server.requests] == [b"lost"]
            await post(http, server, b"next")  # the client goes on, on a new connection

    run(scenario)


def test_a_refused_connection_is_a_transport_error(run: Run) -> None:
    async def scenario() -> None:
        async with RawServer(answer()) as server:
            url = server.url()
        async with client() as http:
            with pytest.raises(TransportError):
                await http.post(http.target(url, {}), b"x")

    run(scenario)


def test_idle_connections_are_closed_after_idle_seconds(run: Run) -> None:
    async def scenario() -> None:
        async with RawServer(answer()) as server, client(idle_seconds=0.2) as http:
            await post(http, server)
            await asyncio.sleep(0.5)
            assert server.eofs == 1  # the client closed it on its own
            await post(http, server)
            assert server.connections == 2

    run(scenario)


# ---------------------------------------------------------------------- deadlines and limits


def test_the_timeout_covers_the_whole_request(run: Run) -> None:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return False

    async def scenario() -> None:
        async with RawServer(respond) as server, client(timeout=0.3) as http:
            started = time.monotonic()
            with pytest.raises(RequestTimeout) as caught:
                await post(http, server)
            assert 0.25 < time.monotonic() - started < 2.0
            assert isinstance(caught.value, TimeoutError)
            assert len(server.requests) == 1

    run(scenario)


def test_each_request_has_its_whole_timeout_though_the_ones_before_it_ended(run: Run) -> None:
    """The requests share one timer: it fires for an earlier request that already ended,
    and a later request still gets its own full timeout, no less and not much more."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.body == b"hang":
            await asyncio.sleep(30)
            return False
        writer.write(OK)
        await writer.drain()
        return True

    async def scenario() -> None:
        async with RawServer(respond) as server, client(timeout=0.4) as http:
            assert (await post(http, server, b"quick")).status == 200
            await asyncio.sleep(0.2)
            started = time.monotonic()
            hanging = asyncio.create_task(post(http, server, b"hang"))
            answers = await asyncio.gather(*(post(http, server, b"%d" % i) for i in range(5)))
            assert {a.status for a in answers} == {200}
            with pytest.raises(RequestTimeout):
                await hanging
            assert 0.35 < time.monotonic() - started < 1.5

    run(scenario)


def test_a_waiting_request_is_served_before_a_busy_sender_posts_again(run: Run) -> None:
    """First come, first served: a task posting back to back on the only connection
    does not take it again while another request waits (which would time out)."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.01)
        writer.write(OK)
        await writer.drain()
        return True

    async def scenario() -> None:
        async with RawServer(respond) as server, client(connections=1, timeout=1.0) as http:

            async def busy() -> None:
                for i in range(100):
                    await post(http, server, b"busy %d" % i)

            sender = asyncio.create_task(busy())
            await asyncio.sleep(0.05)
            started = time.monotonic()
            assert (await post(http, server, b"waiting")).status == 200
            assert time.monotonic() - started < 0.5
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    run(scenario)


def test_the_pool_limit_holds_under_concurrency(run: Run) -> None:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.01)
        writer.write(OK)
        await writer.drain()
        return True

    async def scenario() -> None:
        async with RawServer(respond) as server, client(connections=3) as http:
            answers = await asyncio.gather(*(post(http, server, b"%d" % i) for i in range(40)))
            assert {a.status for a in answers} == {200}
            assert sorted(r.body for r in server.requests) == sorted(b"%d" % i for i in range(40))
            assert server.most_open == server.connections == 3

    run(scenario)


def test_waiting_for_a_free_connection_counts_against_the_timeout(run: Run) -> None:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return False

    async def scenario() -> None:
        async with RawServer(respond) as server, client(connections=1, timeout=0.3) as http:
            results = await asyncio.gather(
                post(http, server, b"one"), post(http, server, b"two"), return_exceptions=True
            )
            assert all(isinstance(r, RequestTimeout) for r in results)
            assert [r.body for r in server.requests] == [b"one"]  # two never went out

    run(scenario)


# ---------------------------------------------------------------------- answers refused


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: header\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 2000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 * 5,
    ],
    ids=[
        "protocol",
        "status",
        "http2",
        "header-line",
        "folded-header",
        "negative-length",
        "two-lengths",
        "gzip",
        "chunk-size",
        "chunk-end",
        "switching-protocols",
        "head-too-large",
        "body-too-large",
        "chunked-body-too-large",
    ],
)
def test_a_malformed_or_oversized_answer_is_an_error(run: Run, raw: bytes) -> None:
    async def scenario() -> None:
        async with (
            RawServer(answer(raw)) as server,
            client(max_head=1024, max_body=4096, timeout=5.0) as http,
        ):
            with pytest.raises(MalformedAnswer):
                await post(http, server)
            assert len(server.requests) == 1

    run(scenario)


def test_an_endless_head_is_an_error_not_a_hang(run: Run) -> None:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):
            writer.write(b"X-More: " + b"y" * 100 + b"\r\n")
            await writer.drain()
        await asyncio.sleep(30)
        return False

    async def scenario() -> None:
        async with RawServer(respond) as server, client(max_head=4096, timeout=10.0) as http:
            started = time.monotonic()
            with pytest.raises(MalformedAnswer):
                await post(http, server)
            assert time.monotonic() - started < 5.0

    run(scenario)


def test_a_truncated_answer_is_an_error(run: Run) -> None:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        await writer.drain()
        return False

    async def scenario() -> None:
        async with RawServer(respond) as server, client() as http:
            with pytest.raises(TransportError):
                await post(http, server)

    run(scenario)


def test_a_header_that_would_split_the_request_is_refused() -> None:
    http = HttpClient(connections=1, timeout=1.0)
    with pytest.raises(ValueError):
        http.target("http://127.0.0.1:9/x", {"X-Evil": "a\r\nInjected: 1"})
    with pytest.raises(ValueError):
        http.target("http://127.0.0.1:9/a path", {})
    with pytest.raises(ValueError):
        http.target("ftp://127.0.0.1/x", {})


# ---------------------------------------------------------------------- https


def test_https_with_a_trusted_self_signed_certificate_and_sni(run: Run, tmp_path: Path) -> None:
    files = make_certificate(tmp_path, "127.0.0.1")
    names: list[str | None] = []

    def server_context() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files.cert, files.key)
        context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,return-value]
        return context

    async def scenario() -> None:
        async with RawServer(answer(), ssl_context=server_context()) as server:
            url = f"https://localhost:{server.port}/v1/send"
            trusting = ssl.create_default_context(cafile=str(files.cert))
            async with client(ssl_context=trusting) as http:
                target = http.target(url, {})
                for _ in range(2):
                    assert (await http.post(target, b"x")).body == b'{"ok":true}'
                assert b"Host: localhost:" in server.requests[0].head
            assert server.connections == 1
            assert names[0] == "localhost"  # SNI names the URL's host
            async with client() as http:  # the system's trust store does not know it
                with pytest.raises(TransportError) as caught:
                    await http.post(http.target(url, {}), b"x")
                assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            assert len(server.requests) == 2

    run(scenario)


# ---------------------------------------------------------------------- closing


def test_aclose_fails_requests_in_flight_and_leaves_nothing_behind(run: Run) -> None:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.body == b"slow":
            await asyncio.sleep(30)
        writer.write(OK)
        await writer.drain()
        return True

    async def scenario() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with RawServer(respond) as server:
                http = HttpClient(connections=4, timeout=10.0)
                slow = asyncio.ensure_future(post(http, server, b"slow"))
                while not server.requests:
                    await asyncio.sleep(0.01)
                await post(http, server)  # a second connection, idle from now on
                await http.aclose()
                with pytest.raises(TransportError):
                    await slow
                with pytest.raises(TransportError):
                    await post(http, server)
                assert asyncio.all_tasks() == {asyncio.current_task()} | server._handlers
                await asyncio.sleep(0.05)
                assert server.eofs == 1  # the idle connection was closed too
            gc.collect()
        assert not [w for w in caught if "nclosed" in str(w.message)]

    run(scenario)


# ---------------------------------------------------------------------- the reader alone


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n1;x=y\r\n,\r\n6\r\n world\r\n0\r\n\r\n"
)
LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello, world"


@given(st.sampled_from([CHUNKED, LENGTH]), st.lists(st.integers(1, 200), max_size=30))
def test_an_answer_reads_the_same_however_it_is_split(raw: bytes, cuts: list[int]) -> None:
    reader = AnswerReader()
    got = None
    position = 0
    for size in [*cuts, len(raw)]:
        piece, position = raw[position : position + size], position + size
        if piece:
            assert got is None
            got = reader.feed(piece)
    assert got is not None
    assert (got.status, got.body, reader.keep_alive) == (200, b"hello, world", True)
