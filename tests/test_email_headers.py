"""Hostile subjects and names never become header structure (issue 11).

Every case goes through the email channel to a real SMTP server (aiosmtpd), on both
serialisations (the direct bytes of a plain address, build_email for a quoted local
part), and what arrives is parsed: the same headers once each, no Bcc/Cc/Reply-To,
From is one mailbox with our address, the name and subject read as text.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from channels.email import EmailChannel, build_email, email_bytes
from gateway.headertext import header_text, header_text_problem, typed_text
from gateway.models import Delivery, Rendered, Role
from gateway.settings import SmtpSettings
from tests.peers.smtp import SmtpPeer

NOW = datetime(2025, 3, 3, 7, 30, tzinfo=UTC)
OURS = "varsel@asker.kommune.no"
URL = "https://varsel.asker.kommune.no"


def _b(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


HOSTILE = [
    "x\r\nBcc: victim@example.org",
    "x\nReply-To: evil@attacker.example",
    "=?utf-8?q?x=0D=0ABcc:_victim@example.org?=",
    "=?UTF-8?Q?x=0D=0A=0D=0AContent-Type:_text/html?= trailing",
    _b("\r\nReply-To: evil@attacker.example"),
    _b("x\r\n\r\nbody injected"),
    _b(_b("\r\nBcc: nested@attacker.example")),  # an encoded word inside an encoded word
    "Rektor <rektor@attacker.example>",
    '"Rektor" <rektor@attacker.example>',
    'Rektor "Åse" Berg <rektor@attacker.example>, other@attacker.example',
    "Rektor " * 40 + "<rektor@attacker.example>",
    "<script>alert(1)</script>",
    "\u202eelpmaxe.rekcatta@rotker\u202c Solvang skole",
    "Familien 👨\u200d👩\u200d👧\u200d👦 Hansen",
    "😀" * 60,
    "Lærer 😀 " + "x" * 120,
    'back\\slash "quote" and =?literal?= text',
    "\u2028Bcc: line-separator@attacker.example",
]

EXPECTED_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-unsubscribe",
    "auto-submitted",
    "mime-version",
    "content-language",
    "content-type",
}


def delivery(address: str, sender: str) -> Delivery:
    return Delivery(
        id="d" * 32,
        tenant_id="t1",
        message_id="m1",
        recipient_id="g1",
        recipient_role=Role.guardian,
        channel="email",
        address=address,
        language="nb",
        context={"sender": sender},
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.fixture
async def peer() -> AsyncIterator[SmtpPeer]:
    async with SmtpPeer() as server:
        yield server


def check(message: EmailMessage, raw: bytes, address: str, name: str, subject: str) -> None:
    names = [k.lower() for k in message]
    assert len(names) == len(set(names)), names
    assert set(names) - {"content-transfer-encoding"} == EXPECTED_HEADERS
    assert message["Bcc"] is None and message["Cc"] is None and message["Reply-To"] is None
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\n\r\n" not in head  # no blank line pushed headers into the body
    for line in head.split(b"\r\n"):
        assert line[:1] in (b" ", b"\t") or line.split(b":", 1)[0].lower().decode() in names
    assert b"From: From:" not in raw and b"Subject: Subject:" not in raw
    mailboxes = message["From"].addresses
    assert len(mailboxes) == 1
    assert mailboxes[0].addr_spec == OURS
    # spaces aside: Python's parser adds one between adjacent encoded words
    assert mailboxes[0].display_name.split() == header_text(name).split() or "".join(
        mailboxes[0].display_name.split()
    ) == "".join(header_text(name).split())
    assert [a.addr_spec for a in message["To"].addresses] == [address]
    assert str(message["Subject"]) == header_text(subject)
    assert message.get_body(("plain",)).get_content().strip() == "Hei."  # type: ignore[union-attr]


@pytest.mark.parametrize("address", ["foresatt@example.no", '"quoted local"@example.no'])
@pytest.mark.parametrize("hostile", HOSTILE)
async def test_hostile_subject_and_sender_name_stay_text(
    peer: SmtpPeer, address: str, hostile: str
) -> None:
    settings = SmtpSettings(
        host=peer.host, port=peer.port, tls="none", sender=f"Asker kommune <{OURS}>"
    )
    channel = EmailChannel(settings, URL)
    content = Rendered(subject=hostile, text="Hei.", html=None, language="nb")
    try:
        await channel.send(delivery(address, hostile), content)
    finally:
        await channel.aclose()
    (got,) = peer.received
    assert got.rcpt_tos == [address]
    assert got.mail_from == OURS
    check(got.message, got.raw, address, hostile, hostile)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_both_serialisations_read_the_same(hostile: str) -> None:
    content = Rendered(subject=hostile, text="Hei.", html=None, language="nb")
    d = delivery("foresatt@example.no", hostile)
    sender = f"Asker kommune <{OURS}>"
    direct = email_bytes(d, content, sender, URL, now=NOW)
    assert direct is not None
    built = build_email(d, content, sender, URL, now=NOW).as_bytes(policy=email.policy.SMTP)
    for raw in (direct[0], built):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        check(parsed, raw, "foresatt@example.no", hostile, hostile)


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("Foreldremøte tirsdag", False),
        ("Familien 👨\u200d👩\u200d👧 Hansen", False),
        ("=?utf-8?q?Foreldrem=C3=B8te?=", False),  # decodes to harmless text
        ("Rektor <rektor@attacker.example>", False),  # refused nowhere: it stays text
        ("x\r\nBcc: a@b", True),
        ("tab\there", True),
        ("=?utf-8?q?x=0D=0ABcc:_a@b?=", True),
        (_b("\r\nReply-To: e@x"), True),
        (_b(_b("\nBcc: e@x")), True),
        ("=?x-unknown?q?a=0D=0ABcc:_b@c?=", True),  # an unknown charset hides nothing
        ("=?utf-8?b?not base64!?=", False),
        ("\u202eevil", True),
        ("line\u2028separator", True),
    ],
)
def test_what_the_api_refuses(value: str, refused: bool) -> None:
    assert (header_text_problem(value) is not None) is refused


async def test_the_api_refuses_control_characters_in_a_subject_or_name(
    app_client: Any, tenant: Any, directory: Any, make_event: Any
) -> None:
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    event = make_event(subject="=?utf-8?q?x=0D=0ABcc:_victim@example.org?=")
    resp = await app_client.post("/v1/events", json=event, headers=headers)
    assert resp.status == 422
    answer = await resp.json()
    assert [e["loc"] for e in answer["errors"]] == [["data", "subject"]]
    assert "victim" not in json.dumps(answer)
    batch = {"units": [{"id": "u9", "kind": "school", "name": "Ok", "sender_name": "a\r\nBcc: b"}]}
    resp = await app_client.post("/v1/directory", json=batch, headers=headers)
    assert resp.status == 422
    assert [e["loc"] for e in (await resp.json())["errors"]] == [["units", 0, "sender_name"]]


async def test_a_direction_control_in_a_body_is_refused_where_a_link_could_hide_behind_it(
    app_client: Any, tenant: Any, directory: Any, make_event: Any
) -> None:
    """Subjects refused them, bodies did not: "Se https://\u202egro.elpmaxe\u202c.kommune.no"
    went out by SMS, email and page reading as a link to example.org."""
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    spoof = "Se https://\u202egro.elpmaxe\u202c.kommune.no/x"
    for event, loc in (
        (make_event(body=spoof), ["data", "body"]),
        (
            make_event(translations={"en": {"subject": "Trip", "body": "\u2067x\u2069"}}),
            ["data", "translations", "en", "body"],
        ),
    ):
        resp = await app_client.post("/v1/events", json=event, headers=headers)
        assert resp.status == 422
        [error] = (await resp.json())["errors"]
        assert error["loc"] == loc and "direction controls" in error["message"]
    # Arabic with its marks (LRM, RLM) and line breaks is text, as ever
    arabic = "رحلة يوم الجمعة\u200f\nالساعة 9\u200e"
    resp = await app_client.post("/v1/events", json=make_event(body=arabic), headers=headers)
    assert resp.status == 202, await resp.text()


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("Tannlege kl. 9\r\nhenter etterpå", "Tannlege kl. 9\nhenter etterpå"),
        ("syk\x07 \u202eevil\u202c", "syk evil"),
        ("مريض\u200f", "مريض\u200f"),  # a right-to-left mark is text
        ("tab\there", "tab\there"),
    ],
)
def test_what_a_guardian_types_into_a_form_is_kept_without_stray_controls(
    typed: str, kept: str
) -> None:
    assert typed_text(typed) == kept
