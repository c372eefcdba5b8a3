"""EmailChannel against a real SMTP server (aiosmtpd): envelope, headers, pool, TLS, errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from pydantic import SecretStr

from channels.email import EmailChannel, build_email
from channels.smtp_transaction import refusal_behind, send_prepared
from gateway.errors import (
    ChannelUnavailable,
    DeadAddress,
    DeliveryError,
    LeaseShort,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.lease_left import lease_ends_in
from gateway.models import Delivery, DeliveryStatus, Rendered, Role
from gateway.settings import SmtpSettings
from tests.peers.smtp import SmtpPeer, TlsMode

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
URL = "https://varsel.example.no"
SENDER = "Asker kommune <varsel@asker.kommune.no>"
CONTENT = Rendered(
    subject="Foreldremøte tirsdag",
    text="Gjelder: Kari\n\nVelkommen til foreldremøte.",
    html='<!DOCTYPE html><html lang="nb"><body><p>Velkommen til foreldremøte.</p></body></html>',
    language="nb",
)


def delivery(n: int = 1, address: str | None = None, **context: Any) -> Delivery:
    return Delivery(
        id=f"d{n:03d}",
        tenant_id="t1",
        message_id="m1",
        recipient_id=f"p{n}",
        recipient_role=Role.guardian,
        channel="email",
        address=address or f"foresatt{n}@example.no",
        language="nb-NO",
        context=context,
        created_at=NOW,
        updated_at=NOW,
    )


def smtp_settings(peer: SmtpPeer, **overrides: Any) -> SmtpSettings:
    values: dict[str, Any] = {
        "host": peer.host,
        "port": peer.port,
        "tls": "none",
        "sender": SENDER,
        "connections": 2,
        "timeout": 5.0,
    }
    values.update(overrides)
    return SmtpSettings(**values)


@pytest.fixture
async def peer() -> AsyncIterator[SmtpPeer]:
    async with SmtpPeer() as server:
        yield server


@pytest.fixture
async def channel(peer: SmtpPeer) -> AsyncIterator[EmailChannel]:
    email = EmailChannel(smtp_settings(peer), URL)
    await email.start()
    yield email
    await email.aclose()


def parts(message: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.iter_parts()}


async def test_one_recipient_per_message_with_all_headers(
    peer: SmtpPeer, channel: EmailChannel
) -> None:
    deliveries = [delivery(n, sender="Solvang skole – rektor Åse") for n in range(1, 6)]
    receipts = [await channel.send(d, CONTENT) for d in deliveries]

    assert len(peer.received) == 5
    for d, receipt, got in zip(deliveries, receipts, peer.received, strict=True):
        message = got.message
        assert got.mail_from == "varsel@asker.kommune.no"
        assert got.rcpt_tos == [d.address]
        assert [str(a.addr_spec) for a in message["To"].addresses] == [d.address]
        assert message.get_all("To") is not None and len(message.get_all("To") or []) == 1
        assert message["Cc"] is None and message["Bcc"] is None
        sender = message["From"].addresses
        assert len(sender) == 1
        assert sender[0].display_name == "Solvang skole – rektor Åse"
        assert sender[0].addr_spec == "varsel@asker.kommune.no"
        assert message["Subject"] == "Foreldremøte tirsdag"
        assert message["Date"] is not None
        assert message["Message-ID"] == f"<{d.id}@asker.kommune.no>"
        assert receipt.provider_id == message["Message-ID"]
        assert receipt.status is DeliveryStatus.sent
        # no personal link in CONTENT: the preferences page, and no one-click promise
        assert message["List-Unsubscribe"] == f"<{URL}/preferences>"
        assert message["List-Unsubscribe-Post"] is None
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["Content-Language"] == "nb"
        assert message.get_content_type() == "multipart/alternative"
        body = parts(message)
        assert body["text/plain"].strip() == CONTENT.text
        assert body["text/html"].strip() == CONTENT.html
    # sequential sends reuse one pooled connection
    assert peer.connections == 1


@pytest.mark.parametrize("address", ["foresatt@example.no", '"quoted local"@example.no'])
async def test_personal_unsubscribe_link_goes_out_verbatim(
    peer: SmtpPeer, channel: EmailChannel, address: str
) -> None:
    """Both serialisations (direct bytes, and build_email for a quoted local part) keep
    the long link on one line, unencoded, beside the one-click header (RFC 8058)."""
    link = f"{URL}/u/" + "Ab-_9" * 12 + "xyzw"
    content = CONTENT.model_copy(update={"unsubscribe_url": link})
    await channel.send(delivery(address=address), content)
    [got] = peer.received
    assert f"\r\nList-Unsubscribe: <{link}>\r\n".encode() in got.raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in got.raw
    assert got.message["List-Unsubscribe"] == f"<{link}>"


@pytest.mark.parametrize("link", ["https://x.example/u/a b", "https://x.example/u/<a>", "u/a"])
def test_a_link_unfit_for_the_header_falls_back_to_preferences(link: str) -> None:
    content = CONTENT.model_copy(update={"unsubscribe_url": link})
    message = build_email(delivery(), content, SENDER, URL)
    assert message["List-Unsubscribe"] == f"<{URL}/preferences>"
    assert message["List-Unsubscribe-Post"] is None


async def test_display_name_from_settings_without_context(
    peer: SmtpPeer, channel: EmailChannel
) -> None:
    await channel.send(delivery(), CONTENT)
    assert peer.received[0].message["From"].addresses[0].display_name == "Asker kommune"


async def test_concurrent_sends_share_a_bounded_pool(peer: SmtpPeer) -> None:
    email = EmailChannel(smtp_settings(peer, connections=3), URL)
    await email.start()
    try:
        await asyncio.gather(*(email.send(delivery(n), CONTENT) for n in range(1, 13)))
    finally:
        await email.aclose()
    assert sorted(r.rcpt_tos[0] for r in peer.received) == sorted(
        f"foresatt{n}@example.no" for n in range(1, 13)
    )
    assert all(len(r.rcpt_tos) == 1 for r in peer.received)
    assert 1 <= peer.connections <= 3
    assert peer.quits == peer.connections  # aclose says QUIT on every connection


async def test_resend_keeps_the_message_id(peer: SmtpPeer, channel: EmailChannel) -> None:
    first = await channel.send(delivery(7), CONTENT)
    second = await channel.send(delivery(7), CONTENT)
    assert first.provider_id == second.provider_id == "<d007@asker.kommune.no>"
    assert [r.message["Message-ID"] for r in peer.received] == [first.provider_id] * 2


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_tls_modes_with_login(mode: TlsMode) -> None:
    async with SmtpPeer(tls=mode, credentials=("budbringer", "riktig")) as peer:
        settings = smtp_settings(
            peer,
            tls=mode,
            ca_file=peer.ca_file,
            username="budbringer",
            password=SecretStr("riktig"),
        )
        email = EmailChannel(settings, URL)
        await email.start()
        try:
            await email.send(delivery(1), CONTENT)
            await email.send(delivery(2), CONTENT)
        finally:
            await email.aclose()
        assert [r.tls for r in peer.received] == [True, True]
        assert [r.login for r in peer.received] == ["budbringer", "budbringer"]
        assert peer.connections == 1


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_untrusted_certificate_stops_the_channel(mode: TlsMode) -> None:
    async with SmtpPeer(tls=mode) as peer:
        email = EmailChannel(smtp_settings(peer, tls=mode), URL)  # no ca_file
        await email.start()
        try:
            with pytest.raises(ChannelUnavailable):
                await email.send(delivery(), CONTENT)
        finally:
            await email.aclose()
        assert peer.received == []


async def test_wrong_password_stops_the_channel() -> None:
    async with SmtpPeer(tls="starttls", credentials=("budbringer", "riktig")) as peer:
        settings = smtp_settings(
            peer,
            tls="starttls",
            ca_file=peer.ca_file,
            username="budbringer",
            password=SecretStr("feil"),
        )
        email = EmailChannel(settings, URL)
        await email.start()
        try:
            with pytest.raises(ChannelUnavailable) as caught:
                await email.send(delivery(), CONTENT)
        finally:
            await email.aclose()
        assert caught.value.code == "smtp_535"
        assert "feil" not in str(caught.value)
        assert peer.received == []


def assert_private(error: DeliveryError, address: str) -> None:
    assert address not in str(error)
    assert address not in error.message


async def test_dead_mailbox(peer: SmtpPeer, channel: EmailChannel) -> None:
    dead = delivery(1, address="borte@example.no")
    peer.reply_to_recipient("borte@example.no", "550 5.1.1 <borte@example.no>: no such user")
    with pytest.raises(DeadAddress) as caught:
        await channel.send(dead, CONTENT)
    assert caught.value.code == "smtp_550"
    assert_private(caught.value, "borte@example.no")
    # the connection is still good for the next delivery
    await channel.send(delivery(2), CONTENT)
    assert [r.rcpt_tos for r in peer.received] == [["foresatt2@example.no"]]
    assert peer.connections == 1


async def test_policy_refusal_is_permanent_but_not_a_dead_address(
    peer: SmtpPeer, channel: EmailChannel
) -> None:
    peer.reply_to_recipient("foresatt1@example.no", "550 5.7.1 Rejected by policy")
    with pytest.raises(PermanentDeliveryError) as caught:
        await channel.send(delivery(1), CONTENT)
    assert not isinstance(caught.value, DeadAddress)
    assert caught.value.code == "smtp_550"


async def test_deferred_recipient_is_transient(peer: SmtpPeer, channel: EmailChannel) -> None:
    peer.reply_to_recipient("foresatt1@example.no", "451 4.3.0 Try again later")
    with pytest.raises(TransientDeliveryError) as caught:
        await channel.send(delivery(1), CONTENT)
    assert caught.value.code == "smtp_451"
    assert caught.value.retry_after is None
    assert_private(caught.value, "foresatt1@example.no")


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("554 5.6.0 Message content rejected", PermanentDeliveryError),
        ("452 4.3.1 Full", TransientDeliveryError),
    ],
)
async def test_data_refusal(
    peer: SmtpPeer, channel: EmailChannel, reply: str, error: type[DeliveryError]
) -> None:
    peer.reply_to_data(reply)
    with pytest.raises(error) as caught:
        await channel.send(delivery(1), CONTENT)
    assert not isinstance(caught.value, DeadAddress)
    assert caught.value.code == f"smtp_{reply[:3]}"
    peer.reply_to_data(None)
    await channel.send(delivery(2), CONTENT)
    assert len(peer.received) == 1


async def test_server_going_away_then_coming_back(peer: SmtpPeer, channel: EmailChannel) -> None:
    await channel.send(delivery(1), CONTENT)
    await peer.stop()
    with pytest.raises(TransientDeliveryError) as caught:
        await channel.send(delivery(2), CONTENT)
    assert caught.value.code == "smtp_connection"
    await peer.start()  # same port
    await channel.send(delivery(3), CONTENT)
    assert [r.rcpt_tos for r in peer.received] == [
        ["foresatt1@example.no"],
        ["foresatt3@example.no"],
    ]
    assert peer.connections == 2


async def test_dropped_idle_connection_is_replaced(
    peer: SmtpPeer, channel: EmailChannel, caplog: pytest.LogCaptureFixture
) -> None:
    await channel.send(delivery(1), CONTENT)
    # No await in between: the client still believes the pooled connection is open and
    # only learns otherwise mid-transaction, then retries once on a fresh connection.
    peer.drop_connections()
    with caplog.at_level(logging.INFO, logger="channels.email"):
        await channel.send(delivery(2), CONTENT)
    assert [r.rcpt_tos for r in peer.received] == [
        ["foresatt1@example.no"],
        ["foresatt2@example.no"],
    ]
    assert peer.connections == 2
    assert "reconnecting" in caplog.text
    assert "foresatt" not in caplog.text


async def test_connection_lost_after_the_content_is_not_resent_at_once(
    peer: SmtpPeer, channel: EmailChannel
) -> None:
    await channel.send(delivery(1), CONTENT)  # a pooled connection, reused next
    peer.drop_after_data()
    with pytest.raises(TransientDeliveryError) as caught:
        await channel.send(delivery(2), CONTENT)
    # a cut: most likely not kept, tried again by backoff (a late answer is another
    # matter: smtp_unanswered, below)
    assert (caught.value.code, caught.value.maybe_sent) == ("smtp_connection", False)
    # Taken once; a fresh connection would have made it twice (the job's backoff may
    # still send it again: SMTP cannot tell whether the relay kept it, RFC 1047).
    assert [r.rcpt_tos for r in peer.received] == [
        ["foresatt1@example.no"],
        ["foresatt2@example.no"],
    ]
    assert peer.connections == 1


Relay = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_relay(relay: Relay, **settings: Any) -> AsyncIterator[EmailChannel]:
    """An email channel with these settings to a raw SMTP server on 127.0.0.1 that
    ``relay`` speaks for (each line as the test wants it); both closed at the end."""
    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    smtp = SmtpSettings(host="127.0.0.1", port=port, tls="none", sender=SENDER, **settings)
    email = EmailChannel(smtp, URL)
    try:
        yield email
    finally:
        await email.aclose()
        server.close()
        await server.wait_closed()


class AcceptingRelay:
    """A raw relay that takes every mail: it greets, answers each command 250 (EHLO with
    PIPELINING when ``pipelining``), DATA 354 and the end of the content 250, each after
    ``pause(what, session)`` seconds: ``what`` is b"220" for the greeting, a command's
    first four letters in upper case, or b"." for the end of the content; ``session``
    counts connections from 1. It counts sessions and MAIL commands, and sets
    ``answered`` once the answer to a content went out."""

    def __init__(
        self,
        pause: Callable[[bytes, int], float] = lambda what, session: 0.0,
        *,
        pipelining: bool = False,
    ) -> None:
        self.pause = pause
        self.pipelining = pipelining
        self.sessions = 0
        self.mails = 0
        self.answered = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        session = self.sessions

        async def say(what: bytes, line: bytes) -> None:
            delay = self.pause(what, session)
            if delay:
                await asyncio.sleep(delay)
            writer.write(line)

        await say(b"220", b"220 relay.example ESMTP\r\n")
        content = False
        while line := await reader.readline():
            if content:
                if line == b".\r\n":
                    content = False
                    await say(b".", b"250 2.0.0 Taken\r\n")
                    self.answered.set()
                continue
            verb = line[:4].upper()
            if verb == b"EHLO" and self.pipelining:
                await say(verb, b"250-relay.example\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                content = True
                await say(verb, b"354 Go ahead\r\n")
            else:
                self.mails += verb == b"MAIL"
                await say(verb, b"250 OK\r\n")
        writer.close()


async def test_silent_server_times_out() -> None:
    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    async with raw_relay(never_greet, timeout=0.2) as email:
        with pytest.raises(TransientDeliveryError):
            await email.send(delivery(), CONTENT)


async def test_a_relay_answering_each_command_slowly_meets_one_deadline_per_send() -> None:
    """aiosmtplib's timeout is per command: a relay that answers each step (greeting,
    EHLO, MAIL, RCPT, DATA, the content) just within it would hold one send for six
    timeouts, past its job's lease (the settings keep the timeout at most half of it),
    and another worker could send the email too. The whole send has the timeout as its
    deadline, as the HTTP channels' requests have, and it fails as a timeout does."""

    trickle = AcceptingRelay(lambda what, session: 0.3)  # each answer, the greeting too

    loop = asyncio.get_running_loop()
    async with raw_relay(trickle, timeout=0.5) as email:
        started = loop.time()
        with pytest.raises(TransientDeliveryError) as caught:
            await email.send(delivery(), CONTENT)
        # 0.5 s and a little; each command in its own time would take 1.8 s and succeed.
        assert loop.time() - started < 1.2
        assert caught.value.code == "smtp_connection"


async def test_a_send_cut_short_by_its_deadline_leaves_its_session_unused() -> None:
    """The channel's connections have no timeout per command: the send's one deadline
    bounds every answer. One it cuts short mid-envelope (the relay's answers come late)
    closes that session, whose late answers could otherwise be read as the next
    send's; the next send opens a fresh one and goes through."""
    relay = AcceptingRelay(
        lambda what, session: 0.6 if (what, session) == (b"MAIL", 1) else 0.0, pipelining=True
    )

    async with raw_relay(relay, timeout=0.3) as email:
        with pytest.raises(TransientDeliveryError):
            await email.send(delivery(1), CONTENT)
        receipt = await email.send(delivery(2), CONTENT)
        assert receipt.status == DeliveryStatus.sent
        assert relay.sessions == 2


async def test_refused_connection_is_transient(peer: SmtpPeer) -> None:
    settings = smtp_settings(peer)
    await peer.stop()
    email = EmailChannel(settings, URL)
    with pytest.raises(TransientDeliveryError):
        await email.send(delivery(), CONTENT)
    await email.aclose()


async def test_delivery_without_address_is_permanent(channel: EmailChannel) -> None:
    no_address = delivery().model_copy(update={"address": None})
    with pytest.raises(PermanentDeliveryError) as caught:
        await channel.send(no_address, CONTENT)
    assert caught.value.code == "no_address"


def test_build_email_without_html_or_public_url() -> None:
    message = build_email(
        delivery(),
        Rendered(subject="Hei\nder", text="Bare tekst"),
        "varsel@example.no",
        "",
    )
    assert message.get_content_type() == "text/plain"
    assert message["Subject"] == "Hei der"
    assert message["List-Unsubscribe"] is None
    assert message["Content-Language"] == "nb-NO"  # no rendered language: the delivery's
    assert message["Message-ID"] == "<d001@example.no>"


class SlowReset:
    """A relay that refuses every recipient (550 5.1.1) and takes a second over each RSET;
    it counts its sessions and marks each one's end."""

    def __init__(self) -> None:
        self.connections = 0
        self.ended = asyncio.Semaphore(0)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"220 relay.example ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"RCPT":
                    writer.write(b"550 5.1.1 No such user\r\n")
                elif verb == b"RSET":
                    await asyncio.sleep(1.0)
                    writer.write(b"250 OK\r\n")
                else:
                    writer.write(b"250 OK\r\n")
        finally:
            writer.close()
            self.ended.release()

    async def all_ended(self) -> None:
        for _ in range(self.connections):  # each session ends once its slow RSET is answered
            await asyncio.wait_for(self.ended.acquire(), 5)


@pytest.mark.parametrize(
    "content",
    [CONTENT, CONTENT.model_copy(update={"files": [("plan.pdf", "application/pdf", b"%PDF")]})],
    ids=["text", "with a file"],
)
async def test_a_refusal_stands_when_the_deadline_ends_during_the_reset_after_it(
    content: Rendered,
) -> None:
    """After a refused command the envelope is reset (RSET) so the session can be used
    again. A relay slow to answer that RSET runs the send past its deadline: the refusal
    it already gave still decides the outcome (the mailbox does not exist: a dead
    address, not a connection failure tried again later), and the session whose RSET
    went unanswered is not used again. So too for an email with a file, which
    aiosmtplib's ``send_message`` sends and resets."""
    relay = SlowReset()
    async with raw_relay(relay, timeout=0.5) as email:
        with pytest.raises(DeadAddress) as caught:
            await email.send(delivery(1), content)
        assert caught.value.code == "smtp_550"
        with pytest.raises(DeadAddress):
            await email.send(delivery(2), content)
        assert relay.connections == 2  # the first session was closed, not reused
        await relay.all_ended()


async def test_prepared_bytes_with_loose_line_ends_keep_their_refusal_too() -> None:
    """Bytes that are not CRLF throughout take aiosmtplib's ``sendmail`` inside
    ``send_prepared``; on the channel's connections its refusal outlives a deadline
    during the RSET after it as well."""
    relay = SlowReset()
    async with raw_relay(relay, timeout=5) as email:
        client = email._new_client()
        await client.connect()
        with pytest.raises(TimeoutError) as caught:
            async with asyncio.timeout(0.5):
                await send_prepared(
                    client, "varsel@asker.kommune.no", "foresatt@example.no", b"Subject: x\n\nHei\n"
                )
        refusal = refusal_behind(caught.value)
        assert isinstance(refusal, aiosmtplib.SMTPRecipientsRefused)
        assert refusal.recipients[0].code == 550
        client.close()
        await relay.all_ended()


async def test_an_email_that_waited_long_for_a_connection_keeps_within_its_lease() -> None:
    """The wait for a free pooled connection is outside the send's deadline. An email
    that waited so long that less than a timeout of its job's lease is left does not
    start a conversation that could end after another worker took the job over: it is
    a transient failure to try again, and the relay never sees it."""
    relay = AcceptingRelay(lambda what, session: 0.5 if what == b"." else 0.0)

    async def send(email: EmailChannel, n: int) -> None:
        lease_ends_in(1.3)  # each in its own task, as the dispatcher's jobs are
        await email.send(delivery(n), CONTENT)

    async with raw_relay(relay, timeout=1.0, connections=1) as email:
        first = asyncio.create_task(send(email, 1))
        second = asyncio.create_task(send(email, 2))  # waits 0.5 s for the one connection
        await first
        with pytest.raises(LeaseShort) as caught:
            await second
        assert caught.value.code == "lease_short"
        assert (relay.answered.is_set(), relay.mails) == (True, 1)  # the relay saw the first alone


async def test_a_late_answer_is_maybe_sent_and_the_next_send_starts_clean(peer: SmtpPeer) -> None:
    """A relay that takes the message and answers after the timeout: maybe sent
    (smtp_unanswered). The mark it leaves on the connection was read by the next send
    on it: a timeout while that one only connected was reported as maybe sent too, and
    after two such the dispatcher would count an email never sent as sent."""
    channel = EmailChannel(smtp_settings(peer, timeout=0.3, connections=1), URL)
    await channel.start()
    try:
        peer.answer_slowly(0.6)
        with pytest.raises(TransientDeliveryError) as late:
            await channel.send(delivery(1), CONTENT)
        assert (late.value.code, late.value.maybe_sent) == ("smtp_unanswered", True)
        peer.answer_slowly(0)
        peer.greet_slowly(0.6)  # the next send times out before anything is sent
        with pytest.raises(TransientDeliveryError) as connecting:
            await channel.send(delivery(2), CONTENT)
        assert (connecting.value.code, connecting.value.maybe_sent) == ("smtp_connection", False)
        await asyncio.sleep(0.7)
        assert [r.rcpt_tos for r in peer.received] == [["foresatt1@example.no"]]
    finally:
        await channel.aclose()


async def test_a_4_1_x_refusal_of_our_sender_counts_against_the_channel(
    peer: SmtpPeer, channel: EmailChannel
) -> None:
    """ "451 4.1.8 Sender address rejected: domain not found" is about our sender: the
    relay is not taking mail from us, not one family's mailbox."""
    peer.reply_to_mail("451 4.1.8 Sender address rejected: Domain not found")
    with pytest.raises(TransientDeliveryError) as caught:
        await channel.send(delivery(1), CONTENT)
    assert caught.value.per_recipient is False
