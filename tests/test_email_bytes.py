"""The direct email serialisation (the broadcast hot path) says what build_email says."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.email import build_email, email_bytes
from gateway.models import Delivery, DeliveryStatus, Rendered, Role

NOW = datetime(2025, 3, 3, 7, 30, tzinfo=UTC)
SENDER = "Asker kommune <varsel@asker.kommune.no>"
URL = "https://varsel.asker.kommune.no"


def delivery(address: str = "foresatt@example.no", **context: Any) -> Delivery:
    return Delivery(
        id="d" * 32,
        tenant_id="t1",
        message_id="m" * 32,
        recipient_id="g1",
        recipient_role=Role.guardian,
        channel="email",
        address=address,
        language="nb-NO",
        child_ids=["c1"],
        context=context,
        status=DeliveryStatus.queued,
        created_at=NOW,
        updated_at=NOW,
    )


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def both(d: Delivery, content: Rendered, url: str = URL) -> tuple[EmailMessage, EmailMessage]:
    direct = email_bytes(d, content, SENDER, url, now=NOW)
    assert direct is not None
    raw, to, message_id = direct
    assert to == d.address
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    built = build_email(d, content, SENDER, url, now=NOW)
    assert message_id == built["Message-ID"]
    return parse(raw), parse(built.as_bytes())


def parts(message: EmailMessage) -> dict[str, str]:
    return {p.get_content_type(): p.get_content() for p in message.walk() if not p.is_multipart()}


HEADERS = (
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "Content-Language",
)


def assert_same(fast: EmailMessage, slow: EmailMessage) -> None:
    for name in HEADERS:
        assert fast[name] == slow[name], name
    assert fast["From"].addresses == slow["From"].addresses
    assert fast["Cc"] is None and fast["Bcc"] is None
    assert fast.get_content_type() == slow.get_content_type()
    assert parts(fast) == parts(slow)


@pytest.mark.parametrize(
    ("sender", "subject"),
    [
        (None, "Foreldremøte tirsdag"),
        ("Solvang skole – rektor Åse", "Plain subject"),
        ('Skole "Nord", avd. (SFO)', "Tegn: <>@,;:"),
        ("Kort", "Et veldig langt emne " * 9),
        ("Ærlig talt " * 12, "Ære være " * 20),
    ],
)
def test_headers_and_parts_match_build_email(sender: str | None, subject: str) -> None:
    d = delivery(sender=sender) if sender else delivery()
    content = Rendered(
        subject=subject,
        text="Hei!\n\nLinje med mellomrom på slutten   \n.punktum først\nFrom the start\n"
        + "lang " * 60,
        html="<p>Hei &amp; hå</p>\n<p>" + "x" * 300 + "</p>",
        language="nb",
    )
    fast, slow = both(d, content)
    assert_same(fast, slow)
    assert fast.get_content_type() == "multipart/alternative"


def test_text_only_without_public_url() -> None:
    fast, slow = both(delivery(), Rendered(subject="Hei\nder", text="Bare tekst"), url="")
    assert_same(fast, slow)
    assert fast.get_content_type() == "text/plain"
    assert fast["List-Unsubscribe"] is None
    assert fast["Content-Language"] == "nb-NO"


@pytest.mark.parametrize("address", ['"quoted local"@example.no', "åse@eksempel.no"])
def test_unusual_addresses_take_the_full_path(address: str) -> None:
    assert email_bytes(delivery(address), Rendered(subject="s", text="t"), SENDER, URL) is None


@settings(max_examples=60, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=400))
def test_any_text_survives_the_round_trip(text: str) -> None:
    content = Rendered(subject="Emne", text=text, html=None)
    direct = email_bytes(delivery(), content, SENDER, URL, now=NOW)
    assert direct is not None
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    if not expected.endswith("\n"):
        expected += "\n"
    assert parse(direct[0]).get_content().replace("\r\n", "\n") == expected


# Languages and scripts a municipality writes in: right to left (Arabic, Urdu), Cyrillic,
# Sámi and Polish letters, Tigrinya, emoji; names with quotes, isolates and HTML characters.
WRITTEN = [
    (
        "ar",
        "مدرسة سولفانغ – المدير",
        "اجتماع أولياء الأمور يوم الثلاثاء " * 3,
        "مرحبا \u2068Kari\u2069",
    ),
    ("ur", "سولوانگ اسکول", "والدین کی میٹنگ", "محترم والدین\n\nشکریہ"),
    ("uk", "Школа «Сольванг»", "Батьківські збори у вівторок — важливо " * 4, "Вітаємо!"),
    ("se", "Sámi skuvla", "Čoahkkin – ŋ, š, ž, đ, ŧ", "Buorre beaivi!"),
    ("pl", 'Szkoła "Łąka" <rektor>', "Zebranie rodziców – żółć", "Cześć Łukasz & Zoë"),
    ("ti", "ቤት ትምህርቲ", "ኣኼባ ወለዲ 📣", "ሰላም\n.ነጥቢ"),
]


@pytest.mark.parametrize(("language", "sender", "subject", "greeting"), WRITTEN)
def test_every_language_reads_as_build_email_writes_it(
    language: str, sender: str, subject: str, greeting: str
) -> None:
    d = delivery(sender=sender)
    direction = "rtl" if language in ("ar", "ur") else "ltr"
    content = Rendered(
        subject=subject,
        text=f"{greeting}\n\n{subject}\n" + f"{greeting} " * 30,
        html=f'<html lang="{language}" dir="{direction}"><body><p><bdi>{greeting}</bdi></p>'
        + f"<p>{subject * 5}</p></body></html>",
        language=language,
        unsubscribe_url=f"{URL}/u/" + "A" * 64,
    )
    fast, slow = both(d, content)
    assert_same(fast, slow)
    assert fast["Content-Language"] == language
    assert fast["List-Unsubscribe"] == f"<{URL}/u/{'A' * 64}>"
    assert str(fast["Subject"]) == " ".join(subject.split())


def test_the_date_of_now_is_the_second_it_is_sent() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    direct = email_bytes(delivery(), Rendered(subject="s", text="t"), SENDER, URL)
    after = datetime.now(UTC)
    assert direct is not None
    assert before <= parse(direct[0])["Date"].datetime <= after
