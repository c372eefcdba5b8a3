"""The prepared-bytes SMTP transaction says what aiosmtplib's sendmail says, to a real
server (aiosmtpd): the same envelope, SIZE, content; the same errors; a usable session
after a refusal; with and without PIPELINING advertised (tests/test_smtp_pipelining.py
has what only a pipelined group can meet)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiosmtplib
import pytest

from channels.email import EmailChannel, email_bytes
from channels.smtp_transaction import dot_stuffed, send_prepared
from gateway.errors import DeadAddress, PermanentDeliveryError, TransientDeliveryError
from gateway.models import Delivery, DeliveryStatus, Rendered, Role
from gateway.settings import SmtpSettings
from tests.peers.smtp import SmtpPeer

NOW = datetime(2026, 12, 6, 23, 0, tzinfo=UTC)
SENDER = "Asker kommune <varsel@asker.kommune.no>"
FROM = "varsel@asker.kommune.no"
URL = "https://varsel.example.no"


def delivery(n: int, address: str | None = None) -> Delivery:
    return Delivery(
        id=f"{n:032x}",
        tenant_id="t1",
        message_id="m1",
        recipient_id=f"p{n}",
        recipient_role=Role.guardian,
        channel="email",
        address=address or f"foresatt{n}@example.no",
        language="nb-NO",
        context={"sender": "Solvang skole"},
        status=DeliveryStatus.queued,
        created_at=NOW,
        updated_at=NOW,
    )


CONTENTS = [
    Rendered(subject="Kort", text="Hei", language="nb"),
    Rendered(
        subject="Foreldremøte – «viktig» " * 6,
        text=".punktum først\n..to\n\n.\nslutt.\n" + "lang linje " * 40,
        html="<p>.x</p>\n.\n<p>" + "ø" * 200 + "</p>",
        language="nb",
    ),
    Rendered(
        subject="اجتماع أولياء الأمور",
        text="مرحبا \u2068Kari\u2069\n.النقطة",
        html='<html dir="rtl"><body><p>مرحبا <bdi>Kari</bdi></p></body></html>',
        language="ar",
    ),
]


def raw_email(n: int, content: Rendered) -> bytes:
    built = email_bytes(delivery(n), content, SENDER, URL, now=NOW)
    assert built is not None
    return built[0]


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelined"])
async def peer(request: pytest.FixtureRequest) -> AsyncIterator[SmtpPeer]:
    async with SmtpPeer(pipelining=request.param) as server:
        yield server


@pytest.fixture
async def client(peer: SmtpPeer) -> AsyncIterator[aiosmtplib.SMTP]:
    smtp = aiosmtplib.SMTP(hostname=peer.host, port=peer.port, timeout=5.0)
    await smtp.connect()
    await smtp.ehlo()  # what the first sendmail on a connection does
    yield smtp
    smtp.close()


def test_dot_stuffing_matches_aiosmtplib() -> None:
    from aiosmtplib.protocol import PERIOD_REGEX

    for raw in (b".a\r\n", b"a\r\n.b\r\n..c\r\n", b"x\r\n.\r\n", b"plain\r\n"):
        assert dot_stuffed(raw) == PERIOD_REGEX.sub(b"..", raw) + b".\r\n"


async def test_same_envelope_and_content_as_sendmail(
    peer: SmtpPeer, client: aiosmtplib.SMTP
) -> None:
    for n, content in enumerate(CONTENTS):
        raw = raw_email(n, content)
        await client.sendmail(FROM, [f"foresatt{n}@example.no"], raw)
        await send_prepared(client, FROM, f"foresatt{n}@example.no", raw)
    assert len(peer.received) == 2 * len(CONTENTS)
    for old, new in zip(peer.received[::2], peer.received[1::2], strict=True):
        assert new.mail_from == old.mail_from == FROM
        assert new.rcpt_tos == old.rcpt_tos
        assert new.mail_options == old.mail_options
        assert any(option.lower().startswith("size=") for option in new.mail_options)
        assert new.raw == old.raw


async def test_refusals_raise_as_sendmail_and_the_session_goes_on(
    peer: SmtpPeer, client: aiosmtplib.SMTP
) -> None:
    raw = raw_email(1, CONTENTS[1])
    peer.reply_to_recipient("dead@example.no", "550 5.1.1 No such user")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send_prepared(client, FROM, "dead@example.no", raw)
    assert refused.value.recipients[0].code == 550
    peer.reply_to_mail("451 4.3.2 Try later")
    with pytest.raises(aiosmtplib.SMTPSenderRefused):
        await send_prepared(client, FROM, "ok@example.no", raw)
    peer.reply_to_mail(None)
    peer.reply_to_data("554 5.6.0 Content refused")
    with pytest.raises(aiosmtplib.SMTPDataError):
        await send_prepared(client, FROM, "ok@example.no", raw)
    peer.reply_to_data(None)
    await send_prepared(client, FROM, "ok@example.no", raw)
    assert [r.rcpt_tos for r in peer.received] == [["ok@example.no"]]
    assert peer.connections == 1


async def test_before_ehlo_and_for_loose_line_ends_sendmail_speaks(peer: SmtpPeer) -> None:
    smtp = aiosmtplib.SMTP(hostname=peer.host, port=peer.port, timeout=5.0)
    await smtp.connect()
    try:
        await send_prepared(smtp, FROM, "a@example.no", b"Subject: x\r\n\r\nhei\r\n")
        await send_prepared(smtp, FROM, "a@example.no", b"Subject: y\n\nlone LF\r\n")
    finally:
        smtp.close()
    assert [r.message["Subject"] for r in peer.received] == ["x", "y"]
    assert peer.received[1].raw == b"Subject: y\r\n\r\nlone LF\r\n"


async def test_the_channel_maps_errors_on_a_reused_connection(peer: SmtpPeer) -> None:
    settings = SmtpSettings(
        host=peer.host, port=peer.port, tls="none", sender=SENDER, connections=1, timeout=5.0
    )
    channel = EmailChannel(settings, URL)
    await channel.start()
    try:
        await channel.send(delivery(1), CONTENTS[0])  # EHLO on this one
        peer.reply_to_recipient("foresatt2@example.no", "550 5.1.1 No such user")
        with pytest.raises(DeadAddress):
            await channel.send(delivery(2), CONTENTS[0])
        peer.reply_to_recipient("foresatt3@example.no", "452 4.2.2 Mailbox full")
        with pytest.raises(TransientDeliveryError):
            await channel.send(delivery(3), CONTENTS[0])
        peer.reply_to_data("554 5.6.0 Content refused")
        with pytest.raises(PermanentDeliveryError):
            await channel.send(delivery(4), CONTENTS[0])
        peer.reply_to_data(None)
        receipt = await channel.send(delivery(5), CONTENTS[2])
    finally:
        await channel.aclose()
    assert receipt.provider_id == f"<{5:032x}@asker.kommune.no>"
    delivered = [r.rcpt_tos for r in peer.received]
    assert delivered == [["foresatt1@example.no"], ["foresatt5@example.no"]]
    assert peer.connections == 1


async def _channel(peer: SmtpPeer, timeout: float) -> EmailChannel:
    settings = SmtpSettings(
        host=peer.host, port=peer.port, tls="none", sender=SENDER, connections=1, timeout=timeout
    )
    channel = EmailChannel(settings, URL)
    await channel.start()
    return channel


async def test_a_timeout_in_the_content_closes_the_connection_and_the_next_one_goes_out(
    peer: SmtpPeer,
) -> None:
    # 2 s: the first, ordinary send must fit in it on a loaded CI machine too (0.5 s once
    # did not, with the whole suite running beside it).
    channel = await _channel(peer, timeout=2.0)
    try:
        await channel.send(delivery(1), CONTENTS[0])
        peer.answer_slowly(3.0)  # the answer to the content comes after our timeout
        with pytest.raises(TransientDeliveryError):
            await channel.send(delivery(2), CONTENTS[1])
        peer.answer_slowly(0)
        receipt = await channel.send(delivery(3), CONTENTS[2])
    finally:
        await channel.aclose()
    assert receipt.provider_id == f"<{3:032x}@asker.kommune.no>"
    assert peer.connections == 2  # the timed-out session was not used again


async def test_a_send_cancelled_in_the_content_leaves_no_session_out_of_step(
    peer: SmtpPeer,
) -> None:
    channel = await _channel(peer, timeout=5.0)
    try:
        await channel.send(delivery(1), CONTENTS[0])
        peer.answer_slowly(0.5)
        send = asyncio.ensure_future(channel.send(delivery(2), CONTENTS[1]))
        await asyncio.sleep(0.2)
        send.cancel()
        with pytest.raises(asyncio.CancelledError):
            await send
        peer.answer_slowly(0)
        receipt = await channel.send(delivery(3), CONTENTS[2])
    finally:
        await channel.aclose()
    assert receipt.provider_id == f"<{3:032x}@asker.kommune.no>"
    assert peer.connections == 2
