"""Absence texts: keywords, and the templates in every language and kind (GSM-7 clean SMS
and push text, no reason or staff note in what guardians get, escaping in HTML)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from channels.gsm import encoding
from gateway.absence import KEYWORDS, dates_text, parse_answer, parse_report
from gateway.constants import ABSENCE_MESSAGE_TYPES
from gateway.models import AbsenceKind, Audience, Category, Delivery, Message, Role
from gateway.render import Renderer

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
KINDS = {
    "absence.recorded": "alert",
    "absence.cancelled": "correction",
    "absence.confirmation": "confirmation",
    "absence.informed": "informed",
    "absence.reported": "report",
    "absence.unreached": "unreached",
}
GUARDIAN_KINDS = ("alert", "correction", "confirmation", "informed")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("1", (AbsenceKind.sick, "")),
        ("SYK", (AbsenceKind.sick, "")),
        ("sjuk. Ho har feber", (AbsenceKind.sick, "Ho har feber")),
        ("Sick, fever", (AbsenceKind.sick, "fever")),
        ("  lege  kl 10 ", (AbsenceKind.appointment, "kl 10")),
        ("2", (AbsenceKind.appointment, "")),
        ("Tannlege", (AbsenceKind.appointment, "")),
        ("FRI i dag", (AbsenceKind.leave, "i dag")),
        ("permisjon", (AbsenceKind.leave, "")),
        ("3", (AbsenceKind.leave, "")),
        ("annet: hos mormor", (AbsenceKind.other, "hos mormor")),
        ("ANNA", (AbsenceKind.other, "")),
        ("Other", (AbsenceKind.other, "")),
        ("ok", (AbsenceKind.other, "")),
        ("4", (AbsenceKind.other, "")),
        ("Hei, hun er syk", None),
        ("12", None),
        ("", None),
    ],
)
def test_answer_keywords(body: str, expected: tuple[AbsenceKind, str] | None) -> None:
    assert parse_answer(body) == expected


def test_every_kind_has_keywords_in_each_language() -> None:
    by_kind: dict[AbsenceKind, set[str]] = {}
    for word, kind in KEYWORDS.items():
        by_kind.setdefault(kind, set()).add(word)
    assert {"1", "SYK", "SJUK", "SICK"} <= by_kind[AbsenceKind.sick]
    assert set(by_kind) == set(AbsenceKind)
    assert all(word == word.upper() for word in KEYWORDS)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("FRAVÆR Kari er syk", AbsenceKind.other),
        ("fravær syk Kari", AbsenceKind.sick),
        ("Fråvær lege", AbsenceKind.appointment),
        ("absence", AbsenceKind.other),
        ("SYK Kari", AbsenceKind.sick),
        ("1", None),  # digits answer alerts, they never report
        ("fravær 1", AbsenceKind.other),
        ("Takk for sist", None),
    ],
)
def test_report_keywords(body: str, expected: AbsenceKind | None) -> None:
    assert parse_report(body) == expected


def test_dates_in_each_language() -> None:
    days = [date(2026, 11, 27), date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 3)]
    assert dates_text(days, "nb") == (
        "fredag 27. november, mandag 30. november - tirsdag 1. desember og torsdag 3. desember"
    )
    assert dates_text(days[:1], "nn") == "fredag 27. november"
    assert dates_text(days[:2], "en") == "Friday 27 November and Monday 30 November"
    # Kept per set of days and language: their order and repeats make no other text.
    assert dates_text([days[1], days[0], days[1]], "en") == dates_text(days[:2], "en")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES, "https://varsel.example.no", link_for=lambda d: "https://v/r/x")


def facts(kind: str, **extra: Any) -> dict[str, Any]:
    one = {"nb": "fredag 27. november", "nn": "fredag 27. november", "en": "Friday 27 November"}
    return {
        "kind": kind,
        "child": "Kari",
        "unit": "Solvang skole",
        "group": "5A",
        "lesson": 0,
        "lesson_name": "Matte",
        "start": "08:00",
        "end": None,
        "arrival": None,
        "date": one,
        "dates": one,
        "report_kind": "sick",
        "report_text": "Feber <script>",
        "self": False,
        **extra,
    }


def render(
    renderer: Renderer,
    message_type: str,
    channel: str,
    lang: str,
    context: dict[str, Any] | None = None,
    **extra: Any,
) -> Any:
    message = Message(
        id="m1",
        tenant_id="t1",
        event_id="e1",
        event_type=message_type,
        body_hash="h",
        category=Category.absence,
        subject="-",
        body="-",
        audience=Audience(children=["c1"]),
        created_at=NOW,
    )
    delivery = Delivery(
        id="d1",
        tenant_id="t1",
        message_id="m1",
        recipient_id="p1",
        recipient_role=Role.guardian,
        channel=channel,
        language=lang,
        context=context
        or {"unit": "Solvang skole", "absence": facts(KINDS[message_type], **extra)},
        created_at=NOW,
        updated_at=NOW,
    )
    return renderer.render(message, delivery)


@pytest.mark.parametrize("message_type", ABSENCE_MESSAGE_TYPES)
@pytest.mark.parametrize("lang", ["nb", "nn", "en"])
def test_every_kind_renders_in_every_language(
    renderer: Renderer, message_type: str, lang: str
) -> None:
    kind = KINDS[message_type]
    for channel in ("sms", "push", "email", "inapp"):
        out = render(renderer, message_type, channel, lang)
        assert out.language == lang
        assert "Kari" in out.subject and "Kari" in out.text
        if kind in GUARDIAN_KINDS:  # rule 10: no reason, and never the reporter's text
            for word in ("Feber", "Syk", "Sjuk", "Sick", "Årsak", "Reason"):
                assert word not in out.text
        if channel in ("sms", "push") and kind in GUARDIAN_KINDS:
            assert encoding(out.text) == "GSM-7"
            assert encoding(out.short or "") == "GSM-7"
            assert encoding(out.subject) == "GSM-7"
    email = render(renderer, message_type, "email", lang)
    assert "<script>" not in (email.html or "")
    assert f'<html lang="{lang}" dir="ltr">' in (email.html or "")


@pytest.mark.parametrize(
    ("lang", "sentence"),
    [("nb", ". Skolen har fått beskjed."), ("en", ". The school has been told.")],
)
def test_the_neutral_place_starting_a_sentence_is_capitalised(
    renderer: Renderer, lang: str, sentence: str
) -> None:
    """Rule 4 (a protected child): the co-guardian is told the school's kind, not its
    name; where the place starts a sentence it read "skolen har fått beskjed"."""
    context = {"neutral": True, "unit_kind": "school", "absence": facts("informed")}
    out = render(renderer, "absence.informed", "sms", lang, context)
    assert sentence in out.text, out.text
    assert "Solvang" not in out.text


def test_lesson_zero_name_and_start(renderer: Renderer) -> None:
    out = render(renderer, "absence.recorded", "sms", "nb")
    assert out.text.startswith(
        "Kari er ikke registrert som til stede ved Solvang skole i 0. time (Matte) kl. 08:00,"
        " fredag 27. november."
    )
    assert "Svar SYK, LEGE, FRI eller ANNET" in out.text
    nn = render(renderer, "absence.recorded", "sms", "nn")
    assert "Svar SJUK, LEGE, FRI eller ANNA" in nn.text
    app = render(renderer, "absence.recorded", "inapp", "en")
    assert "Give a short explanation in the app." in app.text


def test_staff_report_carries_reason_and_text(renderer: Renderer) -> None:
    out = render(renderer, "absence.reported", "email", "nb")
    assert "Årsak: Syk" in out.text and "Melding: Feber <script>" in out.text
    assert "Melding: Feber &lt;script&gt;" in (out.html or "")
    self_report = render(renderer, "absence.reported", "inapp", "en", self=True)
    assert self_report.text.startswith("Kari in 5A has reported an absence")
