"""The push channel against a local FCM-like server with a real OAuth2 JWT-bearer endpoint."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from firebase_admin import exceptions as firebase_exceptions
from firebase_admin import messaging

from channels.push import FCM_SCOPE, PushChannel, map_fcm_error, parse_retry_after
from gateway.clock import ManualClock
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
from gateway.settings import FcmSettings
from tests.peers.fcm import FcmServer, ScriptedFailure, write_service_account

PROJECT = "budbringer-test"
PUBLIC_URL = "https://budbringer.example.no"
MESSAGE_ID = "5f0c8a0d2b6e4f1c9a7d3e2b1c0f9e8d"


def make_delivery(
    address: str = "fcm-token-1",
    *,
    category: str | None = "general",
    kind: str | None = None,
    delivery_id: str = "d-1",
) -> Delivery:
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    context: dict[str, Any] = {}
    if category is not None:
        context["category"] = category
    if kind is not None:
        context["address_kind"] = kind
    return Delivery(
        id=delivery_id,
        tenant_id="t1",
        message_id=MESSAGE_ID,
        recipient_id="g1",
        recipient_role=Role.guardian,
        channel="push",
        target="dev-1",
        address=address,
        language="nb",
        context=context,
        created_at=now,
        updated_at=now,
    )


CONTENT = Rendered(subject="Foreldremøte torsdag", text="Lang tekst.", short="Husk møtet kl 18.")


@pytest.fixture
async def fcm() -> AsyncIterator[FcmServer]:
    async with FcmServer(project_id=PROJECT) as server:
        yield server


@pytest.fixture
def service_account(tmp_path: Path, fcm: FcmServer) -> Path:
    path = write_service_account(tmp_path / "service-account.json", fcm.token_url, PROJECT)
    fcm.trust(path)
    return path


def fcm_settings(fcm: FcmServer, service_account: Path, **extra: Any) -> FcmSettings:
    return FcmSettings(
        service_account_file=service_account,
        base_url=fcm.url,
        token_url=fcm.token_url,
        **extra,
    )


@pytest.fixture
async def channel(
    fcm: FcmServer, service_account: Path, clock: ManualClock
) -> AsyncIterator[PushChannel]:
    push = PushChannel(fcm_settings(fcm, service_account), PUBLIC_URL, now=clock.now)
    await push.start()
    try:
        yield push
    finally:
        await push.aclose()


# ---------------------------------------------------------------------- wire format


async def test_send_posts_the_exact_v1_message(channel: PushChannel, fcm: FcmServer) -> None:
    receipt = await channel.send(make_delivery(), CONTENT)

    assert len(fcm.sent) == 1
    sent = fcm.sent[0]
    assert receipt.status is DeliveryStatus.sent
    assert receipt.provider_id == sent.name
    assert receipt.provider_id.startswith(f"projects/{PROJECT}/messages/")
    link = f"{PUBLIC_URL}/app/messages/{MESSAGE_ID}"
    assert sent.body == {
        "message": {
            "token": "fcm-token-1",
            "notification": {"title": "Foreldremøte torsdag", "body": "Husk møtet kl 18."},
            "data": {
                "message_id": MESSAGE_ID,
                "delivery_id": "d-1",
                "link": link,
                "category": "general",
            },
            "android": {
                "collapse_key": MESSAGE_ID,
                "priority": "normal",
                "notification": {
                    "channel_id": "general",
                    "tag": MESSAGE_ID,
                    "visibility": "PRIVATE",
                },
            },
            "apns": {
                "headers": {
                    "apns-push-type": "alert",
                    "apns-priority": "5",
                    "apns-collapse-id": MESSAGE_ID,
                },
                "payload": {
                    "aps": {
                        "alert": {"title": "Foreldremøte torsdag", "body": "Husk møtet kl 18."},
                        "category": "general",
                        "thread-id": MESSAGE_ID,
                    }
                },
            },
            "webpush": {"fcm_options": {"link": link}},
        }
    }
    assert sent.headers["X-GOOG-API-FORMAT-VERSION"] == "2"
    assert sent.headers["X-FIREBASE-CLIENT"].startswith("fire-admin-python/")
    assert sent.headers["User-Agent"].startswith("Budbringer/")


async def test_wire_format_is_what_firebase_admin_encodes(channel: PushChannel) -> None:
    delivery = make_delivery(category="emergency")
    message = channel.build(delivery, CONTENT)
    # str(Message) is firebase-admin's public JSON rendering of the same encoder.
    assert channel.encode(delivery, CONTENT) == json.loads(str(message))


@pytest.mark.parametrize("category", ["general", "emergency"])
@pytest.mark.parametrize("kind", [None, "fid"])
async def test_request_body_is_firebase_admins_encoding_byte_for_byte(
    channel: PushChannel, clock: ManualClock, category: str, kind: str | None
) -> None:
    # The skeleton is made from the first push; the others put their own values in it.
    contents = [
        CONTENT,
        Rendered(subject='Stengt "i dag" \\ </script>', text="Hjem\n\u2028nå 😀", short=None),
        Rendered(subject="", text="", short="Kort " * 300),
    ]
    for n, content in enumerate(contents):
        delivery = make_delivery(
            f"token-{n}-\u00e6", category=category, kind=kind, delivery_id=f"d-{n}"
        )
        expected = json.dumps({"message": channel.encode(delivery, content)}).encode()
        assert channel.request_body(delivery, content) == expected
        clock.advance(61)  # the APNs expiry moves with the clock


@pytest.mark.parametrize("category", ["absence", "emergency"])
async def test_urgent_categories_are_high_priority_with_short_ttl(
    channel: PushChannel, fcm: FcmServer, clock: ManualClock, category: str
) -> None:
    await channel.send(make_delivery(category=category), CONTENT)

    message = fcm.sent[0].body["message"]
    assert message["android"]["priority"] == "high"
    assert message["android"]["ttl"] == "900s"
    assert message["android"]["notification"]["default_sound"] is True
    headers = message["apns"]["headers"]
    assert headers["apns-priority"] == "10"
    assert headers["apns-expiration"] == str(int(clock.now().timestamp()) + 900)
    aps = message["apns"]["payload"]["aps"]
    assert aps["sound"] == "default"
    assert aps["interruption-level"] == "time-sensitive"
    assert message["data"]["category"] == category


async def test_normal_category_has_no_ttl_and_no_sound(
    channel: PushChannel, fcm: FcmServer
) -> None:
    await channel.send(make_delivery(category=None), CONTENT)

    message = fcm.sent[0].body["message"]
    assert message["data"]["category"] == "general"
    assert "ttl" not in message["android"]
    assert "apns-expiration" not in message["apns"]["headers"]
    assert "sound" not in message["apns"]["payload"]["aps"]


async def test_firebase_installation_id_is_sent_as_fid(
    channel: PushChannel, fcm: FcmServer
) -> None:
    await channel.send(make_delivery("fid-abc", kind="fid"), CONTENT)

    message = fcm.sent[0].body["message"]
    assert message["fid"] == "fid-abc"
    assert "token" not in message


async def test_body_falls_back_to_a_shortened_text(channel: PushChannel, fcm: FcmServer) -> None:
    text = "Hei! " + "Dette er en lang melding om turdagen neste uke. " * 20
    await channel.send(make_delivery(), Rendered(subject="Tur", text=text))

    body = fcm.sent[0].body["message"]["notification"]["body"]
    assert body.startswith("Hei! Dette er en lang melding")
    assert body.endswith("…")
    assert len(body) <= 240


# ---------------------------------------------------------------------- access tokens


async def test_one_token_serves_many_sends(channel: PushChannel, fcm: FcmServer) -> None:
    deliveries = [make_delivery(f"tok-{i}", delivery_id=f"d-{i}") for i in range(50)]
    await asyncio.gather(*(channel.send(d, CONTENT) for d in deliveries))

    assert len(fcm.sent) == 50
    assert fcm.token_requests == 1
    assert len({s.access_token for s in fcm.sent}) == 1
    assert fcm.granted_scopes == [FCM_SCOPE]


async def test_slow_token_endpoint_does_not_stall_the_loop(
    fcm: FcmServer, service_account: Path
) -> None:
    fcm.token_delay = 1.0
    gaps: list[float] = []

    async def ticker(done: asyncio.Event) -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    push = PushChannel(fcm_settings(fcm, service_account), PUBLIC_URL)
    done = asyncio.Event()
    ticking = asyncio.create_task(ticker(done))
    try:
        await push.start()  # the server answering on this same loop proves it kept running
    finally:
        done.set()
        await ticking
        await push.aclose()

    assert fcm.token_requests == 1
    assert sum(gaps) >= 1.0  # the refresh really took the endpoint's second
    assert len(gaps) >= 3  # the loop kept ticking during the refresh ...
    assert max(gaps) < fcm.token_delay  # ... and no tick waited for the whole refresh


async def test_refresh_ahead_of_expiry_happens_in_the_background(
    channel: PushChannel, fcm: FcmServer, clock: ManualClock
) -> None:
    first = (await channel.send(make_delivery(), CONTENT)) and fcm.sent[-1].access_token
    clock.advance(3600 - 240)  # inside the 5-minute refresh window, token still valid
    fcm.token_gate = asyncio.Event()  # hold the token endpoint
    fcm.token_waiting.clear()

    await asyncio.wait_for(channel.send(make_delivery(delivery_id="d-2"), CONTENT), 5)

    # the send went out with the old token while the refresh is still held
    await asyncio.wait_for(fcm.token_waiting.wait(), 5)
    assert fcm.token_requests == 2
    assert fcm.sent[-1].access_token == first

    fcm.token_gate.set()
    clock.advance(220)  # now too close to expiry: the next send waits for the new token
    await asyncio.wait_for(channel.send(make_delivery(delivery_id="d-3"), CONTENT), 5)
    assert fcm.sent[-1].access_token != first
    assert fcm.token_requests == 2  # it joined the background refresh instead of a third


async def test_expired_token_is_fetched_before_sending(
    channel: PushChannel, fcm: FcmServer, clock: ManualClock
) -> None:
    await channel.send(make_delivery(), CONTENT)
    clock.advance(3600)

    await channel.send(make_delivery(delivery_id="d-2"), CONTENT)

    assert fcm.token_requests == 2
    assert fcm.sent[0].access_token != fcm.sent[1].access_token


async def test_token_uri_comes_from_the_service_account_file(
    fcm: FcmServer, service_account: Path
) -> None:
    settings = FcmSettings(service_account_file=service_account, base_url=fcm.url)
    push = PushChannel(settings, PUBLIC_URL)
    await push.start()
    try:
        await push.send(make_delivery(), CONTENT)
    finally:
        await push.aclose()
    assert fcm.token_requests == 1
    assert len(fcm.sent) == 1


async def test_untrusted_service_account_stops_the_channel_at_start(
    tmp_path: Path, fcm: FcmServer
) -> None:
    stranger = write_service_account(tmp_path / "stranger.json", fcm.token_url, PROJECT)
    push = PushChannel(fcm_settings(fcm, stranger), PUBLIC_URL)
    try:
        with pytest.raises(ChannelUnavailable) as caught:
            await push.start()
    finally:
        await push.aclose()
    assert caught.value.code == "fcm_token_rejected"
    assert fcm.token_rejections == ["Invalid grant: account not found"]


async def test_a_base_url_no_request_can_go_to_stops_the_start(
    fcm: FcmServer, service_account: Path
) -> None:
    push = PushChannel(
        FcmSettings(service_account_file=service_account, base_url="ftp://127.0.0.1:9"),
        PUBLIC_URL,
    )
    try:
        with pytest.raises(ConfigError):
            await push.start()
    finally:
        await push.aclose()


async def test_send_before_start_is_channel_unavailable(
    fcm: FcmServer, service_account: Path
) -> None:
    push = PushChannel(fcm_settings(fcm, service_account), PUBLIC_URL)
    with pytest.raises(ChannelUnavailable):
        await push.send(make_delivery(), CONTENT)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fcm_code", "firebase_type"),
    [
        ("UNREGISTERED", messaging.UnregisteredError),
        ("SENDER_ID_MISMATCH", messaging.SenderIdMismatchError),
        ("INVALID_ARGUMENT", firebase_exceptions.InvalidArgumentError),
    ],
)
async def test_dead_token_is_a_dead_address(
    channel: PushChannel, fcm: FcmServer, fcm_code: str, firebase_type: type[Exception]
) -> None:
    address = "dead-token-0123456789"
    fcm.dead[address] = fcm_code

    with pytest.raises(DeadAddress) as caught:
        await channel.send(make_delivery(address), CONTENT)

    assert caught.value.code == f"fcm_{fcm_code}"
    assert isinstance(caught.value.__cause__, firebase_type)
    assert address not in str(caught.value)
    assert fcm.sent == []


async def test_quota_exceeded_is_transient_with_retry_after(
    channel: PushChannel, fcm: FcmServer
) -> None:
    fcm.failures.append(ScriptedFailure("QUOTA_EXCEEDED", retry_after="17"))

    with pytest.raises(TransientDeliveryError) as caught:
        await channel.send(make_delivery(), CONTENT)

    assert caught.value.code == "fcm_QUOTA_EXCEEDED"
    assert caught.value.retry_after == 17.0
    assert isinstance(caught.value.__cause__, messaging.QuotaExceededError)


@pytest.mark.parametrize("fcm_code", ["UNAVAILABLE", "INTERNAL"])
async def test_server_errors_are_transient_and_the_next_try_works(
    channel: PushChannel, fcm: FcmServer, fcm_code: str
) -> None:
    fcm.failures.append(ScriptedFailure(fcm_code))

    with pytest.raises(TransientDeliveryError) as caught:
        await channel.send(make_delivery(), CONTENT)
    assert caught.value.code == f"fcm_{fcm_code}"
    assert caught.value.retry_after is None

    receipt = await channel.send(make_delivery(), CONTENT)
    assert receipt.provider_id == fcm.sent[0].name


async def test_refused_access_token_is_renewed_once_then_channel_unavailable(
    channel: PushChannel, fcm: FcmServer
) -> None:
    fcm.reject_all_tokens = True

    with pytest.raises(ChannelUnavailable) as caught:
        await channel.send(make_delivery(), CONTENT)

    assert caught.value.code == "fcm_UNAUTHENTICATED"
    assert fcm.token_requests == 2  # start-up, then one renewal after the first 401


async def test_third_party_auth_error_stops_the_channel(
    channel: PushChannel, fcm: FcmServer
) -> None:
    fcm.failures.append(ScriptedFailure("THIRD_PARTY_AUTH_ERROR"))

    with pytest.raises(ChannelUnavailable) as caught:
        await channel.send(make_delivery(), CONTENT)

    assert caught.value.code == "fcm_THIRD_PARTY_AUTH_ERROR"
    assert fcm.token_requests == 1  # not our token's fault: no renewal


def test_other_invalid_argument_is_permanent_not_dead() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "Invalid value at 'message.android.ttl' (type.googleapis.com/"
            "google.protobuf.Duration), Field 'ttl', Illegal duration format",
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "message.android.ttl"}],
                }
            ],
        }
    }
    error = map_fcm_error(400, json.dumps(body).encode())
    assert type(error) is PermanentDeliveryError
    assert error.code == "fcm_INVALID_ARGUMENT"


def test_unparseable_error_body_falls_back_to_the_http_status() -> None:
    assert isinstance(map_fcm_error(502, b"<html>Bad Gateway</html>"), TransientDeliveryError)
    assert type(map_fcm_error(413, b"too large")) is PermanentDeliveryError


def test_retry_after_as_http_date() -> None:
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert parse_retry_after("Fri, 27 Nov 2026 09:00:30 GMT", now) == 30.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("soon") is None


# ---------------------------------------------------------------------- the transport
# FCM's messages:send on a frontend of its own (the token still comes from the peer):
# how the answer comes, or does not, is what these tests vary.


@asynccontextmanager
async def frontend(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/projects/{project}/messages:send", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def send_through(
    url: str, fcm: FcmServer, service_account: Path, **settings: Any
) -> tuple[str | None, DeliveryStatus]:
    push = PushChannel(
        FcmSettings(
            service_account_file=service_account, base_url=url, token_url=fcm.token_url, **settings
        ),
        PUBLIC_URL,
    )
    await push.start()
    try:
        receipt = await push.send(make_delivery(), CONTENT)
    finally:
        await push.aclose()
    return receipt.provider_id, receipt.status


async def test_a_chunked_answer_as_googles_frontends_send_it(
    fcm: FcmServer, service_account: Path
) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{\n  "name": ')
        await response.write(b'"projects/budbringer-test/messages/0:1"\n}\n')
        await response.write_eof()
        return response

    async with frontend(chunked) as url:
        provider_id, status = await send_through(url, fcm, service_account)
    assert (provider_id, status) == ("projects/budbringer-test/messages/0:1", DeliveryStatus.sent)


async def test_no_answer_in_time_is_transient_and_sent_once(
    fcm: FcmServer, service_account: Path
) -> None:
    seen: list[bytes] = []

    async def stall(request: web.Request) -> web.StreamResponse:
        seen.append(await request.read())
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    async with frontend(stall) as url:
        with pytest.raises(TransientDeliveryError) as caught:
            await send_through(url, fcm, service_account, timeout=0.3)
    assert caught.value.code == "fcm_transport"
    assert len(seen) == 1  # never sent again on its own


async def test_a_connection_cut_before_the_answer_is_transient(
    fcm: FcmServer, service_account: Path
) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        await request.read()
        assert request.transport is not None
        request.transport.close()
        raise web.HTTPInternalServerError()

    async with frontend(cut) as url:
        with pytest.raises(TransientDeliveryError) as caught:
            await send_through(url, fcm, service_account)
    assert caught.value.code == "fcm_transport"


async def test_a_refused_connection_is_transient(fcm: FcmServer, service_account: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens on it
    with pytest.raises(TransientDeliveryError) as caught:
        await send_through(f"http://127.0.0.1:{port}", fcm, service_account)
    assert caught.value.code == "fcm_transport"


# ---------------------------------------------------------------------- the peer itself


async def test_peer_rejects_what_fcm_would_reject(channel: PushChannel, fcm: FcmServer) -> None:
    await channel.send(make_delivery(), CONTENT)
    token = fcm.sent[0].access_token
    url = f"{fcm.url}/v1/projects/{PROJECT}/messages:send"
    bad = {"message": {"token": "t", "data": {"n": 1}}}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=bad, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        body = await response.json()
    assert response.status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert fcm.rejected[0]["body"] == bad


async def test_a_push_whose_token_fetch_took_much_of_the_lease_is_not_posted(
    fcm: FcmServer, service_account: Path, clock: ManualClock
) -> None:
    """A send whose access token has to be fetched first makes two requests. With less
    than a timeout of the job's lease left once the token came, the push could reach
    FCM after another worker took the job over and sent it too: it is not posted, and
    the send is a transient failure to try again (the token is kept for it)."""
    push = PushChannel(fcm_settings(fcm, service_account, timeout=1.0), PUBLIC_URL, now=clock.now)
    await push.start()
    try:
        clock.advance(3600)  # the token has expired: the next send fetches one first
        fcm.token_delay = 0.5
        lease_ends_in(1.3)  # as the dispatcher says for the job
        with pytest.raises(LeaseShort) as caught:
            await push.send(make_delivery(), CONTENT)
        assert caught.value.code == "lease_short"
        assert (fcm.token_requests, fcm.sent) == (2, [])
        lease_ends_in(3.0)  # a fresh lease: the push goes with the token fetched before
        await push.send(make_delivery(), CONTENT)
        assert (fcm.token_requests, len(fcm.sent)) == (2, 1)
    finally:
        await push.aclose()
