"""Read links: the token (opaque, expiring, tamper-proof) and the /r/{token} page
(GET records at most opened; the confirm POST with its CSRF field records read)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.errors import LinkExpired, LinkInvalid
from gateway.models import (
    Audience,
    Category,
    ChannelName,
    Delivery,
    DeliveryStatus,
    DirectoryBatch,
    DirectoryDeletion,
    Job,
    Message,
    Role,
)
from gateway.readlinks import (
    TOKEN_LENGTH,
    csrf_field,
    csrf_valid,
    delivery_read_token,
    make_read_token,
    open_read_token,
    read_link_maker,
)
from gateway.service import Service
from gateway.settings import Settings
from gateway.store import Store
from tests.conftest import DIRECTORY, SECRET_KEY, TenantCreds

SECRET = SECRET_KEY.encode()
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
DELIVERY_ID = "0123456789abcdef0123456789abcdef"
Client = TestClient[web.Request, web.Application]


class Seeded(NamedTuple):
    message_id: str
    email_id: str  # the delivery the link belongs to
    inapp_id: str  # the same guardian's in-app delivery of the same message


async def seed(
    store: Store,
    clock: ManualClock,
    tenant_id: str,
    *,
    language: str = "nb",
    category: Category = Category.general,
    subject: str = "Foreldremøte",
    body: str = "Velkommen tirsdag kl. 18.\nHilsen Solvang",
    event_id: str = "evt-1",
    state: DeliveryStatus = DeliveryStatus.delivered,
    recipient: tuple[str, Role] = ("p1", Role.guardian),
) -> Seeded:
    """A message to guardian p1 (DIRECTORY; or ``recipient``) by email and in-app, both
    delivered."""
    now = clock.now()
    message = Message(
        id=f"m-{event_id}",
        tenant_id=tenant_id,
        event_id=event_id,
        event_type="message.created",
        body_hash="0" * 64,
        category=category,
        subject=subject,
        body=body,
        sender_name="Rektor Hansen",
        audience=Audience(children=["c1"]),
        created_at=now,
    )
    await store.accept_message(
        message,
        Job(
            id=f"plan:{message.id}",
            tenant_id=tenant_id,
            kind="plan",
            ref=message.id,
            due_at=now + timedelta(days=365),
        ),
    )
    ids = []
    deliveries = []
    for channel in (ChannelName.email, ChannelName.inapp):
        delivery = Delivery(
            id=Delivery.make_id(tenant_id, event_id, recipient[0], channel),
            tenant_id=tenant_id,
            message_id=message.id,
            recipient_id=recipient[0],
            recipient_role=recipient[1],
            channel=channel,
            address="ola@example.no" if channel == ChannelName.email else None,
            language=language,
            child_ids=["c1"],
            context={"children": ["Kari"], "unit": "Solvang skole", "sender": "Rektor Hansen"},
            status=state,
            created_at=now,
            updated_at=now,
        )
        ids.append(delivery.id)
        deliveries.append(delivery)
    assert await store.add_deliveries(deliveries, []) == 2
    return Seeded(message.id, ids[0], ids[1])


async def status(store: Store, delivery_id: str) -> DeliveryStatus:
    delivery = await store.get_delivery(delivery_id)
    assert delivery is not None
    return delivery.status


async def statuses(store: Store, seeded: Seeded) -> dict[str, list[tuple[str, str | None]]]:
    """The full history of both deliveries: what "nothing changed" is checked against."""
    history = await store.history([seeded.email_id, seeded.inapp_id])
    return {k: [(c.status.value, c.detail) for c in v] for k, v in history.items()}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


@pytest.fixture
async def seeded(store: Store, clock: ManualClock, tenant: TenantCreds, directory: Any) -> Seeded:
    return await seed(store, clock, tenant.tenant.id)


@pytest.fixture
def token(seeded: Seeded, clock: ManualClock) -> str:
    return make_read_token(SECRET, seeded.email_id, clock.now() + timedelta(days=30))


# --------------------------------------------------------------------------- the token


def test_token_round_trip_and_shape(clock: ManualClock) -> None:
    token = make_read_token(SECRET, DELIVERY_ID, clock.now() + timedelta(days=30))
    assert len(token) == TOKEN_LENGTH == 64
    assert re.fullmatch(r"[A-Za-z0-9_-]{64}", token)
    assert open_read_token(SECRET, token, clock.now()) == DELIVERY_ID


def test_token_shows_nothing_of_the_delivery_id(clock: ManualClock) -> None:
    expires = clock.now() + timedelta(days=30)
    tokens = {make_read_token(SECRET, DELIVERY_ID, expires) for _ in range(50)}
    assert len(tokens) == 50  # a fresh nonce each time: equal ids are not even linkable
    raw = bytes.fromhex(DELIVERY_ID)
    visible = {
        DELIVERY_ID,
        DELIVERY_ID[:12],
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode()[:12],
    }
    for token in tokens:
        decoded = base64.urlsafe_b64decode(token + "==")
        assert raw[:6] not in decoded
        for text in visible:
            assert text not in token
            assert text.lower() not in token.lower()


def test_token_expires_on_the_manual_clock(clock: ManualClock) -> None:
    token = make_read_token(SECRET, DELIVERY_ID, clock.now() + timedelta(days=1))
    clock.advance(timedelta(days=1).total_seconds() - 60)
    assert open_read_token(SECRET, token, clock.now()) == DELIVERY_ID
    clock.advance(60)
    with pytest.raises(LinkExpired) as caught:
        open_read_token(SECRET, token, clock.now())
    assert isinstance(caught.value, LinkInvalid)
    assert caught.value.status == 410
    assert DELIVERY_ID not in str(caught.value)


def test_every_changed_character_is_refused(clock: ManualClock) -> None:
    token = make_read_token(SECRET, DELIVERY_ID, clock.now() + timedelta(days=30))
    for position in range(len(token)):
        replacement = "A" if token[position] != "A" else "B"
        forged = token[:position] + replacement + token[position + 1 :]
        with pytest.raises(LinkInvalid) as caught:
            open_read_token(SECRET, forged, clock.now())
        assert not isinstance(caught.value, LinkExpired)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: t + "==",
        lambda t: t[:-2] + "ø" + t[-1],
        lambda t: t[:-2] + "+/",
        lambda t: t[32:] + t[:32],
        lambda t: "",
        lambda t: "A" * 64,
        lambda t: "x" * 5000,
    ],
    ids=["short", "long", "padded", "non-ascii", "std-alphabet", "swapped", "empty", "As", "huge"],
)
def test_malformed_tokens_are_refused(clock: ManualClock, mangle: Any) -> None:
    token = make_read_token(SECRET, DELIVERY_ID, clock.now() + timedelta(days=30))
    with pytest.raises(LinkInvalid):
        open_read_token(SECRET, mangle(token), clock.now())


def test_another_secret_cannot_open_or_make_tokens(clock: ManualClock) -> None:
    expires = clock.now() + timedelta(days=30)
    with pytest.raises(LinkInvalid):
        open_read_token(
            b"another-secret", make_read_token(SECRET, DELIVERY_ID, expires), clock.now()
        )
    with pytest.raises(LinkInvalid):
        open_read_token(
            SECRET, make_read_token(b"another-secret", DELIVERY_ID, expires), clock.now()
        )


def test_only_delivery_ids_make_tokens(clock: ManualClock) -> None:
    for bad in ("d1", DELIVERY_ID[:-2], DELIVERY_ID + "00", "g" * 32):
        with pytest.raises(ValueError):
            make_read_token(SECRET, bad, clock.now() + timedelta(days=1))


def test_csrf_field_is_bound_to_the_token_and_the_secret(clock: ManualClock) -> None:
    expires = clock.now() + timedelta(days=30)
    one, two = (make_read_token(SECRET, DELIVERY_ID, expires) for _ in range(2))
    assert csrf_valid(SECRET, one, csrf_field(SECRET, one))
    assert not csrf_valid(SECRET, two, csrf_field(SECRET, one))
    assert not csrf_valid(SECRET, one, csrf_field(b"another-secret", one))
    assert not csrf_valid(SECRET, one, None)
    assert not csrf_valid(SECRET, one, "")
    assert not csrf_valid(SECRET, one, "ø" * 43)


def _delivery(clock: ManualClock, channel: str, **fields: Any) -> Delivery:
    """DELIVERY_ID to guardian p1, planned now (``fields`` override the rest)."""
    values: dict[str, Any] = {
        "id": DELIVERY_ID,
        "tenant_id": "t1",
        "message_id": "m1",
        "recipient_id": "p1",
        "recipient_role": Role.guardian,
        "channel": channel,
        "language": "nb",
        "created_at": clock.now(),
        "updated_at": clock.now(),
    }
    return Delivery(**{**values, **fields})


def test_link_maker_makes_links_that_open_to_the_delivery(clock: ManualClock) -> None:
    link_for = read_link_maker(SECRET, "https://varsel.example.no/", timedelta(days=30))
    delivery = _delivery(clock, "email")
    link = link_for(delivery)
    assert link is not None
    assert link.startswith("https://varsel.example.no/r/")
    token = link.removeprefix("https://varsel.example.no/r/")
    assert open_read_token(SECRET, token, clock.now() + timedelta(days=29)) == DELIVERY_ID
    with pytest.raises(LinkExpired):
        open_read_token(SECRET, token, clock.now() + timedelta(days=30, minutes=1))
    assert link_for(delivery.model_copy(update={"id": "not-a-delivery-id"})) is None


def test_a_delivery_token_is_the_same_every_time_and_opens(clock: ManualClock) -> None:
    expires = clock.now() + timedelta(days=30)
    token = delivery_read_token(SECRET, DELIVERY_ID, expires)
    assert delivery_read_token(SECRET, DELIVERY_ID, expires) == token
    assert len(token) == TOKEN_LENGTH
    assert open_read_token(SECRET, token, clock.now()) == DELIVERY_ID
    other = delivery_read_token(SECRET, "f" * 32, expires)
    later = delivery_read_token(SECRET, DELIVERY_ID, expires + timedelta(minutes=1))
    # another delivery or expiry: another nonce, so nothing links the tokens
    assert len({token[:16], other[:16], later[:16]}) == 3
    assert delivery_read_token(b"another-secret", DELIVERY_ID, expires) != token
    assert DELIVERY_ID not in token and DELIVERY_ID[:12] not in token


def test_every_attempt_of_a_delivery_carries_the_same_link(clock: ManualClock) -> None:
    """A retry's text equals the first attempt's, so the SMS channel can recognise a text
    Twilio took in an attempt that got no answer (channels/sms.py, _accepted_earlier)."""
    link_for = read_link_maker(SECRET, "https://varsel.example.no", timedelta(days=30))
    delivery = _delivery(clock, "sms")
    first = link_for(delivery)
    clock.advance(5 * 3600)  # the retry, hours later
    retried = delivery.model_copy(update={"updated_at": clock.now(), "attempts": 3})
    assert link_for(retried) == first
    assert first is not None
    token = first.rsplit("/", 1)[1]
    # valid for the TTL from the delivery's planning, not from the attempt
    with pytest.raises(LinkExpired):
        open_read_token(SECRET, token, delivery.created_at + timedelta(days=30))


async def test_service_renders_email_with_a_link_that_opens(
    settings: Settings, store: Store, clock: ManualClock
) -> None:
    service = Service(settings, clock=clock, store=store, channels={}, api=False, workers=False)
    delivery = _delivery(clock, "sms", address="+4790012345", language="en")
    message = Message(
        id="m1",
        tenant_id="t1",
        event_id="e1",
        event_type="message.created",
        body_hash="0",
        category=Category.general,
        subject="Trip",
        body="We go hiking.",
        audience=Audience(children=["c1"]),
        created_at=clock.now(),
    )
    out = service.renderer.render(message, delivery)
    # An SMS ends with the bare link (the SMS budget, tests/test_sms_budget.py).
    match = re.search(r"\n(\S+)/r/([A-Za-z0-9_-]+)$", out.text)
    assert match, out.text
    assert match.group(1) == settings.public_url
    assert open_read_token(SECRET, match.group(2), clock.now()) == DELIVERY_ID
    assert settings.read_link_ttl_days == 30


# --------------------------------------------------------------------------- the page


async def test_get_shows_the_message_and_records_opened_not_read(
    app_client: Client, store: Store, seeded: Seeded, token: str
) -> None:
    resp = await app_client.get(f"/r/{token}")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    assert '<html lang="nb" dir="ltr">' in html
    assert '<h1 dir="auto">Foreldremøte</h1>' in html
    assert "Velkommen tirsdag kl. 18.\nHilsen Solvang" in html
    # names keep their own direction in any page direction
    assert "Gjelder: <bdi>Kari</bdi>" in html
    assert "Fra <bdi>Rektor Hansen, Solvang skole</bdi>" in html
    assert '<form method="post"' in html
    assert "Jeg har lest meldingen</button>" in html
    assert "<script" not in html
    assert await status(store, seeded.email_id) is DeliveryStatus.opened
    assert await status(store, seeded.inapp_id) is DeliveryStatus.delivered
    history = await statuses(store, seeded)
    assert history[seeded.email_id][-1] == ("opened", "link opened")


async def test_security_headers(app_client: Client, token: str, seeded: Seeded) -> None:
    for path in (f"/r/{token}", "/r/forged"):
        resp = await app_client.get(path)
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "style-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "form-action 'self'" in csp
        assert "script-src" not in csp  # falls back to default-src 'none'
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["X-Frame-Options"] == "DENY"
    css = await app_client.get("/static/read.css")
    assert css.status == 200
    assert css.content_type == "text/css"
    assert css.headers["X-Content-Type-Options"] == "nosniff"
    assert ":focus-visible" in await css.text()


@pytest.mark.parametrize(
    ("language", "lang", "texts"),
    [
        ("nb-NO", "nb", ["Gjelder: Kari", "Jeg har lest meldingen", "Sendt 27. november 2026"]),
        ("nn", "nn", ["Gjeld: Kari", "Eg har lese meldinga", "Frå Rektor Hansen"]),
        ("en", "en", ["Concerns: Kari", "I have read the message", "Sent November 27, 2026"]),
        ("pl", "pl", ["Dotyczy: Kari", "Przeczytałem(-am) wiadomość"]),
        ("de", "nb", ["Gjelder: Kari"]),  # a language we have no texts for: Bokmål
    ],
)
async def test_page_language(
    app_client: Client,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    directory: Any,
    language: str,
    lang: str,
    texts: list[str],
) -> None:
    seeded = await seed(store, clock, tenant.tenant.id, language=language)
    token = make_read_token(SECRET, seeded.email_id, clock.now() + timedelta(days=1))
    html = await (await app_client.get(f"/r/{token}")).text()
    assert f'<html lang="{lang}" dir="ltr">' in html
    plain = html.replace("<bdi>", "").replace("</bdi>", "")
    for text in texts:
        assert text in plain


async def test_a_link_opened_with_the_direction_mark_after_it_works(
    app_client: Client, store: Store, clock: ManualClock, tenant: TenantCreds, directory: Any
) -> None:
    """An Arabic SMS wraps the link in an isolate; a phone may open it with the closing
    mark (U+2069) on the end, which made 'the link does not work'."""
    seeded = await seed(store, clock, tenant.tenant.id, language="ar")
    token = make_read_token(SECRET, seeded.email_id, clock.now() + timedelta(days=1))
    for path in (f"/r/{token}\u2069", f"/r/{token}\u200f\u2069?done=1", f"/p/{token}\u2069"):
        resp = await app_client.get(path, allow_redirects=False)
        assert resp.status == 308, path
        # relative (the token alone), as every redirect of the pages, and the query kept
        assert resp.headers["Location"] == (f"{token}?done=1" if "?" in path else token)
    resp = await app_client.get(f"/r/{token}%E2%81%A9")
    assert resp.status == 200 and "<h1" in await resp.text()
    # nothing but marks after /p/: no redirect to itself, the page's own "not found"
    resp = await app_client.get("/p/\u2069", allow_redirects=False)
    assert resp.status == 404


async def test_a_guardians_page_leads_to_their_own_pages_a_staff_members_does_not(
    app_client: Client, store: Store, clock: ManualClock, tenant: TenantCreds, directory: Any
) -> None:
    for event_id, recipient, linked in (
        ("evt-g", ("p1", Role.guardian), True),
        ("evt-s", ("t1", Role.staff), False),
    ):
        seeded = await seed(store, clock, tenant.tenant.id, event_id=event_id, recipient=recipient)
        token = make_read_token(SECRET, seeded.email_id, clock.now() + timedelta(days=1))
        html = await (await app_client.get(f"/r/{token}")).text()
        assert (f'<a href="../p/{token}">Alle meldinger' in html) is linked, recipient


async def test_staff_text_is_escaped_and_emergency_marked(
    app_client: Client, store: Store, clock: ManualClock, tenant: TenantCreds, directory: Any
) -> None:
    seeded = await seed(
        store,
        clock,
        tenant.tenant.id,
        language="en",
        category=Category.emergency,
        subject="<b>Closed</b>",
        body='<script>alert("x")</script>',
    )
    token = make_read_token(SECRET, seeded.email_id, clock.now() + timedelta(days=1))
    html = await (await app_client.get(f"/r/{token}")).text()
    assert '<h1 dir="auto">IMPORTANT: &lt;b&gt;Closed&lt;/b&gt;</h1>' in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "<script>" not in html


async def test_get_twice_is_harmless(
    app_client: Client, store: Store, seeded: Seeded, token: str
) -> None:
    for _ in range(2):
        assert (await app_client.get(f"/r/{token}")).status == 200
    history = await statuses(store, seeded)
    assert [entry for entry in history[seeded.email_id] if entry[0] == "opened"] == [
        ("opened", "link opened")
    ]


async def test_confirm_records_the_read(
    app_client: Client, store: Store, seeded: Seeded, token: str, tenant: TenantCreds
) -> None:
    html = await (await app_client.get(f"/r/{token}")).text()
    resp = await app_client.post(f"/r/{token}", data={"csrf": csrf_of(html)}, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == f"{token}?done=1"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert await status(store, seeded.email_id) is DeliveryStatus.read
    # through tracker.record_read: the read row, and the in-app delivery moves too
    assert await status(store, seeded.inapp_id) is DeliveryStatus.read
    item = await store.inbox_item(tenant.tenant.id, "p1", seeded.message_id)
    assert item is not None and item.read_at is not None
    history = await statuses(store, seeded)
    assert history[seeded.email_id][-1] == ("read", "link")
    assert history[seeded.inapp_id][-1] == ("read", "link")

    done = await (await app_client.get(f"/r/{token}?done=1")).text()
    assert "Takk! Meldingen er merket som lest." in done
    assert "<form" not in done
    again = await (await app_client.get(f"/r/{token}")).text()
    assert "Du har bekreftet at du har lest meldingen." in again
    assert await statuses(store, seeded) == history  # GET after read changes nothing


async def test_confirm_twice_is_harmless(
    app_client: Client, store: Store, seeded: Seeded, token: str
) -> None:
    field = csrf_field(SECRET, token)
    for _ in range(2):
        resp = await app_client.post(f"/r/{token}", data={"csrf": field}, allow_redirects=False)
        assert resp.status == 303
    history = await statuses(store, seeded)
    for delivery_id in (seeded.email_id, seeded.inapp_id):
        assert [entry for entry in history[delivery_id] if entry[0] == "read"] == [("read", "link")]


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        ({}, {}),
        ({"csrf": ""}, {}),
        ({"csrf": "A" * 43}, {}),
        ({"other": "x"}, {}),
        (None, {"Content-Type": "application/json"}),
        ("valid", {"Sec-Fetch-Site": "cross-site"}),
        ("other-token", {}),
    ],
    ids=["missing", "empty", "wrong", "other-field", "json", "cross-site", "other-tokens"],
)
async def test_confirm_without_the_right_csrf_field_is_refused(
    app_client: Client,
    store: Store,
    clock: ManualClock,
    seeded: Seeded,
    token: str,
    data: Any,
    headers: dict[str, str],
) -> None:
    before = await statuses(store, seeded)
    if data == "valid":
        data = {"csrf": csrf_field(SECRET, token)}
    elif data == "other-token":
        other = make_read_token(SECRET, seeded.email_id, clock.now() + timedelta(days=30))
        data = {"csrf": csrf_field(SECRET, other)}
    body: Any = '{"csrf": "x"}' if data is None else data
    resp = await app_client.post(f"/r/{token}", data=body, headers=headers, allow_redirects=False)
    assert resp.status == 403
    html = await resp.text()
    assert "Vi kunne ikke registrere bekreftelsen" in html
    assert 'lang="en"' in html
    assert await statuses(store, seeded) == before


async def test_forged_and_expired_links_get_a_friendly_page_and_change_nothing(
    app_client: Client, store: Store, clock: ManualClock, seeded: Seeded, token: str
) -> None:
    before = await statuses(store, seeded)
    forged = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    for path in (f"/r/{forged}", "/r/abc", "/r/" + "A" * 64, "/r/%00%ff"):
        for method in ("GET", "POST"):
            resp = await app_client.request(
                method, path, data={"csrf": csrf_field(SECRET, forged)}, allow_redirects=False
            )
            assert resp.status == 404, path
            html = await resp.text()
            assert resp.content_type == "text/html"
            assert "Lenken virker ikke" in html and "This link does not work" in html
            assert "Traceback" not in html
    clock.advance(timedelta(days=30).total_seconds())
    for method in ("GET", "POST"):
        resp = await app_client.request(
            method, f"/r/{token}", data={"csrf": csrf_field(SECRET, token)}, allow_redirects=False
        )
        assert resp.status == 410
        html = await resp.text()
        # a genuine link names its delivery: the page is in its language (here Bokmål)
        assert "Lenken er utløpt" in html and 'lang="nb"' in html
        assert "Den nyeste e-posten eller SMS-en" in html  # where a new link is
    assert await statuses(store, seeded) == before


async def test_an_expired_link_of_any_kind_answers_in_the_guardians_language(
    app_client: Client, store: Store, clock: ManualClock, tenant: TenantCreds, directory: Any
) -> None:
    """An Arabic-reading guardian's old link said, in Bokmål and English, "you find the
    message in the app" (read and unsubscribe links) or, for /p/, "open the link in the
    message", the very link they had opened. Now: Arabic, right to left, saying that the
    newest email or SMS has a link to all their messages."""
    arabic = await seed(store, clock, tenant.tenant.id, language="ar", event_id="evt-ar")
    token = make_read_token(SECRET, arabic.email_id, clock.now() + timedelta(days=30))
    clock.advance(timedelta(days=31).total_seconds())
    for path in (f"/r/{token}", f"/p/{token}", f"/u/{token}", f"/r/{token}/files/x"):
        resp = await app_client.get(path, allow_redirects=False)
        assert resp.status == 410, path
        html = await resp.text()
        assert 'lang="ar" dir="rtl"' in html, path
        assert "انتهت صلاحية الرابط" in html and "Lenken" not in html, path
    # a link whose delivery is gone (past the retention period): Bokmål and English
    gone = make_read_token(SECRET, "0" * 32, clock.now() - timedelta(days=1))
    resp = await app_client.get(f"/r/{gone}")
    html = await resp.text()
    assert resp.status == 410 and "Lenken er utløpt" in html and "This link has expired" in html


async def test_another_tenants_delivery_is_out_of_reach_without_the_secret(
    app_client: Client, store: Store, clock: ManualClock, seeded: Seeded
) -> None:
    other, _, _ = await create_tenant(store, "Bærum kommune", clock.now())
    await store.apply_directory(other.id, DirectoryBatch.model_validate(DIRECTORY))
    theirs = await seed(store, clock, other.id, event_id="evt-b")
    before = await statuses(store, theirs)
    expires = clock.now() + timedelta(days=30)
    for secret in (b"", b"guess", SECRET[:-1], SECRET + b"x", SECRET_KEY.upper().encode()):
        token = make_read_token(secret or b"\0", theirs.email_id, expires)
        for method in ("GET", "POST"):
            resp = await app_client.request(
                method, f"/r/{token}", data={"csrf": csrf_field(secret or b"\0", token)}
            )
            assert resp.status == 404
    assert await statuses(store, theirs) == before
    # ... and a genuine token opens exactly its own delivery, in its own tenant
    own = make_read_token(SECRET, seeded.email_id, expires)
    assert (await app_client.get(f"/r/{own}")).status == 200
    assert await status(store, seeded.email_id) is DeliveryStatus.opened
    assert await statuses(store, theirs) == before


async def test_a_removed_guardian_or_cancelled_delivery_is_gone(
    app_client: Client,
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    directory: Any,
) -> None:
    queued = await seed(
        store, clock, tenant.tenant.id, event_id="evt-q", state=DeliveryStatus.queued
    )
    assert await store.transition(queued.email_id, DeliveryStatus.cancelled, clock.now())
    cancelled = make_read_token(SECRET, queued.email_id, clock.now() + timedelta(days=1))
    resp = await app_client.get(f"/r/{cancelled}")
    assert resp.status == 410
    assert "Meldingen er ikke tilgjengelig" in await resp.text()

    fresh = await seed(store, clock, tenant.tenant.id, event_id="evt-2")
    fresh_token = make_read_token(SECRET, fresh.email_id, clock.now() + timedelta(days=1))
    assert (await app_client.get(f"/r/{fresh_token}")).status == 200
    await store.delete_directory(tenant.tenant.id, DirectoryDeletion(persons=["p1"]))
    before = await statuses(store, fresh)
    for method in ("GET", "POST"):
        resp = await app_client.request(
            method, f"/r/{fresh_token}", data={"csrf": csrf_field(SECRET, fresh_token)}
        )
        assert resp.status == 410
    assert await statuses(store, fresh) == before


async def test_a_read_on_a_delivery_the_provider_called_failed_is_still_recorded(
    app_client: Client, store: Store, clock: ManualClock, tenant: TenantCreds, directory: Any
) -> None:
    """An SMS reported undelivered that did arrive: the read counts (in-app moves to read),
    the failed delivery stays failed (forward-only), and the page says thank you."""
    seeded = await seed(store, clock, tenant.tenant.id, state=DeliveryStatus.sent)
    assert await store.transition(seeded.email_id, DeliveryStatus.undelivered, clock.now())
    token = make_read_token(SECRET, seeded.email_id, clock.now() + timedelta(days=1))
    resp = await app_client.post(
        f"/r/{token}", data={"csrf": csrf_field(SECRET, token)}, allow_redirects=False
    )
    assert resp.status == 303
    assert await status(store, seeded.email_id) is DeliveryStatus.undelivered
    assert await status(store, seeded.inapp_id) is DeliveryStatus.read
    assert "Takk!" in await (await app_client.get(f"/r/{token}?done=1")).text()
    assert "<form" in await (await app_client.get(f"/r/{token}")).text()


def test_page_problems_are_bilingual() -> None:
    """The per-language texts are in templates/locale (tests/test_locales.py)."""
    texts = tomllib.loads((TEMPLATES / "pages" / "texts.toml").read_text(encoding="utf-8"))
    for kind, problem in texts["problems"].items():
        assert set(problem) == {"nb_title", "nb_text", "en_title", "en_text"}, kind


def _reference_token(secret: bytes, delivery_id: str, minutes: int) -> str:
    """The token as the module docstring spells it, written out with the standard library
    and cryptography (the construction the links already sent were made with)."""

    def derive(label: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)

    plain = bytes.fromhex(delivery_id) + minutes.to_bytes(4, "big")
    nonce = hmac.new(
        derive(b"budbringer/read-link/synthetic-nonce/v1"), plain, hashlib.sha256
    ).digest()[:12]
    sealed = AESGCM(derive(b"budbringer/read-link/aes-256-gcm/v1")).encrypt(
        nonce, plain, b"budbringer read link v1"
    )
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")


def test_delivery_tokens_are_byte_for_byte_the_documented_construction(
    clock: ManualClock,
) -> None:
    """The minting keeps its keys between tokens; the tokens stay what every link already
    sent holds, and each one opens."""
    link_for = read_link_maker(SECRET, "https://varsel.example.no", timedelta(days=30))
    for n in range(200):
        delivery = _delivery(clock, "email", id=f"{n * 7919:032x}")
        expires = delivery.created_at + timedelta(days=30)
        minutes = int(expires.timestamp() // 60)
        expected = _reference_token(SECRET, delivery.id, minutes)
        assert delivery_read_token(SECRET, delivery.id, expires) == expected
        assert link_for(delivery) == f"https://varsel.example.no/r/{expected}"
        assert open_read_token(SECRET, expected, clock.now()) == delivery.id
        clock.advance(61)
