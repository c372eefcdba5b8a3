"""A real SMTP server for tests (aiosmtpd), running in the test's own event loop.

    async with SmtpPeer(tls="starttls", credentials=("user", "pw")) as peer:
        settings = SmtpSettings(host=peer.host, port=peer.port, tls="starttls",
                                ca_file=peer.ca_file, username="user", password="pw", ...)
        ...
        assert peer.received[0].rcpt_tos == ["a@example.no"]

It listens on 127.0.0.1, port 0 (or a given port, to come back after ``stop()``),
counts connections, keeps every accepted message parsed, speaks STARTTLS or
implicit TLS with a self-signed certificate made at test time, optionally
checks AUTH credentials, and can answer chosen recipients (or DATA) with any
reply such as "550 5.1.1 No such user" or "451 4.3.0 Try later", can answer
slowly (``answer_slowly``), and advertises PIPELINING (RFC 2920) when asked
(``pipelining=True``; aiosmtpd reads commands line by line, so it answers a group
written at once in order).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TlsMode = Literal["none", "starttls", "implicit"]


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # also the CA file a client trusts: the certificate is self-signed
    key: Path


def make_certificate(directory: Path, host: str = "127.0.0.1") -> TlsFiles:
    """A self-signed certificate for ``host`` (an IP or DNS name) and "localhost"."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "budbringer test smtp")])
    try:
        first: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        first = x509.DNSName(host)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([first, x509.DNSName("localhost")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(cert=directory / "smtp-cert.pem", key=directory / "smtp-key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@dataclass
class Received:
    """One accepted message as the server saw it."""

    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    raw: bytes
    message: EmailMessage
    tls: bool
    login: str | None  # the AUTH user, if the client logged in
    taken_at: float = 0.0  # time.time() when the server took it (before it answered)


@dataclass
class _State:
    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    # recipient -> the answer to DATA of a message to them (a relay refusing one mailbox
    # after the content, as if for the whole relay: 452)
    data_replies: dict[str, str] = field(default_factory=dict)
    mail_reply: str | None = None  # e.g. "421 4.3.2 Try later": every MAIL FROM refused
    data_delay: float = 0.0  # seconds DATA waits before the message is taken and answered
    greet_delay: float = 0.0  # seconds a new connection waits for the greeting
    greet_reply: str | None = None  # e.g. "421 4.7.0 Too many connections": instead of it
    drop_after_data: bool = False  # take the message, then close instead of answering
    quits: int = 0


class _SlowToGreet(SMTP):
    """aiosmtpd's server, whose greeting can come late (a relay under load)."""

    greet_delay = 0.0
    greet_reply: str | None = None

    async def _handle_client(self) -> None:
        if self.greet_delay:
            await asyncio.sleep(self.greet_delay)
        if self.greet_reply is not None and self.transport is not None:
            self.transport.write(self.greet_reply.encode("ascii") + b"\r\n")
            self.transport.close()
            return
        await super()._handle_client()


class _Handler:
    def __init__(self, state: _State, pipelining: bool) -> None:
        self._state = state
        self._pipelining = pipelining

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        if not self._pipelining:
            return responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._state.rcpt_replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self._state.mail_reply is not None:
            return self._state.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._state.quits += 1
        return "221 Bye"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._state.data_reply is not None:
            return self._state.data_reply
        for rcpt in envelope.rcpt_tos:
            if rcpt.lower() in self._state.data_replies:
                return self._state.data_replies[rcpt.lower()]
        raw = envelope.original_content or b""
        # parsed with plain line ends, so part contents compare with the text sent
        parsed = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        transport = server.transport
        login = session.auth_data if session.authenticated else None
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            mail_options=list(envelope.mail_options),
            raw=raw,
            message=parsed,
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
            login=login.login.decode() if isinstance(login, LoginPassword) else None,
            taken_at=time.time(),
        )
        if self._state.data_delay:
            try:
                await asyncio.sleep(self._state.data_delay)
            except asyncio.CancelledError:
                # the client gave up waiting: a real relay's queue keeps it all the same
                self._state.received.append(received)
                raise
            received.taken_at = time.time()
        self._state.received.append(received)
        if self._state.drop_after_data and server.transport is not None:
            server.transport.close()  # taken, but the answer never reaches the client
        return "250 2.0.0 Message accepted for delivery"


class SmtpPeer:
    """A test SMTP server. ``stop()`` drops every connection; ``start()`` brings it back."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        tls: TlsMode = "none",
        credentials: tuple[str, str] | None = None,
        port: int = 0,
        pipelining: bool = False,
    ) -> None:
        self.tls = tls
        self.pipelining = pipelining
        self.credentials = credentials
        self.port = port
        self.connections = 0
        self._state = _State()
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._tls_files: TlsFiles | None = None

    @property
    def received(self) -> list[Received]:
        return self._state.received

    @property
    def quits(self) -> int:
        """How many clients said QUIT (closed politely)."""
        return self._state.quits

    @property
    def ca_file(self) -> Path:
        """The certificate a client must trust (the server's own, self-signed)."""
        assert self._tls_files is not None, "no TLS: give tls='starttls' or 'implicit'"
        return self._tls_files.cert

    def reply_to_recipient(self, address: str, reply: str | None) -> None:
        """Answer RCPT TO for ``address`` with ``reply`` (e.g. "550 5.1.1 No such user");
        None: accept it again."""
        if reply is None:
            self._state.rcpt_replies.pop(address.lower(), None)
        else:
            self._state.rcpt_replies[address.lower()] = reply

    def reply_to_mail(self, reply: str | None) -> None:
        """Answer every MAIL FROM with ``reply`` (e.g. "421 4.3.2 Service not available",
        a relay refusing all mail for a while); None: accept again."""
        self._state.mail_reply = reply

    def reply_to_data(self, reply: str | None) -> None:
        """Answer every DATA with ``reply`` (None: accept again)."""
        self._state.data_reply = reply

    def reply_to_data_for(self, address: str, reply: str) -> None:
        """Answer DATA of any message to ``address`` with ``reply``."""
        self._state.data_replies[address.lower()] = reply

    def drop_after_data(self, drop: bool = True) -> None:
        """Take each message, then close the connection before answering its DATA (a
        relay that goes away after accepting, RFC 1047)."""
        self._state.drop_after_data = drop

    def answer_slowly(self, seconds: float) -> None:
        """Wait ``seconds`` in every DATA before taking the message and answering (a slow
        relay). The message counts as received even if the client is gone by then, as
        with a real MTA."""
        self._state.data_delay = seconds

    def greet_with(self, reply: str | None) -> None:
        """Answer each new connection with ``reply`` instead of a greeting, and close."""
        self._state.greet_reply = reply

    def greet_slowly(self, seconds: float) -> None:
        """Wait ``seconds`` on each new connection before the greeting."""
        self._state.greet_delay = seconds

    def _server_context(self) -> ssl.SSLContext:
        assert self._tls_files is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._tls_files.cert, self._tls_files.key)
        return context

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.credentials is not None
        ok = (
            isinstance(data, LoginPassword)
            and (
                data.login.decode(),
                data.password.decode(),
            )
            == self.credentials
        )
        # handled=False: let aiosmtpd answer 535 itself on a failure
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.tls != "none" and self._tls_files is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="smtp-peer-")
            self._tls_files = make_certificate(Path(self._tempdir.name), self.host)
        context = self._server_context() if self.tls != "none" else None
        handler = _Handler(self._state, self.pipelining)

        def factory() -> SMTP:
            self.connections += 1
            protocol = _SlowToGreet(
                handler,
                hostname="smtp.test",
                loop=loop,
                tls_context=context if self.tls == "starttls" else None,
                require_starttls=self.tls == "starttls",
                authenticator=self._authenticate if self.credentials else None,
                # implicit TLS is TLS too; aiosmtpd only knows about STARTTLS
                auth_require_tls=self.tls == "starttls",
            )
            protocol.greet_delay = self._state.greet_delay
            protocol.greet_reply = self._state.greet_reply
            self._protocols.append(protocol)
            return protocol

        self._server = await loop.create_server(
            factory,
            self.host,
            self.port,
            ssl=context if self.tls == "implicit" else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def drop_connections(self) -> None:
        """Close every open connection at once, as a server restart or idle timeout would."""
        protocols, self._protocols = self._protocols, []
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.close()

    async def stop(self) -> None:
        """Stop listening and drop every connection; the port is kept for ``start()``."""
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            await self._server.wait_closed()
            self._server = None
        # let the closed connections' handler tasks finish
        for _ in range(3):
            await asyncio.sleep(0)

    async def __aenter__(self) -> SmtpPeer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
