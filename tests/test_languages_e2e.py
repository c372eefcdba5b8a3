"""Issue 17, end to end: a message written in Bokmål goes to guardians who speak Arabic,
Somali, Northern Sámi, Polish and German (which we have no texts for). A running gateway
sends over SMTP (aiosmtpd) and Twilio (the Twilio-like peer); each email and SMS carries
our wrapper texts in the guardian's language, the Arabic email is right to left, and the
German-speaking guardian gets Bokmål with the fallback recorded in the status API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from channels.gsm import count_segments, encoding
from gateway.auth import create_tenant
from gateway.demo import DemoClient
from gateway.locales import FSI, PDI
from gateway.models import FINAL
from gateway.service import Service
from gateway.settings import load_settings
from tests.conftest import SECRET_KEY
from tests.peers.smtp import SmtpPeer
from tests.peers.twilio import TwilioPeer

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-" + "z" * 16
PUBLIC_URL = "https://varsel.asker.kommune.no"
SENDER = "Asker kommune <varsel@asker.kommune.no>"

pytestmark = pytest.mark.asyncio(loop_scope="module")
# guardian id -> (language asked for, the language our texts are in)
GUARDIANS = {
    "p-ar": ("ar", "ar"),
    "p-so": ("so", "so"),
    "p-se": ("se", "se"),
    "p-pl": ("pl-PL", "pl"),
    "p-de": ("de", "nb"),  # no German texts: Bokmål, and the status says so
}
# The email's header line and the SMS's read-link text, per wrapper language. The SMS
# text of Sámi and Polish is folded to GSM-7 (the staff text is GSM-7: no UCS-2 for it).
EMAIL_HEADER = {
    "ar": "رسالة من",
    "so": "Fariin ka timid",
    "se": "Dieđáhus:",
    "pl": "Wiadomość od:",
    "nb": "Melding fra",
}
SUBJECT = "Foreldremøte torsdag"
BODY = "Velkommen til foreldremøte torsdag kl. 18 i aulaen."


def directory() -> dict[str, Any]:
    persons: list[dict[str, Any]] = []
    relations = []
    for n, (guardian_id, (language, _)) in enumerate(GUARDIANS.items(), start=1):
        child_id = f"c{n}"
        persons.append(
            {
                "id": child_id,
                "role": "child",
                "given_name": f"Barn{n}",
                "birth_date": "2015-04-01",
                "unit_ids": ["u1"],
                "group_ids": ["g1"],
            }
        )
        persons.append(
            {
                "id": guardian_id,
                "role": "guardian",
                "given_name": f"Forelder{n}",
                "email": f"{guardian_id}@familie.no",
                "phone": f"+479100000{n}",
                "language": language,
            }
        )
        relations.append(
            {"child_id": child_id, "guardian_id": guardian_id, "parental_responsibility": True}
        )
    # the class's contact teacher, who looks at the message's page
    persons.append(
        {
            "id": "t1",
            "role": "staff",
            "given_name": "Tone",
            "family_name": "Lærer",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        }
    )
    return {
        "units": [{"id": "u1", "kind": "school", "name": "Solvang skole", "sms_sender": "Solvang"}],
        "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
        "persons": persons,
        "relations": relations,
    }


@dataclass
class Sent:
    status: dict[str, Any]
    emails: dict[str, EmailMessage]  # guardian id -> the email
    sms: dict[str, str]  # guardian id -> the SMS text
    staff_page: str  # the message's page on the staff pages, as the teacher sees it


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


async def wait_final(client: DemoClient, message_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = await client.call("GET", f"/v1/messages/{message_id}")
        deliveries = status["deliveries"]
        if status["planned_at"] and deliveries and all(d["status"] in FINAL for d in deliveries):
            return status
        assert time.monotonic() < deadline, status["counts"]
        await asyncio.sleep(0.05)


async def staff_page_of(client: DemoClient, port: int | None, message_id: str) -> str:
    """The teacher's page of the message: the sign-in link (on the public URL: asked of
    the local server here), then the page with the session cookie it set."""
    link = await client.call("POST", "/v1/staff/t1/tokens", {"message_id": message_id})
    local = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        signin = link["link"].replace(PUBLIC_URL, local)
        async with session.get(signin, allow_redirects=False) as resp:
            assert resp.status == 303, resp.status
            cookie = resp.cookies["budbringer_staff"].value
        page = f"{local}/staff/messages/{message_id}"
        async with session.get(page, headers={"Cookie": f"budbringer_staff={cookie}"}) as resp:
            assert resp.status == 200, resp.status
            return await resp.text()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sent]:
    tmp = tmp_path_factory.mktemp("languages")
    async with SmtpPeer() as smtp, TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        settings = load_settings(
            store_url=f"sqlite:///{tmp / 'budbringer.db'}",
            outbox_dir=tmp / "outbox",
            port=0,
            public_url=PUBLIC_URL,
            secret_key=SECRET_KEY,
            smtp={"host": smtp.host, "port": smtp.port, "tls": "none", "sender": SENDER},
            twilio={
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "base_url": twilio.base_url,
                "default_sender": "Budbringer",
            },
            dispatch={"poll_interval": 0.05},
        )
        service = Service(settings)
        await service.start()
        client: DemoClient | None = None
        try:
            tenant, api_key, whsec = await create_tenant(
                service.store, "Asker kommune", service.clock.now()
            )
            client = DemoClient(f"http://127.0.0.1:{service.port}", api_key, whsec, tenant.id)
            await client.call("POST", "/v1/directory", directory())
            accepted = await client.post_signed_event(
                {
                    "id": "evt-languages",
                    "type": "message.created",
                    "data": {
                        "sender_name": "Kontaktlærer 5A",
                        "audience": {"groups": ["g1"]},
                        "subject": SUBJECT,
                        "body": BODY,
                    },
                }
            )
            status = await wait_final(client, accepted["message_id"])
            staff_page = await staff_page_of(client, service.port, accepted["message_id"])
            phones = {f"+479100000{n}": g for n, g in enumerate(GUARDIANS, start=1)}
            yield Sent(
                status,
                {r.rcpt_tos[0].partition("@")[0]: r.message for r in smtp.received},
                {phones[str(r.field("To"))]: str(r.field("Body")) for r in twilio.requests},
                staff_page,
            )
        finally:
            if client is not None:
                await client.close()
            await service.stop()


async def test_every_guardian_gets_one_email_and_one_sms(sent: Sent) -> None:
    assert sorted(sent.emails) == sorted(GUARDIANS)
    assert sorted(sent.sms) == sorted(GUARDIANS)


@pytest.mark.parametrize("guardian_id", list(GUARDIANS))
async def test_email_wrapper_is_in_the_guardians_language(sent: Sent, guardian_id: str) -> None:
    lang = GUARDIANS[guardian_id][1]
    email = sent.emails[guardian_id]
    html = html_of(email)
    text = text_of(email)
    direction = "rtl" if lang == "ar" else "ltr"
    assert f'<html lang="{lang}" dir="{direction}">' in html
    # our header in the language, the sender's name isolated in <bdi>
    assert f"{EMAIL_HEADER[lang]} <bdi>Kontaktlærer 5A, Solvang skole</bdi>" in html
    assert EMAIL_HEADER[lang] in text
    # the staff text as written: Bokmål in every email, its own direction in HTML
    assert BODY in text
    assert f'<p dir="auto" style="margin: 0 0 16px;">{BODY}</p>' in html
    assert email["Subject"] == SUBJECT


async def test_the_arabic_email_is_right_to_left_with_isolated_names(sent: Sent) -> None:
    email = sent.emails["p-ar"]
    html = html_of(email)
    assert "بخصوص: <bdi>Barn1</bdi>" in html
    assert "لدى <bdi>Solvang skole</bdi>" in html
    # plain text: names and links inside Unicode isolates, so they keep their direction
    text = text_of(email)
    assert f"بخصوص: {FSI}Barn1{PDI}" in text
    assert f"{FSI}{PUBLIC_URL}/r/" in text


async def test_latin_texts_carry_no_isolates(sent: Sent) -> None:
    for guardian_id in ("p-so", "p-se", "p-pl", "p-de"):
        assert FSI not in text_of(sent.emails[guardian_id])
        assert FSI not in sent.sms[guardian_id]


@pytest.mark.parametrize("guardian_id", list(GUARDIANS))
async def test_sms_keeps_the_one_segment_layout_in_every_language(
    sent: Sent, guardian_id: str
) -> None:
    """The SMS carries no wrapper sentence for a short message (issue 16's budget:
    "sender (children): subject", the body, the bare read link), so no Bokmål text
    leaks into another language's SMS; the wrapper language shows in the email."""
    lang = GUARDIANS[guardian_id][1]
    sms = sent.sms[guardian_id]
    first = sms.splitlines()[0]
    assert "Solvang skole" in first and first.endswith(SUBJECT)
    assert BODY in sms and f"{PUBLIC_URL}/r/" in sms
    if lang != "nb":
        assert "Les meldingen" not in sms and "Gjelder" not in sms
    # Arabic script is UCS-2 whatever we do; the Latin ones stay GSM-7 (folded if needed)
    assert encoding(sms) == ("UCS-2" if lang == "ar" else "GSM-7"), sms


async def test_sms_segments_are_counted_for_the_text_sent(sent: Sent) -> None:
    sms = {d["recipient_id"]: d for d in sent.status["deliveries"] if d["channel"] == "sms"}
    for guardian_id, text in sent.sms.items():
        assert sms[guardian_id]["segments"] == count_segments(text), guardian_id
        assert sms[guardian_id]["segments"] <= 4, guardian_id


async def test_the_status_records_a_language_fallback(sent: Sent) -> None:
    deliveries = [d for d in sent.status["deliveries"] if d["channel"] in ("email", "sms")]
    assert deliveries
    for delivery in deliveries:
        asked, wrapper = GUARDIANS[delivery["recipient_id"]]
        assert delivery["language"] == asked
        assert delivery["wrapper_language"] == wrapper
        assert delivery["language_fallback"] is (delivery["recipient_id"] == "p-de")


async def test_the_staff_page_says_who_got_bokmal_instead(sent: Sent) -> None:
    page = sent.staff_page
    assert page.count("fikk våre tekster på bokmål: vi har dem ikke på tysk") == 1
    line = next(li for li in page.split("<li>") if "vi har dem ikke på tysk" in li)
    assert "Forelder5" in line  # p-de, the German-speaking guardian
