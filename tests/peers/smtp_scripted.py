"""An SMTP server that answers from a script, for what aiosmtpd will not do: answer 354
to DATA after a refused RCPT, send 421 and hang up mid-group, drop the connection
after a pipelined group, or never answer. It keeps every read as it came off the
socket, so a test sees which commands arrived together.

    async with ScriptedSmtp() as peer:
        peer.replies["RCPT"] = "550 5.1.1 No such user"
        ...
        assert peer.reads[1] == b"MAIL FROM:<a@b> size=9\\r\\nRCPT TO:<c@d>\\r\\nDATA\\r\\n"

It advertises SIZE and PIPELINING and answers every command after the EHLO with
``replies`` (by verb; 250 by default, 354 for DATA, 221 for QUIT), the end of each
content with ``replies["."]`` (250 by default). Replies to one read go back in one
write, or in one write each ``split`` seconds apart. A reply in ``hang_up_after``
closes the connection after it is written; a verb in ``silent`` gets no reply at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType
from typing import cast

_DEFAULTS = {"DATA": "354 Go ahead", "QUIT": "221 Bye", ".": "250 2.0.0 Taken"}


@dataclass
class ScriptedSmtp:
    host: str = "127.0.0.1"
    port: int = 0
    replies: dict[str, str] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    hang_up_after: set[str] = field(default_factory=set)
    split: float | None = None
    reads: list[bytes] = field(default_factory=list)  # every read, over all connections
    commands: list[bytes] = field(default_factory=list)  # command lines, CRLF stripped
    contents: list[bytes] = field(default_factory=list)  # each content up to ".", unstuffed
    connections: int = 0
    _server: asyncio.Server | None = None

    def reply(self, verb: str) -> str:
        return self.replies.get(verb, _DEFAULTS.get(verb, "250 OK"))

    async def __aenter__(self) -> ScriptedSmtp:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Session(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class _Session(asyncio.Protocol):
    def __init__(self, script: ScriptedSmtp) -> None:
        self._script = script
        self._buffer = b""
        self._content: bytes | None = None  # between a 354 and the end of the content
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._script.connections += 1
        self._transport.write(b"220 scripted ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self._script.reads.append(data)
        self._buffer += data
        replies: list[tuple[str, bool]] = []  # (reply, hang up after it)
        while b"\r\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            reply = self._line(line)
            if reply is not None:
                replies.append(reply)
        if not replies:
            return
        if self._script.split is None:
            last = next((n for n, (_, hang_up) in enumerate(replies) if hang_up), None)
            kept = replies if last is None else replies[: last + 1]
            self._write("\r\n".join(text for text, _ in kept), last is not None)
            return
        loop = asyncio.get_running_loop()
        for n, (text, last) in enumerate(replies):
            loop.call_later(n * self._script.split, self._write, text, last)

    def _line(self, line: bytes) -> tuple[str, bool] | None:
        if self._content is not None:
            if line != b".":
                self._content += line.removeprefix(b".") + b"\r\n"  # dot-stuffing undone
                return None
            self._script.contents.append(self._content)
            self._content = None
            return self._script.reply("."), "." in self._script.hang_up_after
        self._script.commands.append(line)
        verb = line.split(b" ", 1)[0].decode().upper()
        if verb == "EHLO":
            return "250-scripted\r\n250-SIZE 10000000\r\n250 PIPELINING", False
        if verb in self._script.silent:
            return None
        reply = self._script.reply(verb)
        if verb == "DATA" and reply.startswith("354"):
            self._content = b""
        return reply, verb in self._script.hang_up_after

    def _write(self, text: str, hang_up: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(text.encode() + b"\r\n")
        if hang_up:
            transport.close()
