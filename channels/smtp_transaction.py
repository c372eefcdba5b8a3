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

When the server advertises PIPELINING (RFC 2920; Postfix, Exchange and SES do), MAIL,
RCPT and DATA go in one write and their three answers are read in turn, then the
content: two round trips instead of four. Every answer of the group is read, even
after a refusal, and the first refusal raises what it raises one command at a time.

A connection that has not said EHLO yet says it first, as ``sendmail`` would. Bytes
that are not CRLF-terminated throughout take ``sendmail`` itself; so does an email with
files (``send_message``). On :class:`RefusalKeepingSMTP` either way's refusal stands
when a deadline cuts the RSET after it short (:func:`refusal_behind`).
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from typing import Literal

import aiosmtplib
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX as _COMMAND_INJECTION
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import Default, SMTPStatus

_CRLF = b"\r\n"
# The answers that let a transaction go on, for MAIL, RCPT and DATA in turn.
_GO_AHEAD: tuple[tuple[int, ...], ...] = (
    (SMTPStatus.completed,),
    (SMTPStatus.completed, SMTPStatus.will_forward),
    (SMTPStatus.start_input,),
)


# What a refused MAIL, RCPT, DATA or content raises (as ``sendmail`` raises it).
REFUSALS = (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused)


class ContentUnanswered(aiosmtplib.SMTPServerDisconnected):
    """The connection was lost after the content was written and before the server's
    answer: the server may have taken the message (RFC 1047), so it is not to be sent
    again at once on a fresh connection."""


class ContentTimedOut(ContentUnanswered):
    """The content was written whole and no answer came in time: a relay that takes
    mail and answers too late (the server most likely has it)."""


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
    checked by the caller) on the connected ``client``. Raises what ``sendmail`` raises.
    A refusal outlives a deadline during the RSET after it only on a
    :class:`RefusalKeepingSMTP` (channels/email.py's connections)."""
    if client.is_ehlo_or_helo_needed:
        await client._ehlo_or_helo_if_needed()  # what sendmail says first on a new session
    if not _transmittable(raw):
        await client.sendmail(sender, [recipient], raw)
        return
    mail = b"MAIL FROM:<" + sender.encode("ascii") + b">"
    if client.supports_extension("size"):
        mail += b" size=%d" % len(raw)
    rcpt = b"RCPT TO:<" + recipient.encode("ascii") + b">"
    try:
        if client.supports_extension("pipelining"):
            answers = await _pipelined_envelope(client, mail, rcpt)
        else:
            answers = await _envelope(client, mail, rcpt)
        refusal = _refusal(answers, sender, recipient)
        if refusal is not None:
            raise refusal
        response = await _content(client, dot_stuffed(raw))
        if response.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
    except REFUSALS:
        await _reset(client)
        raise


async def _envelope(client: aiosmtplib.SMTP, mail: bytes, rcpt: bytes) -> list[SMTPResponse]:
    """MAIL, RCPT, DATA one at a time, each after the answer to the one before; the
    answers up to the first that is not a go-ahead."""
    answers: list[SMTPResponse] = []
    for command, go_ahead in zip((mail, rcpt, b"DATA"), _GO_AHEAD, strict=True):
        answers.append(await client.execute_command(command))
        if answers[-1].code not in go_ahead:
            break
    return answers


async def _pipelined_envelope(
    client: aiosmtplib.SMTP, mail: bytes, rcpt: bytes
) -> list[SMTPResponse]:
    """MAIL, RCPT and DATA in one write, then their answers (RFC 2920): all three even
    after a refusal (up to a 421, after which the server says nothing more). A 354
    after a refused MAIL or RCPT (a server that should have answered 503) closes the
    connection: a server discards a mail transaction whose content never ended, where
    ending it ("." alone) could let a broken server take an empty message. The refusal
    is still what counts, and the next send opens a fresh connection."""
    commands = (mail, rcpt, b"DATA")
    if any(_COMMAND_INJECTION.search(command) for command in commands):
        raise ValueError("Command arg contains a prohibited control character")
    answers = await _exchange(client, _CRLF.join(commands) + _CRLF, len(commands))
    refused = _first_refused(answers)
    if refused is not None and refused < 2 and answers[-1].code == SMTPStatus.start_input:
        client.close()
    return answers


def _first_refused(answers: list[SMTPResponse]) -> int | None:
    """Which of the answers to MAIL, RCPT, DATA (in that order) is the first that is not
    a go-ahead, if any. The answers stop at the first refusal at the latest, so a short
    list always holds one."""
    for index, (answer, go_ahead) in enumerate(zip(answers, _GO_AHEAD, strict=False)):
        if answer.code not in go_ahead:
            return index
    return None


def _refusal(
    answers: list[SMTPResponse], sender: str, recipient: str
) -> aiosmtplib.SMTPException | None:
    """The error ``sendmail`` raises for the first refusal among the answers, if any."""
    index = _first_refused(answers)
    if index is None:
        return None
    code, message = answers[index]
    if index == 0:
        return aiosmtplib.SMTPSenderRefused(code, message, sender)
    if index == 1:
        refused = aiosmtplib.SMTPRecipientRefused(code, message, recipient)
        return aiosmtplib.SMTPRecipientsRefused([refused])
    return aiosmtplib.SMTPDataError(code, message)


async def _exchange(client: aiosmtplib.SMTP, data: bytes, count: int) -> list[SMTPResponse]:
    """Write ``data`` in one write and read ``count`` answers to it, as aiosmtplib's own
    commands do: under its command lock (a QUIT from ``aclose`` cannot take an answer),
    each answer within the client's timeout (none: the caller's deadline bounds the
    whole send, as channels/email.py's does), the client closed on a lost connection or
    a timeout (the session is out of step) and on a 421 (the server is closing it;
    nothing more is read after one)."""
    protocol = client.protocol
    lock = None if protocol is None else protocol._command_lock
    if protocol is None or lock is None:
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    answers: list[SMTPResponse] = []
    try:
        async with lock:
            protocol._response_pending = True  # marked as expected before the write
            try:
                protocol.write(data)
                while len(answers) < count and not _closing(answers):
                    answers.append(await _answer(protocol, client.timeout))
            finally:
                protocol._response_pending = False
    except BaseException:
        # A lost connection, a timeout, an answer that does not parse or a cancellation:
        # answers may still be unread (the server may be in DATA after its 354), so the
        # session is out of step and is not used again.
        client.close()
        raise
    if _closing(answers):
        client.close()
    return answers


def _closing(answers: list[SMTPResponse]) -> bool:
    return bool(answers) and answers[-1].code == SMTPStatus.domain_unavailable


async def _answer(protocol: SMTPProtocol, timeout: float | None) -> SMTPResponse:
    """The next answer of several written for at once.

    aiosmtplib's ``read_response`` expects one answer per write: its protocol parses
    one answer per ``data_received`` into a waiter, leaves the rest of that read in its
    buffer, and drops what arrives while the waiter holds an answer not yet taken. So
    an answer already parsed is taken first (the waiter's, then the buffer's), and the
    waiter is awaited directly rather than through ``asyncio.wait_for``, which on
    Python 3.11 resumes the reader a loop turn late (a turn in which the next answer's
    read would be dropped); asyncio and uvloop run the woken reader before they read
    the socket again.
    """
    waiter = protocol._response_waiter
    if waiter is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    if not waiter.done():
        buffered = protocol._read_response_from_buffer()
        if buffered is not None:
            return buffered
    try:
        if timeout is None:  # the caller's deadline bounds the wait (channels/email.py)
            return await waiter
        async with asyncio.timeout(timeout):
            return await waiter
    except TimeoutError as exc:
        raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from exc
    finally:
        # a fresh waiter for the next answer, none once the connection is gone
        gone = protocol.transport is None
        protocol._response_waiter = None if gone else protocol._loop.create_future()


# Clients whose last message was written whole and got no answer yet: a deadline that
# cuts the wait short leaves it here (content_unanswered), an answer takes it out.
_UNANSWERED: weakref.WeakSet[aiosmtplib.SMTP] = weakref.WeakSet()


def content_unanswered(client: aiosmtplib.SMTP) -> bool:
    """Whether the last message :func:`send_prepared` wrote on ``client`` was written whole
    and got no answer (the caller's deadline cut the wait): the server may have taken it
    (RFC 1047). Cleared by :func:`new_send` at the start of every send."""
    return client in _UNANSWERED


def new_send(client: aiosmtplib.SMTP) -> None:
    """A send starts on ``client``: nothing of its message is out yet (a mark left by the
    last send, cut off by its deadline, is not this one's)."""
    _UNANSWERED.discard(client)


async def _content(client: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
    """Write the message after DATA's 354 and read the server's answer, as aiosmtplib's
    ``data`` does (a lost connection or a timeout closes the client; either is
    :class:`ContentUnanswered`, since the message was written whole)."""
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
            _UNANSWERED.add(client)
            response = await protocol.read_response(timeout=client.timeout)
            _UNANSWERED.discard(client)
            return response
    except aiosmtplib.SMTPServerDisconnected as exc:
        _UNANSWERED.discard(client)  # a cut: most likely not kept; the old rule
        client.close()
        raise ContentUnanswered(str(exc)) from exc
    except aiosmtplib.SMTPTimeoutError as exc:
        _UNANSWERED.discard(client)
        client.close()
        raise ContentTimedOut(str(exc)) from exc


async def _reset(client: aiosmtplib.SMTP) -> None:
    """RSET after a refusal, its own failure not raised (as ``sendmail`` does): the
    refusal is what the send raises. A session whose RSET failed, went unanswered or was
    cut short is out of step and closed."""
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):  # OSError: TimeoutError, ConnectionError
        client.close()
    except asyncio.CancelledError:
        client.close()
        raise


class RefusalKeepingSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, whose RSET keeps the refusal it follows for
    :func:`refusal_behind`: a cancellation that cuts the RSET short (the caller's
    deadline) carries the refusal being handled (by :func:`send_prepared`, or by
    aiosmtplib's ``sendmail`` for an email with files) as its context. Python does not
    chain an exception thrown into a coroutine through the frames above it, so this is
    done where the RSET is awaited, inside the handler of the refusal. That is the one
    place an RSET is said (aiosmtplib 5.1's ``sendmail``, :func:`_reset`); one said
    inside the handler of another refusal would carry that one."""

    async def rset(
        self, *, timeout: float | Literal[Default.token] | None = Default.token
    ) -> SMTPResponse:
        refused = sys.exc_info()[1]  # awaited in the refusal's handler: that refusal
        try:
            return await super().rset(timeout=timeout)
        except asyncio.CancelledError as cut:
            if isinstance(refused, REFUSALS):
                cut.__context__ = refused
            raise


def refusal_behind(exc: TimeoutError) -> Exception:
    """The refusal a deadline's ``TimeoutError`` cut short the RSET of, else ``exc``.

    ``asyncio.timeout`` raises ``TimeoutError`` from the ``CancelledError`` it threw in;
    one that cut an RSET short has the refusal as its context
    (:class:`RefusalKeepingSMTP`). The refusal is the server's answer to this send, so it
    still decides the outcome (a dead mailbox stays one, not a timeout to be tried
    again)."""
    cut = exc.__cause__
    if isinstance(cut, asyncio.CancelledError) and isinstance(cut.__context__, REFUSALS):
        return cut.__context__
    return exc
