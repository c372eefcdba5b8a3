"""What the SMS channel sends is a request Twilio's official OpenAPI document accepts.

Prism (``@stoplight/prism-cli``, installed by ``npm ci`` into tests/peers/node_modules
from the package-lock there) serves ``../shared/specs/twilio_api_v2010.json`` in mock
mode: it validates each request against the spec (path, Basic auth, form body) and
answers 422 to one the spec rejects, 201 with the spec's example otherwise.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from channels.sms import SmsChannel
from channels.voice import VoiceChannel
from gateway.errors import PermanentDeliveryError
from gateway.models import Delivery, DeliveryStatus, Rendered, Role
from gateway.settings import TwilioSettings, VoiceSettings
from tests.peers.npm import ensure_node_modules

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "specs" / "twilio_api_v2010.json"
PEERS = ROOT / "tests" / "peers"
PRISM = ".bin/prism"  # in tests/peers/node_modules

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
SERVICE_SID = "MG" + "fedcba9876543210" * 2
PUBLIC_URL = "https://budbringer.asker.example"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SPEC.is_file(),
        reason=f"Twilio's OpenAPI document is not at {SPEC} (no ../shared in a user's clone)",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def prism_url() -> Iterator[str]:
    prism = ensure_node_modules(PRISM)
    port = _free_port()
    process = subprocess.Popen(
        [str(prism), "mock", "-h", "127.0.0.1", "-p", str(port), str(SPEC)],
        cwd=PEERS,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output: deque[str] = deque(maxlen=50)
    # Prism prints every route it mocks, then "Prism is listening on ...".
    for line in process.stdout:
        output.append(line)
        if "is listening on" in line:
            break
    else:
        pytest.fail("prism exited before listening:\n" + "".join(output))
    # keep reading its request log so the pipe never fills up and blocks prism
    threading.Thread(target=process.stdout.read, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def delivery(**context: Any) -> Delivery:
    return Delivery(
        id="d1",
        tenant_id="t1",
        message_id="m1",
        recipient_id="g1",
        recipient_role=Role.guardian,
        channel="sms",
        address="+4791234567",
        language="nb",
        context=context,
        created_at=NOW,
        updated_at=NOW,
    )


def settings(base_url: str, **overrides: Any) -> TwilioSettings:
    values: dict[str, Any] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": "prism-does-not-check-the-token",
        "base_url": base_url,
        "default_sender": "Asker",
    }
    return TwilioSettings(**{**values, **overrides})


@pytest.fixture
async def channel(prism_url: str) -> AsyncIterator[SmsChannel]:
    sms = SmsChannel(settings(prism_url), PUBLIC_URL)
    await sms.start()
    try:
        yield sms
    finally:
        await sms.aclose()


@pytest.mark.parametrize(
    "context",
    [{}, {"sms_sender": "Solberg"}, {"sms_sender": "+4722000000"}, {"sms_sender": SERVICE_SID}],
    ids=["default", "alphanumeric", "phone", "messaging-service"],
)
async def test_our_requests_match_the_spec(channel: SmsChannel, context: dict[str, str]) -> None:
    text = "Foreldremøte tirsdag kl. 18 \u2013 velkommen! \U0001f642 " * 3  # UCS-2, 3 segments
    receipt = await channel.send(delivery(**context), Rendered(subject="s", text=text))
    assert receipt.status is DeliveryStatus.sent
    assert receipt.provider_id is not None
    assert receipt.provider_id.startswith("SM")  # the spec's example Message


async def test_short_fallback_request_matches_the_spec(channel: SmsChannel) -> None:
    rendered = Rendered(subject="s", text="a" * 2000, short="Ny melding: https://b.example/r/x")
    receipt = await channel.send(delivery(), rendered)
    assert receipt.segments == 1


async def test_the_lookup_of_an_earlier_attempt_matches_the_spec(channel: SmsChannel) -> None:
    """A retry first lists the recent messages to the number (issue 12); Prism checks that
    GET and answers the spec's example list, which holds no message with our body."""
    retried = delivery().model_copy(update={"status": DeliveryStatus.sending})
    receipt = await channel.send(retried, Rendered(subject="s", text="Ny melding i appen"))
    assert receipt.status is DeliveryStatus.sent
    assert receipt.detail is None  # sent now, not found as an earlier attempt


async def test_prism_rejects_a_request_the_spec_forbids(prism_url: str) -> None:
    url = f"{prism_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    headers = {"Authorization": "Basic QUM6dG9rZW4="}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data={"Body": "no To"}, headers=headers) as response,
    ):
        assert response.status == 422
        problem = await response.json(content_type=None)
    assert any(v["code"] == "required" for v in problem["validation"])


async def test_a_request_outside_the_spec_is_a_permanent_error(prism_url: str) -> None:
    # a status callback that is not a URI violates the spec's format: prism says 422
    sms = SmsChannel(settings(prism_url), "not a url")
    await sms.start()
    try:
        with pytest.raises(PermanentDeliveryError) as caught:
            await sms.send(delivery(), Rendered(subject="s", text="Hei"))
    finally:
        await sms.aclose()
    assert caught.value.code == "http_422"


async def test_a_voice_call_request_matches_the_spec(prism_url: str) -> None:
    """Issue 17: the Calls API request of the voice channel (To, From, Twiml, Timeout,
    StatusCallback, StatusCallbackEvent) is one Twilio's OpenAPI document accepts."""
    voice = VoiceChannel(
        settings(prism_url), VoiceSettings(enabled=True, caller_id="+4721000000"), PUBLIC_URL
    )
    await voice.start()
    call = delivery().model_copy(update={"channel": "voice"})
    content = Rendered(
        subject="s", text="Skolen er stengt.", short="Trykk 1.", language="nb", text_language="pl"
    )
    try:
        receipt = await voice.send(call, content)
    finally:
        await voice.aclose()
    assert receipt.status is DeliveryStatus.sent
    assert receipt.provider_id is not None and receipt.provider_id.startswith("CA")
