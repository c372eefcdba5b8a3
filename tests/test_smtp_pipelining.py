"""SMTP PIPELINING (RFC 2920) in the prepared-bytes transaction: MAIL, RCPT and DATA go
in one write when the server advertises it, their answers are all read, and every
refusal, hang-up and timeout ends as it does without pipelining. Against aiosmtpd
(tests/peers/smtp.py) and a scripted server that shows each read off its socket and
misbehaves on request (tests/peers/smtp_scripted.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP as AiosmtpdServer

from channels.email import EmailChannel
from channels.smtp_transaction import dot_stuffed, send_prepared
from gateway.bench.latency import NO_LATENCY
from gateway.bench.sinks import Recorder, SmtpHandler
from gateway.errors import DeadAddress, TransientDeliveryError
from gateway.settings import SmtpSettings
from tests.peers.smtp import SmtpPeer, TlsMode
from tests.peers.smtp_scripted import ScriptedSmtp
from tests.test_smtp_transaction import CONTENTS, FROM, SENDER, URL, delivery, raw_email

RAW = raw_email(1, CONTENTS[1])
TO = "foresatt1@example.no"


def group(raw: bytes, to: str = TO) -> bytes:
    """The envelope as one pipelined write."""
    return f"MAIL FROM:<{FROM}> size={len(raw)}\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode()


def after_ehlo(reads: list[bytes]) -> list[bytes]:
    """The reads after the greeting's EHLO (or two: aiosmtplib's connect may say one)."""
    return [read for read in reads if not read.startswith(b"EHLO ")]


async def connected(host: str, port: int, timeout: float = 5.0) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname=host, port=port, timeout=timeout)
    await smtp.connect()
    await smtp.ehlo()  # what the first sendmail on a connection does
    return smtp


@pytest.fixture
async def peer() -> AsyncIterator[SmtpPeer]:
    async with SmtpPeer(pipelining=True) as server:
        yield server


@pytest.fixture
async def client(peer: SmtpPeer) -> AsyncIterator[aiosmtplib.SMTP]:
    smtp = await connected(peer.host, peer.port)
    yield smtp
    smtp.close()


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedSmtp]:
    async with ScriptedSmtp() as server:
        yield server


async def test_aiosmtpd_takes_a_pipelined_group_as_sendmail_sends_one_by_one(
    peer: SmtpPeer, client: aiosmtplib.SMTP
) -> None:
    assert client.supports_extension("pipelining")
    for n, content in enumerate(CONTENTS):
        raw = raw_email(n, content)
        await client.sendmail(FROM, [f"foresatt{n}@example.no"], raw)
        await send_prepared(client, FROM, f"foresatt{n}@example.no", raw)
    assert len(peer.received) == 2 * len(CONTENTS)
    for old, new in zip(peer.received[::2], peer.received[1::2], strict=True):
        assert (new.mail_from, new.rcpt_tos, new.raw) == (old.mail_from, old.rcpt_tos, old.raw)
        assert new.mail_options == old.mail_options == [f"SIZE={len(new.raw)}"]
    assert peer.connections == 1


@pytest.mark.parametrize("split", [None, 0.01], ids=["answers-in-one-read", "answers-apart"])
async def test_the_envelope_goes_in_one_write_and_the_content_in_another(
    scripted: ScriptedSmtp, split: float | None
) -> None:
    scripted.split = split
    client = await connected(scripted.host, scripted.port)
    try:
        for _ in range(2):  # the second on the same connection: no answer left over
            await send_prepared(client, FROM, TO, RAW)
    finally:
        client.close()
    assert after_ehlo(scripted.reads) == [group(RAW), dot_stuffed(RAW)] * 2
    assert scripted.contents == [RAW] * 2


@pytest.mark.parametrize("split", [0.0001, 0.0003])
async def test_answers_a_fraction_of_a_millisecond_apart_are_none_of_them_lost(
    scripted: ScriptedSmtp, split: float
) -> None:
    # aiosmtplib's own read_response drops an answer that arrives in the loop turn its
    # asyncio.wait_for takes to wake the reader: a few in a hundred groups hung until
    # the timeout at these spacings (asyncio and uvloop alike) before _answer.
    scripted.split = split
    client = await connected(scripted.host, scripted.port, timeout=2.0)
    try:
        for _ in range(100):
            await send_prepared(client, FROM, TO, RAW)
    finally:
        client.close()
    assert len(scripted.contents) == 100
    assert scripted.connections == 1


async def test_a_refused_mail_is_raised_and_the_session_goes_on(
    peer: SmtpPeer, client: aiosmtplib.SMTP
) -> None:
    peer.reply_to_mail("451 4.3.2 Try later")  # aiosmtpd then answers RCPT and DATA 503
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await send_prepared(client, FROM, TO, RAW)
    assert refused.value.code == 451
    peer.reply_to_mail(None)
    await send_prepared(client, FROM, TO, RAW)
    assert [r.rcpt_tos for r in peer.received] == [[TO]]
    assert peer.connections == 1


async def test_a_refused_recipient_is_raised_and_the_next_message_goes_through(
    peer: SmtpPeer, client: aiosmtplib.SMTP
) -> None:
    peer.reply_to_recipient("dead@example.no", "550 5.1.1 No such user")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send_prepared(client, FROM, "dead@example.no", RAW)
    assert [(r.code, r.recipient) for r in refused.value.recipients] == [(550, "dead@example.no")]
    await send_prepared(client, FROM, TO, RAW)
    assert [r.rcpt_tos for r in peer.received] == [[TO]]
    assert peer.connections == 1


async def test_every_answer_is_read_after_a_refusal(scripted: ScriptedSmtp) -> None:
    scripted.replies.update(RCPT="550 5.1.1 No such user", DATA="503 5.5.1 No recipients")
    scripted.split = 0.01  # the DATA answer comes last and late: it must not pair with RSET
    client = await connected(scripted.host, scripted.port)
    try:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await send_prepared(client, FROM, TO, RAW)
        scripted.replies.clear()
        await send_prepared(client, FROM, TO, RAW)
    finally:
        client.close()
    assert after_ehlo(scripted.reads) == [group(RAW), b"RSET\r\n", group(RAW), dot_stuffed(RAW)]
    assert scripted.contents == [RAW]


@pytest.mark.parametrize("refused", ["MAIL", "RCPT"])
async def test_a_354_after_a_refusal_closes_the_connection_and_nothing_is_sent(
    scripted: ScriptedSmtp, refused: str
) -> None:
    scripted.replies[refused] = "550 5.7.1 Refused"  # and DATA 354 anyway: a broken server
    client = await connected(scripted.host, scripted.port)
    try:
        expected = (
            aiosmtplib.SMTPSenderRefused if refused == "MAIL" else aiosmtplib.SMTPRecipientsRefused
        )
        with pytest.raises(expected):
            await send_prepared(client, FROM, TO, RAW)
        # The content was never ended (not even by "." alone): the transaction dies
        # with the connection, so a broken server cannot take an empty message.
        assert not client.is_connected
    finally:
        client.close()
    assert after_ehlo(scripted.reads) == [group(RAW)]
    scripted.replies.clear()
    client = await connected(scripted.host, scripted.port)
    try:
        await send_prepared(client, FROM, TO, RAW)
    finally:
        client.close()
    assert scripted.contents == [RAW]


async def test_a_hang_up_after_the_group_raises_disconnected_and_nothing_is_sent(
    scripted: ScriptedSmtp,
) -> None:
    scripted.silent.add("DATA")
    scripted.hang_up_after.add("RCPT")
    client = await connected(scripted.host, scripted.port)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send_prepared(client, FROM, TO, RAW)
    assert not client.is_connected
    assert after_ehlo(scripted.reads) == [group(RAW)]


async def test_the_channel_sends_again_once_on_a_fresh_connection_after_a_hang_up_in_the_group(
    scripted: ScriptedSmtp,
) -> None:
    channel = await _channel(scripted.port, timeout=5.0)
    try:
        await channel.send(delivery(1), CONTENTS[0])
        scripted.hang_up_after.add("MAIL")  # a reused connection the relay closed meanwhile
        scripted.silent.update({"RCPT", "DATA"})
        with pytest.raises(TransientDeliveryError):
            await channel.send(delivery(2), CONTENTS[0])  # the fresh one hangs up too
        scripted.hang_up_after.clear()
        scripted.silent.clear()
        await channel.send(delivery(3), CONTENTS[0])
    finally:
        await channel.aclose()
    assert len(scripted.contents) == 2  # 1 and 3, each once; 2 never went
    assert scripted.connections == 3


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA"])
async def test_a_421_in_the_group_closes_the_connection(scripted: ScriptedSmtp, verb: str) -> None:
    scripted.replies[verb] = "421 4.3.2 Shutting down"
    scripted.hang_up_after.add(verb)
    client = await connected(scripted.host, scripted.port)
    expected: type[Exception] = {
        "MAIL": aiosmtplib.SMTPSenderRefused,
        "RCPT": aiosmtplib.SMTPRecipientsRefused,
        "DATA": aiosmtplib.SMTPDataError,
    }[verb]
    with pytest.raises(expected):
        await send_prepared(client, FROM, TO, RAW)
    assert not client.is_connected
    assert scripted.contents == []


async def test_a_421_maps_to_a_transient_failure_and_the_next_send_reconnects(
    scripted: ScriptedSmtp,
) -> None:
    channel = await _channel(scripted.port, timeout=5.0)
    try:
        await channel.send(delivery(1), CONTENTS[0])
        scripted.replies["RCPT"] = "421 4.3.2 Shutting down"
        scripted.hang_up_after.add("RCPT")
        with pytest.raises(TransientDeliveryError) as deferred:
            await channel.send(delivery(2), CONTENTS[0])
        assert deferred.value.code == "smtp_421"
        scripted.replies.clear()
        scripted.hang_up_after.clear()
        await channel.send(delivery(3), CONTENTS[0])
    finally:
        await channel.aclose()
    assert len(scripted.contents) == 2
    assert scripted.connections == 2


async def test_a_silent_server_times_out_and_the_connection_is_not_used_again(
    scripted: ScriptedSmtp,
) -> None:
    channel = await _channel(scripted.port, timeout=0.3)
    try:
        await channel.send(delivery(1), CONTENTS[0])
        scripted.silent.add("DATA")  # MAIL and RCPT answered, DATA never
        with pytest.raises(TransientDeliveryError):
            await channel.send(delivery(2), CONTENTS[0])
        scripted.silent.clear()
        await channel.send(delivery(3), CONTENTS[0])
    finally:
        await channel.aclose()
    assert len(scripted.contents) == 2
    assert scripted.connections == 2


async def test_a_dead_address_through_the_channel_keeps_the_connection(peer: SmtpPeer) -> None:
    channel = await _channel(peer.port, timeout=5.0)
    try:
        await channel.send(delivery(1), CONTENTS[0])
        peer.reply_to_recipient("foresatt2@example.no", "550 5.1.1 No such user")
        with pytest.raises(DeadAddress):
            await channel.send(delivery(2), CONTENTS[0])
        await channel.send(delivery(3), CONTENTS[2])
    finally:
        await channel.aclose()
    assert [r.rcpt_tos for r in peer.received] == [[f"foresatt{n}@example.no"] for n in (1, 3)]
    assert peer.connections == 1


async def test_the_bench_sink_advertises_pipelining_and_takes_a_group() -> None:
    recorder = Recorder()
    handler = SmtpHandler(recorder, NO_LATENCY.sampler("smtp"))
    server = await asyncio.get_running_loop().create_server(
        lambda: AiosmtpdServer(handler, hostname="bench-sink"), "127.0.0.1", 0
    )
    try:
        client = await connected("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            assert client.supports_extension("pipelining")
            await send_prepared(client, FROM, TO, RAW)
        finally:
            client.close()
    finally:
        server.close()
        await server.wait_closed()
    assert list(recorder.first) == [f"{1:032x}"]


async def _channel(port: int, timeout: float) -> EmailChannel:
    settings = SmtpSettings(
        host="127.0.0.1", port=port, tls="none", sender=SENDER, connections=1, timeout=timeout
    )
    channel = EmailChannel(settings, URL)
    await channel.start()
    return channel


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_pipelined_over_tls_with_a_refusal_between(tls: TlsMode) -> None:
    async with SmtpPeer(tls=tls, pipelining=True) as peer:
        settings = SmtpSettings(
            host=peer.host,
            port=peer.port,
            tls=tls,
            ca_file=peer.ca_file,
            sender=SENDER,
            connections=1,
            timeout=5.0,
        )
        channel = EmailChannel(settings, URL)
        await channel.start()
        try:
            peer.reply_to_recipient("foresatt2@example.no", "550 5.1.1 No such user")
            for n in (1, 2, 3):
                with contextlib.suppress(DeadAddress):
                    await channel.send(delivery(n), CONTENTS[n - 1])
        finally:
            await channel.aclose()
    assert [r.rcpt_tos for r in peer.received] == [[f"foresatt{n}@example.no"] for n in (1, 3)]
    assert all(r.tls for r in peer.received)
    assert peer.connections == 1


async def test_an_answer_that_does_not_parse_closes_the_connection(scripted: ScriptedSmtp) -> None:
    scripted.replies["RCPT"] = "XYZ garbage"
    client = await connected(scripted.host, scripted.port)
    try:
        with pytest.raises(aiosmtplib.SMTPException):
            await send_prepared(client, FROM, TO, RAW)
        # DATA's answer is still unread (the server may be taking content): the session
        # is out of step, so it is closed at once, not reset and used again.
        assert not client.is_connected
    finally:
        client.close()
    assert after_ehlo(scripted.reads) == [group(RAW)]
    assert scripted.contents == []
