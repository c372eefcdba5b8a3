"""Slow, greedy and malformed clients against the real server (Service on a port, raw
sockets): a dribbled request head and a dribbled body are cut off, connections are
capped, what the HTTP parser refuses is answered in JSON."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest

from gateway.clock import ManualClock
from gateway.models import DirectoryBatch
from gateway.settings import HttpSettings, Settings
from tests.harness import Gateway, new_tenant, running

# Far longer than the timeouts below: a client still connected after this was not cut off.
PATIENCE = 12.0


@pytest.fixture
async def gateway(settings: Settings, clock: ManualClock) -> AsyncIterator[Gateway]:
    limited = settings.model_copy(
        update={"http": HttpSettings(header_timeout=1, body_timeout=1, max_connections=60)}
    )
    async with running(limited, clock) as gw:
        yield gw


async def connect(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = gw.url.rsplit(":", 1)[1]
    return await asyncio.open_connection("127.0.0.1", int(port))


async def dribble(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, byte: bytes) -> int:
    """Send one byte every 0.25 s until the server closes the connection (or PATIENCE
    runs out); the number of bytes sent."""
    sent = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + PATIENCE
    while loop.time() < end:
        try:
            writer.write(byte)
            await writer.drain()
        except ConnectionError:
            return sent
        sent += 1
        try:
            async with asyncio.timeout(0.25):
                if reader.at_eof() or await reader.read(1 << 16) == b"":
                    return sent
        except ConnectionError:  # closed with our bytes unread: a reset
            return sent
        except TimeoutError:
            pass
    return sent


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes; fails if it does not within PATIENCE."""
    async with asyncio.timeout(PATIENCE):
        try:
            return await reader.read()
        except ConnectionError:
            return b""


async def test_a_dribbled_request_head_is_cut_off(gateway: Gateway) -> None:
    conns = [await connect(gateway) for _ in range(50)]
    for _, writer in conns:
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: budbringer\r\nX-Slow: ")
    results = await asyncio.gather(*(dribble(w, r, b"a") for r, w in conns))
    # Every one was closed by the server long before the client gave up.
    assert all(sent < PATIENCE / 0.25 - 1 for sent in results), results
    for _, writer in conns:
        writer.close()


async def test_a_connection_that_sends_nothing_is_closed(gateway: Gateway) -> None:
    reader, writer = await connect(gateway)
    assert await closed_by_server(reader) == b""
    writer.close()


async def test_a_dribbled_body_gets_408_and_is_closed(gateway: Gateway) -> None:
    reader, writer = await connect(gateway)
    writer.write(
        b"POST /v1/events HTTP/1.1\r\nHost: budbringer\r\nContent-Type: application/json\r\n"
        b"Content-Length: 200\r\n\r\n{"
    )
    await writer.drain()
    sent = await dribble(writer, reader, b" ")
    assert sent < PATIENCE / 0.25 - 1
    writer.close()


async def test_a_slow_body_answer_is_408_json(gateway: Gateway, clock: ManualClock) -> None:
    _, key = await new_tenant(gateway.service, clock, DirectoryBatch())
    reader, writer = await connect(gateway)
    writer.write(
        b"POST /v1/directory HTTP/1.1\r\nHost: budbringer\r\n"
        + f"Authorization: Bearer {key}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{"
    )
    await writer.drain()
    answer = await closed_by_server(reader)  # sending nothing more: the body never completes
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    assert json.loads(body)["error"] == "request_timeout"
    writer.close()


async def test_connections_over_the_limit_get_503(settings: Settings, clock: ManualClock) -> None:
    limited = settings.model_copy(update={"http": HttpSettings(max_connections=3)})
    async with running(limited, clock) as gw:
        held = [await connect(gw) for _ in range(3)]
        reader, writer = await connect(gw)
        answer = await closed_by_server(reader)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "service_unavailable"
        writer.close()
        for _, w in held:
            w.close()
            await w.wait_closed()
        # Once they are gone, new connections are served again.
        for _ in range(50):
            async with gw.session.get(f"{gw.url}/healthz") as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.05)
        assert resp.status == 200


TOKEN = "A" * 64  # a read link's token in the path: it must never reach a log line


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (f"GET /r/{TOKEN}?x={'B' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n", "line_too_long"),
        (f"GET /r/{TOKEN} HTTP/1.1\r\nHost: x\r\nX-Big: {'C' * 9000}\r\n\r\n", "line_too_long"),
        (f"GET /r/{TOKEN}\x01 HTTP/1.1\r\nHost: x\r\n\r\n", "bad_url"),
        ("\x16\x03\x01 hello\r\n\r\n", "bad_method"),  # TLS to the plain port
        (
            f"GET /r/{TOKEN} HTTP/1.1\r\nHost: x\r\nBad Header: ola@example.no\r\n\r\n",
            "bad_request",
        ),
        (
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Transfer-Encoding: chunked\r\n\r\n",
            "bad_request",
        ),
    ],
)
async def test_what_the_http_parser_refuses_is_a_json_400_and_an_info_line(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, raw: str, code: str
) -> None:
    """aiohttp answers these before any middleware: plain text, logged as an error with
    a traceback quoting the client's bytes. Here: JSON, and one info line with the code."""
    reader, writer = await connect(gateway)
    with caplog.at_level(logging.DEBUG):
        writer.write(raw.encode("latin-1"))
        await writer.drain()
        answer = await closed_by_server(reader)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer[:200]
    assert b"Content-Type: application/json" in head
    # aiohttp's C parser calls a malformed header a bad request, its Python one a bad header
    assert json.loads(body)["error"] in ({code, "bad_header"} if "Bad Header" in raw else {code})
    assert TOKEN.encode() not in body and b"ola@" not in body
    lines = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name.startswith(("aiohttp", "gateway"))
    ]
    assert (logging.INFO, "malformed request") in lines, lines
    assert all(level < logging.WARNING for level, _ in lines), lines
    assert not any(r.exc_info for r in caplog.records)
    # the server still answers the next request
    reader, writer = await connect(gateway)
    writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await closed_by_server(reader)).startswith(b"HTTP/1.1 ")
    writer.close()
