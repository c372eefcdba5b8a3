"""The SMS channel against a local Twilio-like server (tests/peers/twilio.py)."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from channels.sms import SmsChannel, map_error, parse_sender
from gateway.errors import (
    ChannelUnavailable,
    ConfigError,
    DeadAddress,
    LeaseShort,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.lease_left import lease_ends_in
from gateway.models import Delivery, DeliveryStatus, Rendered, Role
from gateway.settings import TwilioSettings
from tests.peers.twilio import TwilioPeer

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-" + "x" * 16
SERVICE_SID = "MG" + "fedcba9876543210" * 2
PUBLIC_URL = "https://budbringer.asker.example"
GUARDIAN_PHONE = "+4791234567"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def make_delivery(address: str | None = GUARDIAN_PHONE, **context: Any) -> Delivery:
    return Delivery(
        id="d-" + secrets.token_hex(4),
        tenant_id="t1",
        message_id="m1",
        recipient_id="g1",
        recipient_role=Role.guardian,
        channel="sms",
        address=address,
        language="nb",
        context=context,
        created_at=NOW,
        updated_at=NOW,
    )


def twilio_settings(base_url: str, **overrides: Any) -> TwilioSettings:
    values: dict[str, Any] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "base_url": base_url,
        "default_sender": "Asker",
        "timeout": 5.0,
    }
    values.update(overrides)
    return TwilioSettings(**values)


@pytest.fixture
async def peer() -> AsyncIterator[TwilioPeer]:
    async with TwilioPeer(ACCOUNT_SID, AUTH_TOKEN, api_keys={"SK" + "1" * 32: "key-secret"}) as p:
        yield p


@pytest.fixture
async def channel(peer: TwilioPeer) -> AsyncIterator[SmsChannel]:
    sms = SmsChannel(twilio_settings(peer.base_url), PUBLIC_URL)
    await sms.start()
    try:
        yield sms
    finally:
        await sms.aclose()


HELLO = Rendered(subject="Hei", text="Hei! Foreldremøte tirsdag kl. 18 på Åsane skole.")


async def test_send_returns_sid_and_segments(peer: TwilioPeer, channel: SmsChannel) -> None:
    text = "Påminnelse: " + "æøå " * 50  # 212 GSM-7 septets: two segments
    delivery = make_delivery()
    receipt = await channel.send(delivery, Rendered(subject="s", text=text))

    assert receipt.status is DeliveryStatus.sent
    assert receipt.provider_id is not None
    assert re.fullmatch(r"SM[0-9a-f]{32}", receipt.provider_id)
    assert receipt.provider_id in peer.messages
    assert receipt.segments == 2
    [request] = peer.requests
    assert request.authorized
    assert request.account_sid == ACCOUNT_SID
    assert request.form == {
        "To": [GUARDIAN_PHONE],
        "From": ["Asker"],
        "Body": [text],
        # the URL names the delivery, so an early callback finds it (issue 12)
        "StatusCallback": [f"{PUBLIC_URL}/v1/providers/twilio/status?d={delivery.id}"],
    }


async def test_long_text_falls_back_to_the_short_one(peer: TwilioPeer, channel: SmsChannel) -> None:
    long_text = "a" * (153 * 4 + 1)  # 5 segments, max_segments is 4
    short = "Ny melding fra skolen. Les den her: https://b.example/r/abc"
    receipt = await channel.send(
        make_delivery(), Rendered(subject="s", text=long_text, short=short)
    )
    assert peer.requests[0].field("Body") == short
    assert receipt.segments == 1


async def test_exactly_max_segments_is_sent_whole(peer: TwilioPeer, channel: SmsChannel) -> None:
    text = "a" * (153 * 4)
    receipt = await channel.send(make_delivery(), Rendered(subject="s", text=text, short="x"))
    assert peer.requests[0].field("Body") == text
    assert receipt.segments == 4


async def test_too_long_without_short_text_is_permanent(
    peer: TwilioPeer, channel: SmsChannel
) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await channel.send(make_delivery(), Rendered(subject="s", text="\u2013" * 400))
    assert caught.value.code == "sms_too_long"
    assert peer.requests == []


async def test_429_is_transient_with_retry_after(peer: TwilioPeer, channel: SmsChannel) -> None:
    peer.fail_next(429, code=20429, message="Too Many Requests", retry_after=2)
    peer.fail_next(500, code=20500, message="Internal Server Error")
    with pytest.raises(TransientDeliveryError) as caught:
        await channel.send(make_delivery(), HELLO)
    assert caught.value.retry_after == 2.0
    assert caught.value.code == "twilio_20429"
    # the next error carries no Retry-After: the previous one must not leak into it
    with pytest.raises(TransientDeliveryError) as second:
        await channel.send(make_delivery(), HELLO)
    assert second.value.retry_after is None
    assert second.value.code == "twilio_20500"
    # and then Twilio takes the message
    receipt = await channel.send(make_delivery(), HELLO)
    assert receipt.provider_id in peer.messages


async def test_concurrent_sends_never_mix_retry_after(
    peer: TwilioPeer, channel: SmsChannel
) -> None:
    peer.fail_next(429, code=20429, retry_after=7)
    peer.fail_next(500, code=20500, message="Internal Server Error")
    results = await asyncio.gather(
        channel.send(make_delivery(), HELLO),
        channel.send(make_delivery(), HELLO),
        return_exceptions=True,
    )
    hints = {
        error.code: error.retry_after
        for error in results
        if isinstance(error, TransientDeliveryError)
    }
    assert hints == {"twilio_20429": 7.0, "twilio_20500": None}


async def test_5xx_without_a_json_body_is_transient(peer: TwilioPeer, channel: SmsChannel) -> None:
    peer.fail_next(503, body="<html>Service Unavailable</html>", retry_after=30)
    with pytest.raises(TransientDeliveryError) as caught:
        await channel.send(make_delivery(), HELLO)
    assert caught.value.code == "http_503"
    assert caught.value.retry_after == 30.0


async def test_invalid_number_is_a_dead_address(peer: TwilioPeer, channel: SmsChannel) -> None:
    with pytest.raises(DeadAddress) as caught:
        await channel.send(make_delivery(address="+4712"), HELLO)
    assert caught.value.code == "twilio_21211"


@pytest.mark.parametrize("code", [21614, 21610, 21612])
async def test_unreachable_numbers_are_dead_addresses(
    peer: TwilioPeer, channel: SmsChannel, code: int
) -> None:
    peer.mark_dead(GUARDIAN_PHONE, code)
    with pytest.raises(DeadAddress) as caught:
        await channel.send(make_delivery(), HELLO)
    assert caught.value.code == f"twilio_{code}"
    assert "91234567" not in str(caught.value)  # no phone numbers in error messages


async def test_other_4xx_is_permanent_not_dead(peer: TwilioPeer, channel: SmsChannel) -> None:
    peer.fail_next(400, code=21617, message="The concatenated message body exceeds the limit")
    with pytest.raises(PermanentDeliveryError) as caught:
        await channel.send(make_delivery(), HELLO)
    assert not isinstance(caught.value, DeadAddress)
    assert caught.value.code == "twilio_21617"


async def test_wrong_credentials_make_the_channel_unavailable(peer: TwilioPeer) -> None:
    sms = SmsChannel(twilio_settings(peer.base_url, auth_token="wrong"), PUBLIC_URL)
    await sms.start()
    try:
        with pytest.raises(ChannelUnavailable) as caught:
            await sms.send(make_delivery(), HELLO)
    finally:
        await sms.aclose()
    assert caught.value.code == "twilio_20003"
    assert peer.requests[0].authorized is False


async def test_api_key_credentials_are_used(peer: TwilioPeer) -> None:
    settings = twilio_settings(
        peer.base_url,
        auth_token="not-used",
        api_key_sid="SK" + "1" * 32,
        api_key_secret="key-secret",
    )
    sms = SmsChannel(settings, PUBLIC_URL)
    await sms.start()
    try:
        receipt = await sms.send(make_delivery(), HELLO)
    finally:
        await sms.aclose()
    assert receipt.provider_id in peer.messages


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sms = SmsChannel(twilio_settings(f"http://127.0.0.1:{port}"), PUBLIC_URL)
    await sms.start()
    try:
        with pytest.raises(TransientDeliveryError) as caught:
            await sms.send(make_delivery(), HELLO)
    finally:
        await sms.aclose()
    assert caught.value.code == "twilio_connection"


async def test_timeout_is_transient(peer: TwilioPeer) -> None:
    peer.stall = True
    sms = SmsChannel(twilio_settings(peer.base_url, timeout=0.2), PUBLIC_URL)
    await sms.start()
    try:
        with pytest.raises(TransientDeliveryError) as caught:
            await sms.send(make_delivery(), HELLO)
    finally:
        await sms.aclose()
    assert caught.value.code == "twilio_connection"


@pytest.mark.parametrize("body", ["<html>Welcome to the guest network</html>", "[]", "{}"])
async def test_a_2xx_answer_without_a_message_sid_is_transient(peer: TwilioPeer, body: str) -> None:
    """Something between us and Twilio answered 200 without Twilio's JSON: the send is
    retried like one that got no answer (the retry asks Twilio first whether an earlier
    attempt was accepted), not failed as a bug."""
    peer.fail_next(200, body=body)
    sms = SmsChannel(twilio_settings(peer.base_url), PUBLIC_URL)
    await sms.start()
    try:
        with pytest.raises(TransientDeliveryError) as caught:
            await sms.send(make_delivery(), HELLO)
    finally:
        await sms.aclose()
    assert caught.value.code == "twilio_connection"


async def test_a_base_url_no_request_can_go_to_stops_the_start() -> None:
    sms = SmsChannel(twilio_settings("ftp://127.0.0.1:9"), PUBLIC_URL)
    with pytest.raises(ConfigError):
        await sms.start()
    with pytest.raises(ChannelUnavailable):
        await sms.send(make_delivery(), HELLO)
    await sms.aclose()


async def test_edge_and_region_environment_do_not_redirect_the_base_url(
    peer: TwilioPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    sms = SmsChannel(twilio_settings(peer.base_url), PUBLIC_URL)
    await sms.start()
    try:
        receipt = await sms.send(make_delivery(), HELLO)
    finally:
        await sms.aclose()
    assert receipt.provider_id in peer.messages


async def test_send_before_start_is_unavailable(peer: TwilioPeer) -> None:
    sms = SmsChannel(twilio_settings(peer.base_url), PUBLIC_URL)
    with pytest.raises(ChannelUnavailable):
        await sms.send(make_delivery(), HELLO)


# ------------------------------------------------------------------ senders


async def test_unit_alphanumeric_sender_is_used(peer: TwilioPeer, channel: SmsChannel) -> None:
    await channel.send(make_delivery(sms_sender="Hvalstad"), HELLO)
    assert peer.requests[0].field("From") == "Hvalstad"
    assert peer.requests[0].field("MessagingServiceSid") is None


async def test_unit_phone_sender_is_used(peer: TwilioPeer, channel: SmsChannel) -> None:
    await channel.send(make_delivery(sms_sender="+4741234567"), HELLO)
    assert peer.requests[0].field("From") == "+4741234567"


async def test_messaging_service_is_the_fallback(peer: TwilioPeer) -> None:
    sms = SmsChannel(twilio_settings(peer.base_url, messaging_service_sid=SERVICE_SID), PUBLIC_URL)
    await sms.start()
    try:
        receipt = await sms.send(make_delivery(), HELLO)
        await sms.send(make_delivery(sms_sender="Vollen"), HELLO)
    finally:
        await sms.aclose()
    first, second = peer.requests
    assert first.field("MessagingServiceSid") == SERVICE_SID
    assert first.field("From") is None
    assert peer.messages[str(receipt.provider_id)]["status"] == "accepted"
    assert second.field("From") == "Vollen"  # the unit's own sender wins


async def test_invalid_unit_sender_falls_back_to_the_default(
    peer: TwilioPeer, channel: SmsChannel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="channels.sms"):
        await channel.send(make_delivery(sms_sender="Far too long a name"), HELLO)
    assert peer.requests[0].field("From") == "Asker"
    assert "invalid unit SMS sender" in caplog.text


def test_a_fallback_sender_is_required() -> None:
    with pytest.raises(ConfigError):
        SmsChannel(twilio_settings("http://127.0.0.1:1", default_sender=None), PUBLIC_URL)
    with pytest.raises(ConfigError):
        SmsChannel(twilio_settings("http://127.0.0.1:1", default_sender="12345"), PUBLIC_URL)
    sms = SmsChannel(
        twilio_settings("http://127.0.0.1:1", default_sender=None), PUBLIC_URL, default_sender="Bud"
    )
    assert sms.sender_for(make_delivery()) == ("alphanumeric", "Bud")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Asker", ("alphanumeric", "Asker")),
        ("A", ("alphanumeric", "A")),
        ("Asker skole", ("alphanumeric", "Asker skole")),
        ("Skole 2026", ("alphanumeric", "Skole 2026")),
        ("+4791234567", ("phone", "+4791234567")),
        (SERVICE_SID, ("messaging_service", SERVICE_SID)),
    ],
)
def test_parse_sender_accepts(value: str, expected: tuple[str, str]) -> None:
    assert parse_sender(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Asker kommune",  # 13 characters
        "12345",  # no letter
        "Åsane",  # not [A-Za-z0-9 ]
        "Asker-skole",
        "+47123",  # not a valid number
        "4791234567",
    ],
)
def test_parse_sender_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_sender(value)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, 20429, TransientDeliveryError),
        (500, 500, TransientDeliveryError),
        (502, None, TransientDeliveryError),
        (401, 20003, ChannelUnavailable),
        (403, 20003, ChannelUnavailable),
        (400, 21211, DeadAddress),
        (400, 21408, DeadAddress),
        (400, 21606, PermanentDeliveryError),
        (404, 20404, PermanentDeliveryError),
    ],
)
def test_map_error(status: int, code: int | None, kind: type[Exception]) -> None:
    error = map_error(status, code)
    assert type(error) is kind


# ------------------------------------------------------- the bare POST against twilio's own


@pytest.mark.parametrize(
    ("status", "code", "body"),
    [(429, 20429, None), (400, 21211, None), (401, 20003, None), (503, None, "<html>down</html>")],
)
async def test_a_failed_create_raises_what_twilios_create_async_raises(
    peer: TwilioPeer, channel: SmsChannel, status: int, code: int | None, body: str | None
) -> None:
    """channels/twilio_form.py replaces ``messages.create_async``; twilio stays the
    reference: the same answer gives the same exception type, status, code and message,
    and both send the same form."""
    from twilio.base.exceptions import TwilioRestException

    form = {"To": GUARDIAN_PHONE, "From": "Asker", "Body": "Hei", "StatusCallback": PUBLIC_URL}
    peer.fail_next(status, code=code, message="Nope", body=body, times=2)
    with pytest.raises(TwilioRestException) as ours:
        await channel._create.create(form)  # type: ignore[union-attr]
    with pytest.raises(TwilioRestException) as theirs:
        await channel._client.messages.create_async(
            to=GUARDIAN_PHONE, from_="Asker", body="Hei", status_callback=PUBLIC_URL
        )
    mine, twilios = ours.value, theirs.value
    assert type(mine) is type(twilios)
    assert (mine.status, mine.code, mine.msg, mine.uri, mine.method) == (
        twilios.status,
        twilios.code,
        twilios.msg,
        twilios.uri,
        twilios.method,
    )
    first, second = peer.requests[-2:]
    assert first.form == second.form
    assert first.authorized and second.authorized


async def test_the_bare_post_creates_the_message_twilio_would(
    peer: TwilioPeer, channel: SmsChannel
) -> None:
    sid = await channel._create.create(  # type: ignore[union-attr]
        {"To": GUARDIAN_PHONE, "From": "Asker", "Body": "Hei på deg", "StatusCallback": PUBLIC_URL}
    )
    message = await channel._client.messages.create_async(
        to=GUARDIAN_PHONE, from_="Asker", body="Hei på deg", status_callback=PUBLIC_URL
    )
    assert sid in peer.messages and message.sid in peer.messages and sid != message.sid
    ours, theirs = peer.requests[-2:]
    assert ours.form == theirs.form
    assert {k: ours.headers[k] for k in ("User-Agent", "Accept", "Content-Type")} == {
        k: theirs.headers[k] for k in ("User-Agent", "Accept", "Content-Type")
    }


async def test_a_retry_whose_lookup_took_much_of_the_lease_sends_nothing(peer: TwilioPeer) -> None:
    """A retry first looks up whether Twilio took the earlier attempt, then creates: two
    requests of up to the timeout each. With less than a timeout of the job's lease left
    after the lookup, the create could end after another worker took the job over and
    sent the SMS too; it is not made, and the send is a transient failure to try again."""
    sms = SmsChannel(twilio_settings(peer.base_url, timeout=1.0), PUBLIC_URL)
    await sms.start()
    peer.list_delay = 0.5
    retry = make_delivery().model_copy(update={"status": DeliveryStatus.sending})
    try:
        lease_ends_in(1.4)  # as the dispatcher says for the job: 1.4 s of its lease left
        with pytest.raises(LeaseShort) as caught:
            await sms.send(retry, HELLO)
        assert caught.value.code == "lease_short"
        assert (len(peer.list_requests), peer.requests) == (1, [])  # looked up, not sent
        lease_ends_in(0.9)  # not even room for the lookup
        with pytest.raises(LeaseShort):
            await sms.send(retry, HELLO)
        assert len(peer.list_requests) == 1
        lease_ends_in(3.0)  # a fresh lease: the retry goes
        receipt = await sms.send(retry, HELLO)
        assert receipt.status is DeliveryStatus.sent
        assert len(peer.requests) == 1
    finally:
        await sms.aclose()
