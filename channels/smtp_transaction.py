"""One SMTP mail transaction for a message whose bytes are ready to go.

aiosmtplib's ``sendmail`` prepares its arguments for any caller: it parses each
address four times (``parseaddr`` and checks, twice in ``sendmail``, once each in
``mail`` and ``rcpt``), turns the message's line endings into CRLF twice (once to
count it for SIZE, once to send it) and dot-stuffs it with a regex. The emails of a
broadcast (channels/email.py ``email_bytes``) are CRLF-terminated ASCII already, to
plain dot-atom addresses, so :func:`send_prepared` says the same commands (``MAIL
FROM:<a> size=N``, ``RCPT TO:<b>``, ``DATA``, the content, ``.``) over the same
aiosmtplib connection without those steps. Everything else is aiosmtplib's: its
command writer and reader, timeouts, closing on a lost connection or a 421, and the
same exceptions; after a refused command the envelope is reset (RSET) as
``sendmail`` does, so the session stays usable.

A connection that has not said EHLO yet, and bytes that are not CRLF-terminated
throughout, take ``sendmail`` itself.
"""

from __future__ import annotations

import contextlib

import aiosmtplib
from aiosmtplib.typing import SMTPStatus

_CRLF = b"\r\n"


class ContentUnanswered(aiosmtplib.SMTPServerDisconnected):
    """The connection was lost after the content was written and before the server's
    answer: the server may have taken the message (RFC 1047), so it is not to be sent
    again at once on a fresh connection."""


def _transmittable(raw: bytes) -> bool:
    """Whether ``raw`` is what aiosmtplib would transmit already: every line ending a
    CRLF (no lone CR or LF), ending with one."""
    return raw.endswith(_CRLF) and raw.count(b"\r") == raw.count(b"\n") == raw.count(_CRLF)


def dot_stuffed(raw: bytes) -> bytes:
    """``raw`` with a dot doubled at the start of each line (RFC 5321 4.5.2), then the
    end-of-data line."""
    stuffed = raw.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


async def send_prepared(client: aiosmtplib.SMTP, sender: str, recipient: str, raw: bytes) -> None:
    """Send ``raw`` from ``sender`` to ``recipient`` (plain ASCII dot-atom addresses,
    checked by the caller) on the connected ``client``. Raises what ``sendmail`` raises."""
    if client.is_ehlo_or_helo_needed or not _transmittable(raw):
        await client.sendmail(sender, [recipient], raw)
        return
    mail: list[bytes] = [b"MAIL", b"FROM:<" + sender.encode("ascii") + b">"]
    if client.supports_extension("size"):
        mail.append(b"size=%d" % len(raw))
    try:
        response = await client.execute_command(*mail)
        if response.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)
        response = await client.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")
        if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            refused = aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
            raise aiosmtplib.SMTPRecipientsRefused([refused])
        response = await client.execute_command(b"DATA")
        if response.code != SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        response = await _content(client, dot_stuffed(raw))
        if response.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        await _reset(client)
        raise


async def _content(client: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
    """Write the message after DATA's 354 and read the server's answer, as aiosmtplib's
    ``data`` does (a lost connection or a timeout closes the client)."""
    protocol = client.protocol
    lock = None if protocol is None else protocol._command_lock
    if protocol is None or lock is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        # As aiosmtplib's own commands: under its command lock (a QUIT from ``aclose``
        # cannot take this answer), with the answer marked as expected before the write.
        async with lock:
            protocol._response_pending = True
            protocol.write(data)
            return await protocol.read_response(timeout=client.timeout)
    except aiosmtplib.SMTPServerDisconnected as exc:
        client.close()
        raise ContentUnanswered(str(exc)) from exc
    except aiosmtplib.SMTPTimeoutError:
        client.close()
        raise


async def _reset(client: aiosmtplib.SMTP) -> None:
    """RSET after a refusal, its own failure not raised (as ``sendmail`` does)."""
    with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
        await client.rset()
