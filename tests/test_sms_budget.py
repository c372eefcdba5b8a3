"""Issue 16, texts: the SMS budget (one GSM-7 segment for a short staff text in nb, nn
and en, whatever the wrapper adds), reminders that say so, read receipts that ask with a
button, absence answers only where the sender can receive them, and the sender unit
named on every message (neutral where rule 4 says so). Segments are counted by
channels/gsm.py; read links are made by the real token maker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from channels.gsm import count_segments, encoding
from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.constants import NEUTRAL_KEY
from gateway.models import Audience, Category, Delivery, DirectoryBatch, Message, Role
from gateway.readlinks import read_link_maker
from gateway.render import Renderer
from gateway.settings import Settings
from gateway.tracker import ESCALATION_KEY
from tests.conftest import SECRET_KEY
from tests.harness import Gateway, running
from tests.peers.twilio import TwilioPeer
from tests.test_absence_texts import facts
from tests.test_sms import ACCOUNT_SID, AUTH_TOKEN, twilio_settings

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
# A public URL of a real deployment's length; the read link adds /r/ and 64 characters.
PUBLIC_URL = "https://varsel.asker.kommune.no"
LANGUAGES = ("nb", "nn", "en")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    links = read_link_maker(SECRET_KEY.encode(), PUBLIC_URL, timedelta(days=30))
    return Renderer(TEMPLATES, PUBLIC_URL, link_for=links, sms_fallback_sender="Asker")


def message(
    category: Category = Category.general,
    *,
    read_receipt: bool = False,
    subject: str = "Gym",
    body: str = "Husk gymtøy.",
    event_type: str = "message.created",
) -> Message:
    return Message(
        id="m1",
        tenant_id="t1",
        event_id="e1",
        event_type=event_type,
        body_hash="h",
        category=category,
        subject=subject,
        body=body,
        read_receipt=read_receipt,
        audience=Audience(children=["c1"]),
        created_at=NOW,
    )


def delivery(channel: str, language: str, **context: Any) -> Delivery:
    return Delivery(
        id="0123456789abcdef0123456789abcdef",
        tenant_id="t1",
        message_id="m1",
        recipient_id="p1",
        recipient_role=Role.guardian,
        channel=channel,
        address="+4741234567" if channel == "sms" else "ola@example.no",
        language=language,
        child_ids=["c1"],
        context={"children": ["Kari"], "unit": "Solvang skole", **context},
        created_at=NOW,
        updated_at=NOW,
    )


# Every wrapper the SMS template has: plain, urgent, a reminder (an escalation step), a
# read receipt, neutral (rule 4), and all of them at once.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "plain": ({}, {}),
    "emergency": ({"category": Category.emergency}, {}),
    "reminder": ({"read_receipt": True}, {ESCALATION_KEY: "step:1"}),
    "read_receipt": ({"read_receipt": True}, {}),
    "neutral": ({}, {NEUTRAL_KEY: True, "unit": None, "unit_kind": "school"}),
    "all": (
        {"category": Category.emergency, "read_receipt": True},
        {ESCALATION_KEY: "step:2", NEUTRAL_KEY: True, "unit": None, "unit_kind": "school"},
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_sms_template_is_one_segment_for_a_short_staff_text(
    renderer: Renderer, language: str, variant: str
) -> None:
    fields, context = VARIANTS[variant]
    out = renderer.render(message(**fields), delivery("sms", language, **context))
    for text in (out.text, out.short or ""):
        assert encoding(text) == "GSM-7", text
        assert count_segments(text) == 1, (len(text), text)
    assert out.text.endswith(f"{PUBLIC_URL}/r/" + out.text.rpartition("/r/")[2])
    assert "/p/" not in out.text and "preferences" not in out.text  # no settings line


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_sms_names_its_sender_and_a_neutral_one_under_rule_4(
    renderer: Renderer, language: str
) -> None:
    plain = renderer.render(message(), delivery("sms", language))
    assert plain.text.startswith("Solvang skole (Kari): Gym\n")
    neutral = renderer.render(
        message(), delivery("sms", language, unit=None, **{NEUTRAL_KEY: True})
    )
    expected = {"nb": "Kommunen", "nn": "Kommunen", "en": "Municipality"}[language]
    assert neutral.text.startswith(f"{expected} (Kari): Gym\n")
    assert "Solvang" not in neutral.text


@pytest.mark.parametrize(
    ("language", "prefix", "line"),
    [
        ("nb", "Påminnelse:", "Vi har ikke fått svar fra deg"),
        ("nn", "Påminning:", "Vi har ikkje fått svar frå deg"),
        ("en", "Reminder:", "We have not heard from you"),
    ],
)
def test_an_escalation_step_says_it_is_a_reminder_and_a_failover_does_not(
    renderer: Renderer, language: str, prefix: str, line: str
) -> None:
    asked = message(read_receipt=True)
    for channel in ("email", "sms", "push"):
        step = renderer.render(asked, delivery(channel, language, **{ESCALATION_KEY: "step:1"}))
        assert step.subject == f"{prefix} Gym"
        if channel != "sms":  # the SMS says it on its first line, within one segment
            assert line in step.text
        else:
            assert f": {prefix} Gym\n" in step.text
        failover = renderer.render(
            asked, delivery(channel, language, **{ESCALATION_KEY: "failover:push"})
        )
        assert failover.subject == "Gym" and line not in failover.text
    email = renderer.render(asked, delivery("email", language, **{ESCALATION_KEY: "step:1"}))
    assert line in (email.html or "")


@pytest.mark.parametrize(
    ("language", "asked", "button"),
    [
        ("nb", "ber deg bekrefte at du har lest meldingen", "Bekreft at jeg har lest"),
        ("nn", "ber deg stadfeste at du har lese meldinga", "Stadfest at eg har lese"),
        ("en", "asks you to confirm that you have read", "Confirm that I have read it"),
    ],
)
def test_a_read_receipt_email_asks_for_the_confirmation_with_a_button(
    renderer: Renderer, language: str, asked: str, button: str
) -> None:
    out = renderer.render(message(read_receipt=True), delivery("email", language))
    link = out.text.split(f"{button}: ", 1)[1].split("\n", 1)[0]
    assert asked in out.text and link.startswith(f"{PUBLIC_URL}/r/")
    html = out.html or ""
    assert asked in html and f'href="{link}"' in html and f">{button}</a>" in html
    plain = renderer.render(message(), delivery("email", language))
    assert asked not in plain.text and button not in (plain.html or "")


def absence_alert(renderer: Renderer, language: str, sms_sender: str | None) -> str:
    alert = message(Category.absence, event_type="absence.recorded", subject="-", body="-")
    context = {"absence": facts("alert"), "sms_sender": sms_sender}
    return renderer.render(alert, delivery("sms", language, **context)).text


@pytest.mark.parametrize(
    ("language", "keywords", "by_link"),
    [
        ("nb", "Svar SYK, LEGE, FRI eller ANNET", "Gi beskjed via lenken."),
        ("nn", "Svar SJUK, LEGE, FRI eller ANNA", "Gi beskjed via lenkja."),
        ("en", "Reply SICK, DOCTOR, LEAVE or OTHER", "Tell us through the link."),
    ],
)
def test_absence_alerts_offer_keyword_answers_only_from_a_sender_that_can_receive_them(
    renderer: Renderer, language: str, keywords: str, by_link: str
) -> None:
    for alphanumeric in ("Solvang", None):  # the unit's own id, or the fallback "Asker"
        text = absence_alert(renderer, language, alphanumeric)
        assert keywords not in text and by_link in text
        assert f"{PUBLIC_URL}/r/" in text
    for number in ("+4741234567", "MG" + "0" * 32):
        text = absence_alert(renderer, language, number)
        assert keywords in text and by_link not in text


# --------------------------------------------------------------------------- end to end

DIRECTORY: dict[str, Any] = {
    "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
    "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
    "persons": [
        {"id": "t1", "role": "staff", "given_name": "Tone", "unit_ids": ["u1"]},
        {
            "id": "c1",
            "role": "child",
            "given_name": "Kari",
            "birth_date": "2015-03-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        },
        {
            "id": "c2",
            "role": "child",
            "given_name": "Per",
            "birth_date": "2015-05-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
            "protection": "strictly_confidential",
        },
        {"id": "p1", "role": "guardian", "given_name": "Ola", "phone": "41100001"},
        {"id": "p2", "role": "guardian", "given_name": "Eva", "phone": "41100002"},
    ],
    "relations": [
        {"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True},
        {"child_id": "c2", "guardian_id": "p2", "parental_responsibility": True},
    ],
}


@pytest.fixture
async def sms_gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, TwilioPeer, str]]:
    clock = ManualClock()
    async with TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        settings = Settings(
            store_url=f"sqlite:///{tmp_path / 'budbringer.db'}",
            outbox_dir=tmp_path / "outbox",
            secret_key=SECRET_KEY,
            public_url=PUBLIC_URL,
            channels=["inapp", "sms"],
            twilio=twilio_settings(twilio.base_url),
        )
        async with running(settings, clock) as gw:
            tenant, key, _ = await create_tenant(gw.service.store, "Asker kommune", clock.now())
            batch = DirectoryBatch.model_validate(DIRECTORY)
            await gw.service.store.apply_directory(tenant.id, batch)
            yield gw, twilio, key


async def test_a_message_to_guardians_directly_names_the_senders_unit_and_counts_segments(
    sms_gateway: tuple[Gateway, TwilioPeer, str],
) -> None:
    gw, twilio, key = sms_gateway
    event = {
        "id": "evt-1",
        "type": "message.created",
        "data": {
            "sender_id": "t1",
            "audience": {"guardians": ["p1", "p2"]},
            "subject": "Gym",
            "body": "Husk gymtøy.",
        },
    }
    message_id = await gw.post_event(key, event)
    await gw.run()
    bodies = {r.field("To"): r.field("Body") or "" for r in twilio.requests}
    # p1 learns the school of the sender; p2, the guardian of a protected child, does not.
    assert bodies["+4741100001"].startswith("Solvang skole: Gym\n")
    assert bodies["+4741100002"].startswith("Kommunen: Gym\n")
    assert "Solvang" not in bodies["+4741100002"]
    status = await gw.status(key, message_id)
    assert status["sms_segments"] == 2  # one segment each
    async with gw.session.get(f"{gw.url}/metrics") as resp:
        metrics = await resp.text()
    count = [x for x in metrics.splitlines() if x.startswith("budbringer_sms_segments_count")]
    assert count and float(count[0].split()[-1]) >= 2


async def test_an_absence_alert_in_ukrainian_goes_out_past_the_budget_with_whom_to_contact(
    sms_gateway: tuple[Gateway, TwilioPeer, str],
) -> None:
    """In Ukrainian, Arabic, Persian, Urdu (UCS-2, 67 characters a segment) an alert for
    a child with a long name at a school with a long name, in a named lesson, was six
    segments and its short text five: past TWILIO__MAX_SEGMENTS (4) it failed as
    sms_too_long, and an SMS-only guardian was never told. The short text also left out
    "contact the school if you do not know where Kristoffer is"."""
    gw, twilio, key = sms_gateway
    directory = DirectoryBatch.model_validate(
        {
            "units": [{"id": "u2", "kind": "school", "name": "Bjørnegård ungdomsskole"}],
            "groups": [{"id": "g2", "unit_id": "u2", "kind": "class", "name": "9B"}],
            "persons": [
                {"id": "c9", "role": "child", "given_name": "Kristoffer Alexander",
                 "birth_date": "2012-03-01", "unit_ids": ["u2"], "group_ids": ["g2"]},
                {"id": "p9", "role": "guardian", "given_name": "Olena", "phone": "41100009",
                 "language": "uk"},
            ],
            "relations": [{"child_id": "c9", "guardian_id": "p9", "parental_responsibility": True}],
        }
    )  # fmt: skip
    tenant_id = (await gw.service.store.list_tenants())[0].id
    await gw.service.store.apply_directory(tenant_id, directory)
    event = {
        "id": "abs-uk",
        "type": "absence.recorded",
        "data": {
            "child_id": "c9",
            "lesson": {"number": 3, "name": "Naturfag", "from": "10:15", "to": "11:00"},
        },
    }
    message_id = await gw.post_event(key, event)
    await gw.run()
    [body] = [r.field("Body") or "" for r in twilio.requests if r.field("To") == "+4741100009"]
    assert "Зв'яжіться з: Bjørnegård ungdomsskole" in body  # whom to contact
    assert "/r/" in body  # and the link whose page asks for the answer
    segments = count_segments(body)
    assert encoding(body) == "UCS-2" and 4 < segments <= 10
    status = await gw.status(key, message_id)
    assert status["sms_segments"] == segments


@pytest.mark.parametrize(
    ("language", "why", "parent_line"),
    [
        ("nb", "som ansatt ved Solvang skole", "Endre varslingsinnstillingene dine"),
        ("nn", "som tilsett ved Solvang skole", "Endre varslingsinnstillingane dine"),
        ("en", "as a member of staff at Solvang skole", "Change your notification settings"),
    ],
)
def test_staff_emails_have_a_staff_footer_not_the_parent_one(
    renderer: Renderer, language: str, why: str, parent_line: str
) -> None:
    report = message(Category.absence, event_type="absence.reported", subject="-", body="-")
    for msg, context in ((message(), {}), (report, {"absence": facts("report")})):
        staff = delivery("email", language, **context).model_copy(
            update={"recipient_role": Role.staff}
        )
        out = renderer.render(msg, staff)
        assert why in out.text
        assert why in (out.html or "").replace("<bdi>", "").replace("</bdi>", "")
        assert parent_line not in out.text and parent_line not in (out.html or "")
        assert f"{PUBLIC_URL}/staff/" in out.text
        parent = renderer.render(msg, delivery("email", language, **context))
        assert parent_line in parent.text and why not in parent.text
