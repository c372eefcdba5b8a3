"""Stencils: a delivery rendered from another delivery's stencil reads exactly as if it
had been rendered alone (gateway/render.py, ``_Stencils``)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.constants import NEUTRAL_KEY
from gateway.models import (
    Attachment,
    Audience,
    Category,
    Delivery,
    Message,
    Role,
    Translation,
    TranslationOrigin,
)
from gateway.render import Renderer

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
URL = "https://varsel.example.no"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
LANGUAGES = ("nb", "en", "pl", "se", "ar", "uk", "ur")
CHANNELS = ("email", "sms", "push", "inapp")
# The first family makes the stencil; each of the others is rendered from it.
FAMILIES: tuple[list[str], ...] = (
    ["Ola", "Kari"],
    ["Nora"],
    ["Zoë", "Łukasz", "Åse"],  # not GSM-7: the SMS stays UCS-2 unfolded
    ["<b>Tom</b> & Jerry", 'A"B'],  # escaped in HTML, as written in text
    ["محمد", "Sara"],  # right to left among left to right
    ["\u2068Ida\u2069"],  # isolates of its own
    ["Mia", "Emil", "Noah", "Ella"],
)


def link_for(delivery: Delivery) -> str:
    token = base64.urlsafe_b64encode(hashlib.sha256(delivery.id.encode()).digest())
    return f"{URL}/r/{token.rstrip(b'=').decode()}"


class CountingRenderer(Renderer):
    """Counts template renders (two per stencil: the stencil and its check)."""

    renders = 0

    def _raw_parts(self, *args: Any, **kwargs: Any) -> Any:
        self.renders += 1
        return super()._raw_parts(*args, **kwargs)


def message(category: Category = Category.emergency, read_receipt: bool = False) -> Message:
    return Message(
        id="m1",
        tenant_id="t1",
        event_id="e1",
        event_type="message.created",
        body_hash="h",
        category=category,
        subject="Stengt skole i dag",
        body="Alle skoler er stengt.\n\nHold barna hjemme – «viktig».",
        read_receipt=read_receipt,
        audience=Audience(children=["c1"]),
        created_at=NOW,
    )


def delivery(n: int, channel: str, language: str, children: list[str], **context: Any) -> Delivery:
    return Delivery(
        id=f"{n:032x}",
        tenant_id="t1",
        message_id="m1",
        recipient_id=f"p{n}",
        recipient_role=context.pop("role", Role.guardian),
        channel=channel,
        address="x@example.no",
        language=language,
        child_ids=["c1"],
        context={
            "children": children,
            "unit": "Solvang skole",
            "sender": "Rektor Hansen",
            "sms_sender": "Solvang",
            "category": "emergency",
            **context,
        },
        created_at=NOW,
        updated_at=NOW,
    )


class DirectRenderer(Renderer):
    """The reference: every part rendered by the templates, no stencil (and so nothing a
    stencil knows, such as an SMS kind's encoding)."""

    def _kind_of(self, job: Any) -> None:
        return None


def alone(msg: Message, one: Delivery, *, email_max_bytes: int = 0, **kwargs: Any) -> Any:
    """The delivery rendered by a renderer that has seen no other, without stencils."""
    renderer = DirectRenderer(TEMPLATES, URL, link_for=link_for, email_max_bytes=email_max_bytes)
    return renderer.render(msg, one, **kwargs)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("channel", CHANNELS)
def test_every_family_reads_as_if_rendered_alone(channel: str, language: str) -> None:
    renderer = CountingRenderer(TEMPLATES, URL, link_for=link_for)
    msg = message()
    for n, children in enumerate(FAMILIES):
        one = delivery(n, channel, language, children)
        assert renderer.render(msg, one) == alone(msg, one), children
    # One stencil (and its check) per variant, not a render per family.
    assert renderer.renders <= 4


@pytest.mark.parametrize(
    "context",
    [
        {NEUTRAL_KEY: True, "unit": None, "sender": None, "sms_sender": None},
        {"role": Role.staff},
        {"escalation": "step:1"},
        {"children": []},
    ],
)
@pytest.mark.parametrize("channel", CHANNELS)
def test_other_kinds_read_as_if_rendered_alone(channel: str, context: dict[str, Any]) -> None:
    renderer = Renderer(TEMPLATES, URL, link_for=link_for)
    msg = message(read_receipt=True)
    for n, children in enumerate(FAMILIES):
        fields = dict(context)
        kids = fields.pop("children", children)
        one = delivery(n, channel, "nb", kids, **fields)
        assert renderer.render(msg, one) == alone(msg, one)


def test_translations_and_files_read_as_if_rendered_alone() -> None:
    renderer = Renderer(TEMPLATES, URL, link_for=link_for, email_max_bytes=1000)
    msg = message(Category.general)
    files = [
        Attachment(
            id=f"f{size}",
            tenant_id="t1",
            name="plan <1>.pdf",
            content_type="application/pdf",
            size=size,
            sha256="0" * 64,
            created_at=NOW,
        )
        for size in (500, 5000)
    ]
    translation = Translation(
        tenant_id="t1",
        message_id="m1",
        language="pl",
        origin=TranslationOrigin.machine,
        subject="Szkoła zamknięta",
        body="Wszystkie szkoły są zamknięte.",
        at=NOW,
    )
    kwargs: dict[str, Any] = {"translation": translation, "source_language": "nb"}
    for channel in CHANNELS:
        for n, children in enumerate(FAMILIES):
            one = delivery(n, channel, "pl", children)
            expected = alone(msg, one, email_max_bytes=1000, files=files, **kwargs)
            assert renderer.render(msg, one, files, **kwargs) == expected


def test_a_different_message_never_takes_anothers_stencil() -> None:
    renderer = Renderer(TEMPLATES, URL, link_for=link_for)
    first, second = message(), message().model_copy(update={"body": "Skolen er åpen likevel."})
    for channel in CHANNELS:
        one = delivery(1, channel, "nb", ["Ola"])
        assert renderer.render(first, one) == alone(first, one)
        assert renderer.render(second, one) == alone(second, one)
        assert "åpen likevel" in renderer.render(second, one).text


@pytest.mark.parametrize("language", ["nb", "ar"])
def test_a_family_shared_by_guardians_and_channels_reads_as_if_rendered_alone(
    language: str,
) -> None:
    """A family's names are worked out once and joined into every guardian's delivery on
    every channel; each still reads as if rendered alone, in a right-to-left language and
    not (isolates kept or dropped), whether its names open the text (push) or not."""
    renderer = Renderer(TEMPLATES, URL, link_for=link_for)
    msg = message()
    n = 0
    for _ in range(2):  # the second round takes every family's names from the first
        for children in FAMILIES[3:6]:  # HTML characters, right to left, isolates
            for channel in ("email", "push"):
                for role in (Role.guardian, Role.staff):
                    n += 1
                    one = delivery(n, channel, language, children, role=role)
                    assert renderer.render(msg, one) == alone(msg, one), (channel, children)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(
    "body",
    [
        "Alle skoler er stengt. Hold barna hjemme.",  # GSM-7: our texts decide
        "Alle skoler er stengt – «viktig».",  # UCS-2 whatever our texts are
        "Ł",  # one letter GSM-7 lacks, which folding never touches in staff text
    ],
)
def test_an_sms_is_folded_exactly_when_a_lone_render_is(language: str, body: str) -> None:
    """Whether an SMS goes out with our texts folded to GSM-7 is worked out from its
    stencil (its own text GSM-7, or UCS-2 whatever is filled in) and its family's names;
    every family's SMS still equals its render alone, folded or not."""
    renderer = CountingRenderer(TEMPLATES, URL, link_for=link_for)
    msg = message().model_copy(update={"body": body})
    for _ in range(2):
        for n, children in enumerate(FAMILIES):
            one = delivery(n, "sms", language, children)
            assert renderer.render(msg, one) == alone(msg, one), children
    # A stencil (and its check) unfolded and folded at most, not a render per family.
    assert renderer.renders <= 4
