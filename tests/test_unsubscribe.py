"""One-click unsubscribe (RFC 8058): the personal List-Unsubscribe link of every email,
``POST /u/{token}`` with ``List-Unsubscribe=One-Click`` and the confirm page behind
``GET /u/{token}``, through the real app and store."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from channels.email import build_email
from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.demo import DemoClient
from gateway.models import (
    FINAL,
    Audience,
    Category,
    ChannelName,
    Delivery,
    DeliveryStatus,
    DirectoryBatch,
    DirectoryDeletion,
    Job,
    Message,
    Preferences,
    Role,
)
from gateway.planner import route
from gateway.readlinks import make_read_token, open_read_token
from gateway.render import Renderer
from gateway.service import TEMPLATES_DIR, Service
from gateway.settings import Settings, load_settings
from gateway.store import Store
from tests.conftest import DIRECTORY, SECRET_KEY, TenantCreds
from tests.peers.smtp import SmtpPeer

SECRET = SECRET_KEY.encode()
URL = "https://varsel.asker.kommune.no"  # long enough to need more than 78 characters
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
Client = TestClient[web.Request, web.Application]


class Seeded(NamedTuple):
    tenant_id: str
    email_id: str
    sms_id: str


async def seed(
    store: Store,
    clock: ManualClock,
    tenant_id: str,
    *,
    category: Category = Category.general,
    language: str = "nb",
    event_id: str = "evt-1",
) -> Seeded:
    """A message to guardian p1 (DIRECTORY: email and phone, no app) by email and SMS."""
    now = clock.now()
    message = Message(
        id=f"m-{event_id}",
        tenant_id=tenant_id,
        event_id=event_id,
        event_type="message.created",
        body_hash="0" * 64,
        category=category,
        subject="Foreldremøte",
        body="Velkommen tirsdag kl. 18.",
        audience=Audience(children=["c1"]),
        created_at=now,
    )
    await store.accept_message(
        message,
        Job(id=f"plan:{message.id}", tenant_id=tenant_id, kind="plan", ref=message.id, due_at=now),
    )
    deliveries = [
        Delivery(
            id=Delivery.make_id(tenant_id, event_id, "p1", channel),
            tenant_id=tenant_id,
            message_id=message.id,
            recipient_id="p1",
            recipient_role=Role.guardian,
            channel=channel,
            address=address,
            language=language,
            child_ids=["c1"],
            status=DeliveryStatus.delivered,
            created_at=now,
            updated_at=now,
        )
        for channel, address in (("email", "ola@example.no"), ("sms", "+4790012345"))
    ]
    await store.add_deliveries(deliveries, [])
    return Seeded(tenant_id, deliveries[0].id, deliveries[1].id)


def token_for(delivery_id: str, clock: ManualClock, days: int = 30) -> str:
    return make_read_token(SECRET, delivery_id, clock.now() + timedelta(days=days))


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


@pytest.fixture
async def seeded(store: Store, clock: ManualClock, tenant: TenantCreds, directory: Any) -> Seeded:
    return await seed(store, clock, tenant.tenant.id)


@pytest.fixture
def token(seeded: Seeded, clock: ManualClock) -> str:
    return token_for(seeded.email_id, clock)


async def prefs_of(store: Store, seeded: Seeded) -> Preferences | None:
    return await store.get_preferences(seeded.tenant_id, "p1")


async def email_routes(store: Store, seeded: Seeded, category: Category) -> list[ChannelName]:
    """The channels the planner picks for p1 now."""
    person = await store.get_person(seeded.tenant_id, "p1")
    assert person is not None
    prefs = await prefs_of(store, seeded)
    devices = await store.list_devices(seeded.tenant_id, "p1")
    return [r.channel for r in route(person, prefs, devices, category)]


# --------------------------------------------------------------------------- the header


def test_the_renderer_puts_the_read_links_token_under_u(clock: ManualClock) -> None:
    maker_calls: list[str] = []

    def link_for(delivery: Delivery) -> str:
        token = token_for(delivery.id, clock)
        maker_calls.append(token)
        return f"{URL}/r/{token}"

    renderer = Renderer(TEMPLATES_DIR, URL, link_for=link_for)
    message = Message(
        id="m1",
        tenant_id="t1",
        event_id="e1",
        event_type="message.created",
        body_hash="0",
        category=Category.general,
        subject="Tur",
        body="Vi går på tur.",
        audience=Audience(children=["c1"]),
        created_at=clock.now(),
    )
    email = Delivery(
        id="0123456789abcdef0123456789abcdef",
        tenant_id="t1",
        message_id="m1",
        recipient_id="p1",
        recipient_role=Role.guardian,
        channel="email",
        address="ola@example.no",
        language="nb",
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    content = renderer.render(message, email)
    [token] = maker_calls  # one token per email: the body's read link and the header agree
    assert content.unsubscribe_url == f"{URL}/u/{token}"
    assert f"/r/{token}" in content.text
    built = build_email(email, content, "varsel@example.no", URL)
    assert built["List-Unsubscribe"] == f"<{URL}/u/{token}>"
    assert built["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # one line, never RFC 2047 encoded (mail clients read the URL as is)
    assert f"\r\nList-Unsubscribe: <{URL}/u/{token}>\r\n" in built.as_string()
    # other channels carry no unsubscribe link
    sms = email.model_copy(update={"channel": "sms", "address": "+4790012345"})
    assert renderer.render(message, sms).unsubscribe_url is None


def test_without_read_links_no_one_click_is_promised(settings: Settings) -> None:
    renderer = Renderer(TEMPLATES_DIR, settings.public_url)
    message = Message(
        id="m1",
        tenant_id="t1",
        event_id="e1",
        event_type="message.created",
        body_hash="0",
        category=Category.general,
        subject="Tur",
        body="Vi går på tur.",
        audience=Audience(children=["c1"]),
        created_at=ManualClock().now(),
    )
    email = Delivery(
        id="0123456789abcdef0123456789abcdef",
        tenant_id="t1",
        message_id="m1",
        recipient_id="p1",
        recipient_role=Role.guardian,
        channel="email",
        address="ola@example.no",
        language="nb",
        created_at=message.created_at,
        updated_at=message.created_at,
    )
    content = renderer.render(message, email)
    assert content.unsubscribe_url is None
    built = build_email(email, content, "varsel@example.no", settings.public_url)
    assert built["List-Unsubscribe"] == f"<{settings.public_url}/preferences>"
    assert built["List-Unsubscribe-Post"] is None


# --------------------------------------------------------------------------- one click


async def test_one_click_stops_email_for_the_category_and_keeps_the_rest(
    app_client: Client, store: Store, seeded: Seeded, token: str
) -> None:
    assert ChannelName.email in await email_routes(store, seeded, Category.general)
    resp = await app_client.post(f"/u/{token}", data=ONE_CLICK)
    assert resp.status == 200
    html = await resp.text()
    assert '<html lang="nb" dir="ltr">' in html
    assert "Du er meldt av" in html
    assert "meldinger på e-post" in html
    assert resp.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    # p1 has a phone and no app: the default (in-app, SMS, email) less email
    prefs = await prefs_of(store, seeded)
    assert prefs == Preferences(channels={Category.general: [ChannelName.inapp, ChannelName.sms]})
    assert await email_routes(store, seeded, Category.general) == [
        ChannelName.inapp,
        ChannelName.sms,
    ]
    # other categories are untouched
    assert ChannelName.email in await email_routes(store, seeded, Category.reminder)
    # a second click changes nothing more
    again = await app_client.post(f"/u/{token}", data=ONE_CLICK)
    assert again.status == 200
    assert await prefs_of(store, seeded) == prefs


async def test_one_click_keeps_the_guardians_other_choices_and_survives_imports(
    app_client: Client, store: Store, seeded: Seeded, token: str
) -> None:
    chosen = Preferences(
        language="nn",
        channels={
            Category.general: [ChannelName.email, ChannelName.push],
            Category.reminder: [ChannelName.email],
        },
        quiet_start="21:00",
        quiet_end="07:00",
    )
    await store.set_preferences(seeded.tenant_id, "p1", chosen)
    resp = await app_client.post(
        f"/u/{token}",
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 200
    expected = chosen.model_copy(
        update={
            "channels": {
                Category.general: [ChannelName.push],
                Category.reminder: [ChannelName.email],
            }
        }
    )
    assert await prefs_of(store, seeded) == expected
    # stored as the guardian's own choice: a re-import with preferences does not undo it
    batch = DirectoryBatch.model_validate(
        {**DIRECTORY, "preferences": {"p1": {"channels": {"general": ["email"]}}}}
    )
    await store.apply_directory(seeded.tenant_id, batch)
    assert await prefs_of(store, seeded) == expected


async def test_a_multipart_one_click_post_works_too(
    app_client: Client, store: Store, seeded: Seeded, token: str
) -> None:
    with aiohttp.MultipartWriter("form-data") as body:
        part = body.append("One-Click")
        part.set_content_disposition("form-data", name="List-Unsubscribe")
    resp = await app_client.post(f"/u/{token}", data=body)
    assert resp.status == 200
    prefs = await prefs_of(store, seeded)
    assert prefs is not None and prefs.channels[Category.general] == [
        ChannelName.inapp,
        ChannelName.sms,
    ]


@pytest.mark.parametrize("category", [Category.absence, Category.emergency])
@pytest.mark.parametrize(
    ("language", "words"),
    [("nb", "kan ikke slås av"), ("nn", "kan ikkje slåast av"), ("en", "cannot be switched off")],
)
async def test_absence_and_emergency_cannot_be_switched_off_by_email(
    app_client: Client,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    directory: Any,
    category: Category,
    language: str,
    words: str,
) -> None:
    seeded = await seed(store, clock, tenant.tenant.id, category=category, language=language)
    token = token_for(seeded.email_id, clock)
    page = await app_client.get(f"/u/{token}")
    assert page.status == 200
    assert words in await page.text()
    assert "<form" not in await page.text()
    resp = await app_client.post(f"/u/{token}", data=ONE_CLICK)
    assert resp.status == 200
    html = await resp.text()
    assert f'<html lang="{language}" dir="ltr">' in html
    assert words in html
    assert await prefs_of(store, seeded) is None
    assert ChannelName.email in await email_routes(store, seeded, Category.reminder)


# --------------------------------------------------------------------------- the page


@pytest.mark.parametrize(
    ("language", "question", "button"),
    [
        ("nb", "Vil du slutte å få meldinger på e-post?", "Meld meg av e-post"),
        ("nn", "Vil du slutte å få meldingar på e-post?", "Meld meg av e-post"),
        ("en", "Do you want to stop getting messages by email?", "Unsubscribe from email"),
    ],
)
async def test_get_asks_first_and_changes_nothing(
    app_client: Client,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    directory: Any,
    language: str,
    question: str,
    button: str,
) -> None:
    seeded = await seed(store, clock, tenant.tenant.id, language=language)
    token = token_for(seeded.email_id, clock)
    resp = await app_client.get(f"/u/{token}")
    assert resp.status == 200
    html = await resp.text()
    assert f'<html lang="{language}" dir="ltr">' in html
    assert question in html
    assert f">{button}</button>" in html
    assert f'<form method="post" action="{token}">' in html
    assert 'href="../static/read.css"' in html
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert await prefs_of(store, seeded) is None


async def test_the_pages_form_unsubscribes_with_its_csrf_field(
    app_client: Client, store: Store, seeded: Seeded, token: str
) -> None:
    csrf = csrf_of(await (await app_client.get(f"/u/{token}")).text())
    resp = await app_client.post(f"/u/{token}", data={"csrf": csrf})
    assert resp.status == 200
    assert "Du er meldt av" in await resp.text()
    assert await email_routes(store, seeded, Category.general) == [
        ChannelName.inapp,
        ChannelName.sms,
    ]
    # from then on the page says so instead of asking
    html = await (await app_client.get(f"/u/{token}")).text()
    assert "Du får ikke lenger meldinger på e-post" in html
    assert "<form" not in html


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        ({}, {}),
        ({"List-Unsubscribe": "Yes"}, {}),
        ({"csrf": "forged"}, {}),
        ("csrf", {"Sec-Fetch-Site": "cross-site"}),  # the right field, but from another site
    ],
)
async def test_a_post_without_one_click_or_csrf_changes_nothing(
    app_client: Client,
    store: Store,
    seeded: Seeded,
    token: str,
    data: Any,
    headers: dict[str, str],
) -> None:
    if data == "csrf":
        data = {"csrf": csrf_of(await (await app_client.get(f"/u/{token}")).text())}
    resp = await app_client.post(f"/u/{token}", data=data, headers=headers)
    assert resp.status == 403
    assert "Vi kunne ikke registrere avmeldingen" in await resp.text()
    assert await prefs_of(store, seeded) is None


async def test_forged_expired_and_foreign_tokens_get_a_friendly_page(
    app_client: Client, store: Store, clock: ManualClock, seeded: Seeded, token: str
) -> None:
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    short = token_for(seeded.email_id, clock, days=1)
    sms = token_for(seeded.sms_id, clock)  # a read link from the SMS: not an email's link
    clock.advance(timedelta(days=2).total_seconds())
    for bad, status, words in (
        (forged, 404, "Lenken virker ikke"),
        ("not-a-token", 404, "Lenken virker ikke"),
        (short, 410, "Lenken er utløpt"),
        (sms, 404, "Lenken virker ikke"),
    ):
        for method in ("GET", "POST"):
            resp = await app_client.request(method, f"/u/{bad}", data=ONE_CLICK)
            assert resp.status == status, (bad, method)
            html = await resp.text()
            assert words in html and "<form" not in html
            assert resp.headers["Content-Type"].startswith("text/html")
    assert await prefs_of(store, seeded) is None
    assert open_read_token(SECRET, token, clock.now()) == seeded.email_id  # still good


async def test_a_recipient_removed_from_the_directory_gets_the_gone_page(
    app_client: Client, store: Store, seeded: Seeded, token: str
) -> None:
    await store.delete_directory(seeded.tenant_id, DirectoryDeletion(persons=["p1"]))
    resp = await app_client.post(f"/u/{token}", data=ONE_CLICK)
    assert resp.status == 410
    assert "Vi fant ikke meldingen" in await resp.text()
    assert await prefs_of(store, seeded) is None


# --------------------------------------------------------------------------- end to end


async def wait_final(client: DemoClient, message_id: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = await client.call("GET", f"/v1/messages/{message_id}")
        deliveries = status["deliveries"]
        if status["planned_at"] and deliveries and all(d["status"] in FINAL for d in deliveries):
            return status
        assert time.monotonic() < deadline, f"not final in time: {status['counts']}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Service, SmtpPeer, DemoClient]]:
    async with SmtpPeer() as smtp:
        settings = load_settings(
            store_url=f"sqlite:///{tmp_path / 'budbringer.db'}",
            outbox_dir=tmp_path / "outbox",
            port=0,
            public_url="https://varsel.asker.kommune.no",
            secret_key=SECRET_KEY,
            smtp={"host": smtp.host, "port": smtp.port, "tls": "none", "sender": "v@asker.no"},
            dispatch={"poll_interval": 0.05},
        )
        service = Service(settings)
        await service.start()
        try:
            tenant, api_key, whsec = await create_tenant(
                service.store, "Asker kommune", service.clock.now()
            )
            client = DemoClient(f"http://127.0.0.1:{service.port}", api_key, whsec, tenant.id)
            try:
                await client.call("POST", "/v1/directory", DIRECTORY)
                yield service, smtp, client
            finally:
                await client.close()
        finally:
            await service.stop()


async def test_the_header_of_a_sent_email_unsubscribes_its_recipient(
    gateway: tuple[Service, SmtpPeer, DemoClient],
) -> None:
    service, smtp, client = gateway

    async def send(event_id: str) -> dict[str, list[str]]:
        accepted = await client.post_signed_event(
            {
                "id": event_id,
                "type": "message.created",
                "data": {"audience": {"groups": ["g1"]}, "subject": "Tur", "body": "Vi går."},
            }
        )
        status = await wait_final(client, accepted["message_id"])
        channels: dict[str, list[str]] = {}
        for d in status["deliveries"]:
            channels.setdefault(d["status"], []).append(d["channel"])
        return channels

    await send("evt-1")
    [received] = smtp.received
    header = received.message["List-Unsubscribe"]
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(r"<https://varsel\.asker\.kommune\.no(/u/[A-Za-z0-9_-]{64})>", header)
    assert match, header
    # what a mail provider does when the guardian presses its unsubscribe button
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{service.port}{match.group(1)}"
        async with session.post(url, data=ONE_CLICK, allow_redirects=False) as resp:
            assert resp.status == 200

    second = await send("evt-2")
    assert len(smtp.received) == 1  # no second email
    channels = [channel for by_status in second.values() for channel in by_status]
    assert "email" not in channels
    assert "sms" in channels  # still told, by SMS
