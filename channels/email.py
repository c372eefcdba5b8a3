"""Email over SMTP (aiosmtplib), one recipient per message, over a small connection pool.

``build_email`` makes the message (shared with the development outbox);
``EmailChannel`` sends it over up to ``SmtpSettings.connections`` reused SMTP
connections, opened lazily and reopened when the server drops them.

Error mapping (into gateway.errors):

- recipient refused with 5xx -> DeadAddress (5.7.x policy and other non-address
  enhanced codes -> PermanentDeliveryError, the address may still be fine)
- other 5xx (sender, data)   -> PermanentDeliveryError
- 4xx anywhere               -> TransientDeliveryError
- connection lost, refused, timed out -> TransientDeliveryError
- authentication failed, TLS failed, required extension missing -> ChannelUnavailable
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import itertools
import logging
import re
import secrets
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import Policy
from email.utils import format_datetime
from typing import ClassVar

import aiosmtplib

from channels.smtp_transaction import (
    ContentTimedOut,
    ContentUnanswered,
    RefusalKeepingSMTP,
    content_unanswered,
    new_send,
    refusal_behind,
    send_prepared,
)
from gateway.errors import (
    ChannelUnavailable,
    ConfigError,
    DeadAddress,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.headertext import header_text, header_text_problem
from gateway.lease_left import room_for
from gateway.models import Delivery, DeliveryStatus, Receipt, Rendered
from gateway.settings import SmtpSettings, sender_parts

log = logging.getLogger(__name__)

# Enhanced status codes (RFC 3463) that say the mailbox itself is dead.
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_DEAD_MAILBOX = re.compile(r"^5\.1\.\d+$|^5\.2\.1$")
_MAILBOX_CLASSES = ("4.1", "4.2")  # enhanced status classes about one mailbox (RFC 3463)
_TOO_BIG = 552  # to MAIL FROM with SIZE=: this message, not our sender


# A URL that may stand in a List-Unsubscribe header as is: printable ASCII, no spaces or
# angle brackets (RFC 2369).
_HEADER_URL = re.compile(r"^https?://[!-;=?-~]+$")


def unsubscribe_headers(content: Rendered, public_url: str) -> list[tuple[str, str]]:
    """The List-Unsubscribe headers of an email, as ``(name, value)``.

    With the recipient's personal link (``content.unsubscribe_url``) the one-click form
    of RFC 8058: ``List-Unsubscribe`` plus ``List-Unsubscribe-Post``. Without one only
    ``List-Unsubscribe`` to the preferences page, which cannot tell who clicked, so it
    promises no one-click. Nothing without a public URL.
    """
    personal = content.unsubscribe_url
    if personal is not None and _HEADER_URL.match(personal):
        return [
            ("List-Unsubscribe", f"<{personal}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ]
    public_url = public_url.rstrip("/")
    if public_url:
        return [("List-Unsubscribe", f"<{public_url}/preferences>")]
    return []


class _Verbatim(str):
    """A header value written exactly as given: never refolded, never RFC 2047 encoded.

    The email policy would encode a header line longer than 78 characters, and mail
    clients do not decode List-Unsubscribe; From and Subject come folded and encoded
    by :func:`from_header` and :func:`subject_header`, and the policy must not parse
    them again (its refolding differs between patch releases, CVE-2024-6923). A value
    with a ``name`` is a header object to the policy (``header_store_parse`` keeps it,
    ``fold`` calls its ``fold``), so this holds however the message is flattened later
    (aiosmtplib uses its own policy). Folds are written ``"\\r\\n "``.
    """

    name: str

    def __new__(cls, name: str, value: str) -> _Verbatim:
        header = super().__new__(cls, value)
        header.name = name
        return header

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return (self.name, str(self))  # copy and pickle call __new__ with these

    def fold(self, *, policy: Policy) -> str:
        value = str(self).replace("\r\n", policy.linesep)
        return f"{self.name}: {value}{policy.linesep}"


def _address(value: str) -> Address:
    if header_text_problem(value):
        raise PermanentDeliveryError("not a valid email address", code="invalid_address")
    try:
        return Address(addr_spec=value.strip())
    except (ValueError, IndexError) as exc:
        raise PermanentDeliveryError("not a valid email address", code="invalid_address") from exc


_LINE = 78  # RFC 5322's recommended line length


def _plain(name: str, text: str) -> bool:
    """Whether ``text`` may stand in header ``name`` as it is: short printable ASCII
    that no reader would take for an encoded word."""
    return (
        text.isascii()
        and text.isprintable()
        and "=?" not in text
        and len(name) + 2 + len(text) <= _LINE
    )


def _encoded(name: str, text: str) -> str:
    """``text`` as RFC 2047 encoded words (UTF-8), folded with CRLF+space: nothing in it
    is structure to a reader, whatever the text holds."""
    return Header(text, "utf-8", header_name=name).encode(linesep="\r\n")


@functools.lru_cache(maxsize=256)
def subject_header(subject: str) -> str:
    """The Subject header's value: the subject cleaned (:func:`header_text`) and, unless
    it is short plain ASCII, encoded. Cached: a broadcast repeats one subject."""
    text = header_text(subject)
    return text if _plain("Subject", text) else _encoded("Subject", text)


@functools.lru_cache(maxsize=256)
def from_header(display_name: str, addr_spec: str) -> str:
    """The From header's value: our address, with the name as a display name only.

    The name is cleaned (:func:`header_text`), then always a quoted string or encoded
    words, so ``Rektor <rektor@attacker.example>`` stays text. The result is read back
    with the email library's parser; unless it says exactly one mailbox, our address,
    and the name as written (spaces aside), the name is left out.
    """
    address = _address(addr_spec)
    name = header_text(display_name)
    if not name:
        return address.addr_spec
    angle = f"<{address.addr_spec}>"
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if _plain("From", f"{quoted} {angle}"):
        value = f"{quoted} {angle}"
    else:
        phrase = _encoded("From", name)
        last = phrase.rpartition("\n")[2]
        value = phrase + ("\r\n " if len(last) + 1 + len(angle) > _LINE else " ") + angle
    parsed = SMTP_POLICY.header_factory("From", value.replace("\r\n", ""))
    mailboxes = parsed.addresses
    # Spaces aside: Python's parser puts one between adjacent encoded words.
    if (
        len(mailboxes) != 1
        or mailboxes[0].addr_spec != address.addr_spec
        or "".join(mailboxes[0].display_name.split()) != "".join(name.split())
    ):
        log.warning("the sender name did not read back as written; sent without it")
        return address.addr_spec
    return value


def build_email(
    delivery: Delivery,
    content: Rendered,
    sender: str,
    public_url: str,
    *,
    now: datetime | None = None,
) -> EmailMessage:
    """The email for one delivery: exactly one recipient in To, never Cc or Bcc.

    ``sender`` is an address with an optional display name ("Asker kommune
    <varsel@asker.kommune.no>"); the unit's sender name in
    ``delivery.context["sender"]`` replaces the display name when given. The
    Message-ID derives from the delivery id, so a resend is recognisable.
    """
    if not delivery.address:
        raise PermanentDeliveryError("the delivery has no email address", code="no_address")
    sender_name, sender_addr = _parse_sender(sender)
    context_sender = delivery.context.get("sender")
    if isinstance(context_sender, str) and context_sender.strip():
        sender_name = context_sender
    from_address = _address(sender_addr)
    to_address = _address(delivery.address)
    domain = from_address.domain or "budbringer.invalid"

    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = _Verbatim("From", from_header(sender_name, sender_addr))
    message["To"] = to_address
    message["Subject"] = _Verbatim("Subject", subject_header(content.subject))
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = f"<{delivery.id}@{domain}>"
    for name, value in unsubscribe_headers(content, public_url):
        message[name] = _Verbatim(name, value)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(content.text)
    if content.html is not None:
        message.add_alternative(content.html, subtype="html")
    for name, content_type, data in content.files:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    # after the content: set_content clears Content-* headers
    message["Content-Language"] = header_text(content.language or delivery.language)
    return message


# A plain ASCII dot-atom address: what the direct serialisation below handles. Anything
# else (quoted local parts, non-ASCII needing SMTPUTF8) takes build_email's path.
_PLAIN_ADDRESS = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


@functools.lru_cache(maxsize=4)
def _date_now(second: int) -> str:
    """The Date header of an email sent in this second (it shows no fractions)."""
    return format_datetime(datetime.fromtimestamp(second, UTC))


@functools.lru_cache(maxsize=64)
def _header_value(text: str) -> str:
    """:func:`header_text`, cached: a broadcast repeats a few languages."""
    return header_text(text)


@functools.lru_cache(maxsize=16)
def _parse_sender(sender: str) -> tuple[str, str]:
    """The settings' reading of the sender (checked there); ("", "") for one that is not
    an address, which :func:`_address` then refuses as any invalid address."""
    try:
        return sender_parts(sender)
    except ValueError:
        return "", ""


@functools.lru_cache(maxsize=4096)
def _qp_line(line: bytes) -> bytes:
    """One line (without its end) quoted-printable, ending CRLF as on the wire."""
    return binascii.b2a_qp(line + b"\n", istext=True).replace(b"\n", b"\r\n")


def _qp_part(content_type: str, text: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    if not body.endswith("\n"):
        body += "\n"
    # Quoted-printable text is encoded line by line, so the lines every email of a
    # broadcast shares are encoded once (only the read link's and the names' differ),
    # and a line met before costs a cache look-up in C (map over the cached function).
    return _PART_HEADS[content_type] + b"".join(map(_qp_line, body.encode().split(b"\n")[:-1]))


_PART_HEADS = {
    kind: (
        f'Content-Type: {kind}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode()
    for kind in ("text/plain", "text/html")
}
# A multipart boundary: "=_" never occurs in quoted-printable text, so a boundary that
# starts with it cannot either; random per process and counted per message, unique.
_BOUNDARY_PREFIX = f"=_bb{secrets.token_hex(6)}"
_boundaries = itertools.count()


def _crlf(text: str) -> bytes:
    """Lines ended CRLF, whatever they were ended with (header values fold with CRLF)."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


@functools.lru_cache(maxsize=256)
def _from_line(sender_name: str, sender_addr: str) -> bytes:
    """The From header as sent (a broadcast has a few senders)."""
    return _crlf(f"From: {from_header(sender_name, sender_addr)}\n")


@functools.lru_cache(maxsize=256)
def _subject_line(subject: str) -> bytes:
    return _crlf(f"Subject: {subject_header(subject)}\n")


@functools.lru_cache(maxsize=64)
def _tail_head(language: str) -> bytes:
    return _crlf(
        "Auto-Submitted: auto-generated\nMIME-Version: 1.0\n"
        f"Content-Language: {_header_value(language)}"
    )


def email_bytes(
    delivery: Delivery,
    content: Rendered,
    sender: str,
    public_url: str,
    *,
    now: datetime | None = None,
) -> tuple[bytes, str, str] | None:
    """:func:`build_email`'s message serialised directly: ``(raw, recipient, Message-ID)``.

    The hot path of a broadcast: the same headers and parts (quoted-printable UTF-8)
    some fifty times cheaper than building and flattening an ``EmailMessage``; what a
    sender, subject and language share is made once, and a delivery adds its own (To,
    Date, Message-ID, its unsubscribe link, its parts' own lines). None when an address
    is not a plain ASCII one; the caller then uses build_email.
    """
    if not delivery.address:
        raise PermanentDeliveryError("the delivery has no email address", code="no_address")
    to = delivery.address.strip()
    sender_name, sender_addr = _parse_sender(sender)
    if not (_PLAIN_ADDRESS.match(to) and _PLAIN_ADDRESS.match(sender_addr)):
        return None
    context_sender = delivery.context.get("sender")
    if isinstance(context_sender, str) and context_sender.strip():
        sender_name = context_sender
    domain = sender_addr.rpartition("@")[2]
    message_id = f"<{delivery.id}@{domain}>"
    language = content.language or delivery.language
    own = [
        f"Date: {format_datetime(now) if now else _date_now(int(time.time()))}",
        f"Message-ID: {message_id}",
    ]
    own.extend(f"{name}: {value}" for name, value in unsubscribe_headers(content, public_url))
    own.append("")
    head = b"".join(
        (
            _from_line(sender_name, sender_addr),
            _crlf(f"To: {to}\n"),
            _subject_line(content.subject),
            _crlf("\n".join(own)),
            _tail_head(language),
        )
    )
    text = _qp_part("text/plain", content.text)
    if content.html is None:
        raw = head + b"\r\n" + text
    else:
        boundary = f"{_BOUNDARY_PREFIX}{next(_boundaries):x}".encode()
        raw = b"".join(
            (
                head,
                b'\r\nContent-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n',
                b"--" + boundary + b"\r\n",
                text,
                b"\r\n--" + boundary + b"\r\n",
                _qp_part("text/html", content.html),
                b"\r\n--" + boundary + b"--\r\n",
            )
        )
    return raw, to, message_id


def _enhanced(text: str) -> str:
    """The enhanced status code a server's text starts with ("4.2.2"), or ""."""
    found = _ENHANCED.match(text)
    return ".".join(found.groups()) if found else ""


def _refused(code: int, text: str) -> DeliveryError:
    """A recipient refused: dead mailbox, or a permanent/transient problem with this send."""
    if 400 <= code < 500:
        return TransientDeliveryError(
            "recipient deferred by the SMTP server", code=f"smtp_{code}", per_recipient=True
        )
    if code in (530, 535):
        return ChannelUnavailable("SMTP server requires authentication", code=f"smtp_{code}")
    status = _enhanced(text) or None
    if status is None or _DEAD_MAILBOX.match(status):
        return DeadAddress("recipient refused by the SMTP server", code=f"smtp_{code}")
    return PermanentDeliveryError("recipient refused by the SMTP server", code=f"smtp_{code}")


def _is_tls_failure(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError)


def _map_error(exc: Exception) -> DeliveryError:
    """Translate an aiosmtplib/OS error. Server texts are dropped: they may name the address."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return ChannelUnavailable("SMTP authentication failed", code=f"smtp_{exc.code}")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return ChannelUnavailable("SMTP server lacks a required extension", code="smtp_unsupported")
    if _is_tls_failure(exc):
        return ChannelUnavailable("TLS with the SMTP server failed", code="smtp_tls")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return _refused(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code = f"smtp_{exc.code}"
        if 500 <= exc.code < 600:
            if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
                return ChannelUnavailable("SMTP server refuses connections", code=code)
            if isinstance(exc, aiosmtplib.SMTPSenderRefused) and exc.code != _TOO_BIG:
                # MAIL FROM refused (530 authentication required, 550 5.7.1 not allowed
                # to send as): our sender, the same for every delivery, not the family's
                # address; the channel stops and the mail waits for IT to fix it.
                return ChannelUnavailable("SMTP server refuses our sender", code=code)
            return PermanentDeliveryError("SMTP server refused the message", code=code)
        # A 4xx about this mailbox (4.2.x full, 4.1.x address), e.g. after DATA: this
        # recipient's to wait out, not a sign the relay is down for everyone. Not at MAIL
        # FROM: a 4.1.x there is about our sender ("451 4.1.8 domain not found").
        status_class = ".".join(_enhanced(exc.message).split(".")[:2])
        sender = isinstance(exc, aiosmtplib.SMTPSenderRefused)
        per_recipient = status_class in _MAILBOX_CLASSES and not sender
        return TransientDeliveryError(
            "SMTP server deferred the message", code=code, per_recipient=per_recipient
        )
    if type(exc) is aiosmtplib.SMTPException:
        # e.g. login configured but the server offers no AUTH: a settings mismatch
        return ChannelUnavailable("SMTP session setup failed", code="smtp_setup")
    if isinstance(exc, ContentTimedOut):
        return _unanswered()
    return TransientDeliveryError("SMTP connection failed", code="smtp_connection")


def _unanswered() -> TransientDeliveryError:
    """The message was written whole and no answer came in time (not a cut): the relay
    most likely has it (RFC 1047), so it is sent once more at most (gateway/retries.py,
    unanswered_before)."""
    return TransientDeliveryError(
        "SMTP server did not answer the message", code="smtp_unanswered", maybe_sent=True
    )


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise _map_error(exc) from exc


class EmailChannel:
    """Sends each delivery as its own email over a pool of reused SMTP connections."""

    name: ClassVar[str] = "email"
    max_body: ClassVar[int | None] = None
    rate_per_second: ClassVar[float | None] = None

    def __init__(self, settings: SmtpSettings, public_url: str) -> None:
        self._settings = settings
        self._public_url = public_url
        self._envelope_from = _parse_sender(settings.sender)[1]
        if not self._envelope_from:
            raise ConfigError("smtp.sender is not an email address")
        self._tls_context: ssl.SSLContext | None = None
        if settings.tls != "none":
            cafile = str(settings.ca_file) if settings.ca_file else None
            try:
                self._tls_context = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("smtp.ca_file cannot be read as a CA bundle") from exc
        self._clients: list[aiosmtplib.SMTP] = []
        self._pool: asyncio.LifoQueue[aiosmtplib.SMTP] | None = None

    def _new_client(self) -> aiosmtplib.SMTP:
        settings = self._settings
        password = settings.password.get_secret_value() if settings.password else None
        return RefusalKeepingSMTP(
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=password if settings.username else None,
            # No timeout per command: every command of a send is said inside the send's
            # one deadline of the same length (send), which ends first, so a timer per
            # command and answer (three or four an email) would never fire. QUIT has
            # its own (aclose).
            timeout=None,
            use_tls=settings.tls == "implicit",
            start_tls=settings.tls == "starttls",
            tls_context=self._tls_context,
        )

    async def start(self) -> None:
        """Prepare the pool; connections open on first use, in the running loop."""
        if self._pool is not None:
            return
        # LIFO: the most recently used (still open) connection is taken first, so a
        # light load keeps few connections open.
        pool: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        self._clients = [self._new_client() for _ in range(self._settings.connections)]
        for client in self._clients:
            pool.put_nowait(client)
        self._pool = pool

    async def send(self, delivery: Delivery, content: Rendered) -> Receipt:
        """Send one email to ``delivery.address``; raises from gateway.errors."""
        sender, url = self._settings.sender, self._public_url
        message: EmailMessage | bytes
        # Attachments take build_email's path: the direct one writes text parts only.
        direct = None if content.files else email_bytes(delivery, content, sender, url)
        if direct is not None:
            message, address, message_id = direct
        else:
            message = build_email(delivery, content, sender, url)
            address = str(message["To"].addresses[0].addr_spec)
            message_id = str(message["Message-ID"])
        if self._pool is None:
            await self.start()
        pool = self._pool
        assert pool is not None
        # One deadline for the whole conversation with the relay (aiosmtplib's is per
        # command: connect, EHLO, MAIL, RCPT, DATA, the content, each up to the timeout).
        # A send that started with half its job's lease left then ends before the lease
        # does (settings: the timeout is at most half the lease), so no other worker takes
        # the job over and sends it again while this one still waits on a slow relay. The
        # wait for a free connection is not the relay's doing and stays outside it (the
        # dispatcher keeps at most the pool's size in flight).
        client = await pool.get()
        new_send(client)
        try:
            room_for(self._settings.timeout)  # the wait for a connection may have been long
            async with asyncio.timeout(self._settings.timeout):
                await self._send_on(client, message, address, delivery.id)
        except TimeoutError as exc:
            # As a command's timeout: the relay may have taken it (RFC 1047), sent again
            # only by the job's backoff; the interrupted session is not reused. A refusal
            # the relay gave before the deadline (during the RSET after it) still counts.
            client.close()
            if content_unanswered(client):
                raise _unanswered() from exc
            raise _map_error(refusal_behind(exc)) from exc
        except asyncio.CancelledError:
            client.close()  # an interrupted conversation leaves the session out of step
            raise
        finally:
            pool.put_nowait(client)
        log.debug("email handed over", extra={"delivery_id": delivery.id})
        return Receipt(status=DeliveryStatus.sent, provider_id=message_id)

    async def _send_on(
        self,
        client: aiosmtplib.SMTP,
        message: EmailMessage | bytes,
        address: str,
        delivery_id: str,
    ) -> None:
        for attempt in range(2):
            reused = client.is_connected
            try:
                await self._transact(client, message, address)
                return
            except ContentUnanswered as exc:
                # The relay may have taken it (RFC 1047): a transient failure, sent again
                # only by the job's backoff, never at once on a fresh connection.
                raise _map_error(exc) from exc
            except aiosmtplib.SMTPServerDisconnected as exc:
                client.close()
                if attempt or not reused:
                    raise _map_error(exc) from exc
                # A pooled connection the server closed while idle: one try on a fresh one.
                log.info(
                    "SMTP connection was closed, reconnecting", extra={"delivery_id": delivery_id}
                )

    async def _transact(
        self, client: aiosmtplib.SMTP, message: EmailMessage | bytes, address: str
    ) -> None:
        if not client.is_connected:
            with _mapped_errors():
                await client.connect()
        try:
            if isinstance(message, bytes):
                await send_prepared(client, self._envelope_from, address, message)
            else:
                await client.send_message(message, sender=self._envelope_from, recipients=[address])
        except aiosmtplib.SMTPServerDisconnected:
            raise  # the caller decides whether to try a fresh connection
        except aiosmtplib.SMTPNotSupported as exc:
            # no SMTPUTF8 for a non-ASCII address: this address only, the session is fine
            raise PermanentDeliveryError(
                "the SMTP server cannot take this address", code="smtp_utf8"
            ) from exc
        except ValueError as exc:
            raise PermanentDeliveryError(
                "not a valid email address", code="invalid_address"
            ) from exc
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
            raise _map_error(exc) from exc  # aiosmtplib has reset the envelope: session reusable
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()  # a timeout or I/O error leaves the session out of step
            raise _map_error(exc) from exc

    async def aclose(self) -> None:
        """Say QUIT on every open connection."""
        clients, self._clients, self._pool = self._clients, [], None
        for client in clients:
            if not client.is_connected:
                continue
            try:
                await client.quit(timeout=min(self._settings.timeout, 5.0))
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
