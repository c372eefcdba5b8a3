"""The email serialiser's bytes equal, byte for byte, those of the straightforward one it
replaced (written out below, its boundary aside), for rendered broadcasts: Bokmål,
English and Arabic, families of one to three children, protected persons, staff, personal
read links and none (channels/email.py, ``email_bytes``)."""

from __future__ import annotations

import binascii
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from channels.email import email_bytes, from_header, subject_header, unsubscribe_headers
from gateway.constants import NEUTRAL_KEY
from gateway.headertext import header_text
from gateway.models import Audience, Category, Delivery, Message, Rendered, Role
from gateway.readlinks import read_link_maker
from gateway.render import Renderer

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
URL = "https://varsel.example.no"
SENDER = "Asker kommune <varsel@asker.kommune.no>"
NOW = datetime(2026, 12, 6, 8, 15, tzinfo=UTC)
FAMILIES = (["Ola"], ["Kari", "Nora"], ["Åse", "Emil", "Zoë"], ["محمد"], ["<b>Tom</b> & Jerry"])
BOUNDARY = re.compile(rb'boundary="([^"]+)"')


def reference_email_bytes(
    delivery: Delivery, content: Rendered, sender: str, public_url: str, now: datetime
) -> bytes:
    """The serialiser as it was: every header and every line encoded per message."""
    sender_name, sender_addr = re.match(r"(.*) <(.*)>", sender).groups()  # type: ignore[union-attr]
    context_sender = delivery.context.get("sender")
    if isinstance(context_sender, str) and context_sender.strip():
        sender_name = context_sender
    assert delivery.address is not None
    headers = [
        f"From: {from_header(sender_name, sender_addr)}",
        f"To: {delivery.address.strip()}",
        f"Subject: {subject_header(content.subject)}",
        "Date: " + now.strftime("%a, %d %b %Y %H:%M:%S +0000"),
        f"Message-ID: <{delivery.id}@{sender_addr.rpartition('@')[2]}>",
    ]
    headers.extend(f"{name}: {value}" for name, value in unsubscribe_headers(content, public_url))
    headers.append("Auto-Submitted: auto-generated")
    headers.append("MIME-Version: 1.0")
    headers.append(f"Content-Language: {header_text(content.language or delivery.language)}")
    head = "\n".join(headers).replace("\r\n", "\n").encode()

    def part(content_type: str, text: str) -> bytes:
        body = text.replace("\r\n", "\n").replace("\r", "\n")
        if not body.endswith("\n"):
            body += "\n"
        encoded = binascii.b2a_qp(body.encode(), istext=True)
        return (
            f'Content-Type: {content_type}; charset="utf-8"\n'
            "Content-Transfer-Encoding: quoted-printable\n\n"
        ).encode() + encoded

    text = part("text/plain", content.text)
    if content.html is None:
        raw = head + b"\n" + text
    else:
        boundary = b"=_bbBOUNDARY"
        raw = b"".join(
            (
                head,
                b'\nContent-Type: multipart/alternative; boundary="' + boundary + b'"\n\n',
                b"--" + boundary + b"\n",
                text,
                b"\n--" + boundary + b"\n",
                part("text/html", content.html),
                b"\n--" + boundary + b"--\n",
            )
        )
    return raw.replace(b"\n", b"\r\n")


def with_reference_boundary(raw: bytes) -> bytes:
    found = BOUNDARY.search(raw)
    if found is None:
        return raw
    assert found.group(1).startswith(b"=_bb")
    return raw.replace(found.group(1), b"=_bbBOUNDARY")


def message(body: str) -> Message:
    return Message(
        id="m1",
        tenant_id="t1",
        event_id="e1",
        event_type="message.created",
        body_hash="h",
        category=Category.emergency,
        subject="Stengt skole i dag – «viktig»",
        body=body,
        read_receipt=True,
        audience=Audience(children=["c1"]),
        created_at=NOW,
    )


def delivery(n: int, language: str, children: list[str], **context: Any) -> Delivery:
    return Delivery(
        id=f"{n:032x}",
        tenant_id="t1",
        message_id="m1",
        recipient_id=f"p{n}",
        recipient_role=context.pop("role", Role.guardian),
        channel="email",
        address=f"foresatt{n}@example.no",
        language=language,
        child_ids=["c1"],
        context={
            "children": children,
            "unit": "Solvang skole",
            "sender": "Rektor Hansen",
            "category": "emergency",
            **context,
        },
        created_at=NOW,
        updated_at=NOW,
    )


BODIES = (
    "Alle skoler er stengt.\n\nHold barna hjemme.",
    "Linje med mellomrom på slutten   \n.punktum først\nFrom the start\n" + "lang " * 60,
    "=?utf-8?q?ikke_kodet?= og = tegn\r\nog CR\ralene",
)
KINDS: tuple[dict[str, Any], ...] = (
    {},
    {NEUTRAL_KEY: True, "unit": None, "sender": None},  # a protected person: no names
    {"role": Role.staff},
)


@pytest.mark.parametrize("links", [True, False])
@pytest.mark.parametrize("language", ["nb", "en", "ar"])
def test_every_email_is_byte_for_byte_the_reference(language: str, links: bool) -> None:
    link_for = read_link_maker(b"s" * 32, URL, timedelta(days=30)) if links else None
    renderer = Renderer(TEMPLATES, URL, link_for=link_for)
    n = 0
    for body in BODIES:
        msg = message(body)
        for kind in KINDS:
            for _ in range(2):  # the second round meets every shared line in the caches
                for children in FAMILIES:
                    n += 1
                    one = delivery(n, language, children, **kind)
                    content = renderer.render(msg, one)
                    direct = email_bytes(one, content, SENDER, URL, now=NOW)
                    assert direct is not None
                    raw, to, message_id = direct
                    assert to == one.address and message_id == f"<{one.id}@asker.kommune.no>"
                    expected = reference_email_bytes(one, content, SENDER, URL, NOW)
                    assert with_reference_boundary(raw) == expected


def test_text_only_is_byte_for_byte_the_reference() -> None:
    one = delivery(1, "nb", ["Ola"])
    content = Rendered(subject="Hei\nder", text="Bare tekst æøå\n", language="nb")
    direct = email_bytes(one, content, SENDER, "", now=NOW)
    assert direct is not None
    assert direct[0] == reference_email_bytes(one, content, SENDER, "", NOW)


def test_every_email_has_a_boundary_of_its_own() -> None:
    content = Rendered(subject="s", text="t", html="<p>h</p>")
    seen = set()
    for n in range(50):
        direct = email_bytes(delivery(n, "nb", ["Ola"]), content, SENDER, URL, now=NOW)
        assert direct is not None
        found = BOUNDARY.search(direct[0])
        assert found is not None
        seen.add(found.group(1))
    assert len(seen) == 50
