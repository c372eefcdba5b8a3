"""Rendering: wrapper texts per language, fallbacks, markers, escaping, SMS-safe text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from channels.gsm import encoding
from gateway.errors import ConfigError
from gateway.locales import PluralText, resolve_language
from gateway.locales import load as load_locales
from gateway.models import Audience, Category, Delivery, Message, Role
from gateway.render import PUSH_BODY_MAX, Renderer, shorten

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
URL = "https://varsel.example.no"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
CONTEXT = {"children": ["Ola", "Kari"], "unit": "Solvang skole", "sender": "Rektor Hansen"}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES, URL + "/")


def message(
    *,
    subject: str = "Foreldremøte",
    body: str = "Velkommen til foreldremøte tirsdag kl. 18.\n\nHilsen skolen",
    category: Category = Category.general,
) -> Message:
    return Message(
        id="m1",
        tenant_id="t1",
        event_id="e1",
        event_type="message.created",
        body_hash="h",
        category=category,
        subject=subject,
        body=body,
        audience=Audience(children=["c1", "c2"]),
        created_at=NOW,
    )


def delivery(
    channel: str = "email", language: str = "nb", context: dict[str, Any] | None = None
) -> Delivery:
    return Delivery(
        id="d1",
        tenant_id="t1",
        message_id="m1",
        recipient_id="p1",
        recipient_role=Role.guardian,
        channel=channel,
        address="ola@example.no",
        language=language,
        child_ids=["c1", "c2"],
        context=CONTEXT if context is None else context,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("language", "concerns", "header", "footer"),
    [
        ("nb", "Gjelder: Ola og Kari", "Melding fra Rektor Hansen, Solvang skole", "meldingen"),
        ("nn", "Gjeld: Ola og Kari", "Melding frå Rektor Hansen, Solvang skole", "meldinga"),
        ("en", "Concerns: Ola and Kari", "Message from Rektor Hansen, Solvang skole", "receiving"),
    ],
)
def test_wrapper_texts_per_language(
    renderer: Renderer, language: str, concerns: str, header: str, footer: str
) -> None:
    out = renderer.render(message(), delivery("email", language))
    assert out.language == language
    assert out.subject == "Foreldremøte"
    assert "<bdi>Ola</bdi>" in (out.html or "")
    for part in (out.text, (out.html or "").replace("<bdi>", "").replace("</bdi>", "")):
        assert concerns in part
        assert header in part
        assert footer in part
        assert f"{URL}/preferences" in part
        # the staff text is used as written, whatever the language
        assert "Velkommen til foreldremøte tirsdag kl. 18." in part
    assert f'<html lang="{language}" dir="ltr">' in (out.html or "")


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("nb", "nb"),
        ("no", "nb"),
        ("nb-NO", "nb"),
        ("nb_NO", "nb"),
        ("nob", "nb"),
        ("nn", "nn"),
        ("nn-NO", "nn"),
        ("en-GB", "en"),
        ("EN", "en"),
        ("pl", "pl"),
        ("se", "se"),
        ("sme", "se"),
        ("ar-EG", "ar"),
        ("ti-ER", "ti"),
        ("fas", "fa"),
        ("prs", "fa"),
        ("uk-UA", "uk"),
        ("de", "nb"),
        ("", "nb"),
    ],
)
def test_language_resolution(tag: str, expected: str) -> None:
    assert resolve_language(tag) == expected


def test_unknown_language_falls_back_to_nb(renderer: Renderer) -> None:
    out = renderer.render(message(), delivery("email", "de"))
    assert out.language == "nb"
    assert "Gjelder: Ola og Kari" in out.text


def test_children_lists_are_joined_per_language(renderer: Renderer) -> None:
    three = {**CONTEXT, "children": ["Ola", "Kari", "Per"]}
    one = {**CONTEXT, "children": ["Ola"]}
    assert (
        "Gjelder: Ola, Kari og Per"
        in renderer.render(message(), delivery("inapp", "nb", three)).text
    )
    assert (
        "Concerns: Ola, Kari, and Per"
        in renderer.render(message(), delivery("inapp", "en", three)).text
    )
    assert "Gjeld: Ola\n" in renderer.render(message(), delivery("inapp", "nn", one)).text


def test_no_concerns_line_without_children(renderer: Renderer) -> None:
    out = renderer.render(message(), delivery("email", "nb", {"unit": "Solvang skole"}))
    assert "Gjelder" not in out.text
    assert "Melding fra Solvang skole" in out.text


def test_emergency_marker(renderer: Renderer) -> None:
    urgent = message(subject="Skolen er stengt", category=Category.emergency)
    assert renderer.render(urgent, delivery("email", "nb")).subject == "VIKTIG: Skolen er stengt"
    assert renderer.render(urgent, delivery("sms", "nn")).subject == "VIKTIG: Skolen er stengt"
    assert renderer.render(urgent, delivery("push", "en")).subject == "IMPORTANT: Skolen er stengt"
    assert "VIKTIG" not in renderer.render(message(), delivery("email", "nb")).subject


def test_subject_is_one_line(renderer: Renderer) -> None:
    out = renderer.render(message(subject="Tur\r\ni morgen"), delivery("email"))
    assert out.subject == "Tur i morgen"


def test_only_the_recipients_own_context_is_rendered(renderer: Renderer) -> None:
    """The message's audience names two children; this delivery concerns only Kari."""
    own = {"children": ["Kari"], "unit": "Solvang skole", "sender": None}
    for channel in ("email", "inapp", "sms", "push"):
        out = renderer.render(message(), delivery(channel, "nb", own))
        everything = " ".join(filter(None, [out.subject, out.text, out.html, out.short]))
        assert "Kari" in everything or channel == "sms"  # sms short has no names
        assert "Ola" not in everything
        assert "None" not in everything


def test_html_escapes_the_staff_text(renderer: Renderer) -> None:
    body = 'Se <script>alert("x")</script> & <b>fet</b>\nny linje'
    out = renderer.render(message(subject="<i>Emne</i>", body=body), delivery("email"))
    html = out.html or ""
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;fet&lt;/b&gt;" in html
    assert "<br>ny linje" in html
    assert "<title>&lt;i&gt;Emne&lt;/i&gt;</title>" in html
    # plain text parts are not escaped
    assert "<script>" in out.text


FROM = "Rektor Hansen, Solvang skole"  # the sender line of an SMS


def test_sms_text_and_short(renderer: Renderer) -> None:
    out = renderer.render(message(), delivery("sms", "nb"))
    # The sender first, on the subject's line; no settings line (it is on the linked page).
    assert out.text.startswith(f"{FROM} (Ola og Kari): Foreldremøte\nVelkommen")
    assert "varslingsinnstillingene" not in out.text
    assert out.html is None
    assert (
        out.short == f"Rektor Hansen, Solvang skole: Foreldremøte\nLes meldingen i appen: {URL}/app"
    )


@pytest.mark.parametrize("language", ["nb", "nn", "en"])
def test_sms_wrapper_stays_gsm7(renderer: Renderer, language: str) -> None:
    urgent = message(subject="Stengt", body="Skolen er stengt i dag.", category=Category.emergency)
    out = renderer.render(urgent, delivery("sms", language))
    assert encoding(out.text) == "GSM-7", out.text
    assert encoding(out.short or "") == "GSM-7", out.short


def test_norwegian_and_english_texts_are_gsm7() -> None:
    texts = load_locales()["texts"]
    for language in ("nb", "nn", "en"):
        for value in texts[language].values():
            for form in value.forms if isinstance(value, PluralText) else [value]:
                assert encoding(form) == "GSM-7", form
    for template in (TEMPLATES / "sms").iterdir():
        assert encoding(template.read_text(encoding="utf-8")) == "GSM-7", template.name


def test_push_short_is_cut_on_a_word_boundary(renderer: Renderer) -> None:
    long_body = " ".join(["Foreldremøtet"] + ["blir flyttet til gymsalen"] * 20)
    out = renderer.render(message(body=long_body), delivery("push", "nb"))
    short = out.short or ""
    # the sender first (issue 16: every message names its sender), then the text
    assert short.startswith("Rektor Hansen, Solvang skole: Gjelder: Ola og Kari. Foreldremøtet")
    assert len(short) <= PUSH_BODY_MAX
    assert short.endswith("…")
    assert ("Rektor Hansen, Solvang skole: Gjelder: Ola og Kari. " + long_body).startswith(
        short[:-1]
    )
    assert short[:-1].split()[-1] in {"blir", "flyttet", "til", "gymsalen"}
    assert out.subject == "Foreldremøte"


def test_push_short_is_untouched_when_it_fits(renderer: Renderer) -> None:
    out = renderer.render(message(body="Kort\nbeskjed"), delivery("push", "en"))
    assert out.short == "Rektor Hansen, Solvang skole: Concerns: Ola and Kari. Kort beskjed"


def test_shorten_edges() -> None:
    assert shorten("a b c", 5) == "a b c"
    assert shorten("ord " * 10, 10) == "ord ord…"
    assert len(shorten("x" * 300, 178)) == 178
    assert shorten("x" * 300, 178).endswith("…")


def test_inapp_has_subject_and_text_only(renderer: Renderer) -> None:
    out = renderer.render(message(), delivery("inapp", "nb"))
    assert out.text == (
        "Gjelder: Ola og Kari\n\nVelkommen til foreldremøte tirsdag kl. 18.\n\nHilsen skolen"
    )
    assert out.html is None and out.short is None


def test_unknown_channel_is_a_config_error(renderer: Renderer) -> None:
    with pytest.raises(ConfigError):
        renderer.render(message(), delivery("fax"))


def test_missing_templates_fail_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Renderer(tmp_path, URL)


# --------------------------------------------------------------------------- read links

LINK = f"{URL}/r/" + "A" * 43 + "_-" + "b" * 19


@pytest.fixture(scope="module")
def linking_renderer() -> Renderer:
    def link_for(delivery: Delivery) -> str:
        assert delivery.channel in ("email", "sms")  # push and in-app never ask
        return LINK

    return Renderer(TEMPLATES, URL, link_for=link_for)


@pytest.mark.parametrize(
    ("language", "label"),
    [("nb", "Les meldingen"), ("nn", "Les meldinga"), ("en", "Read the message")],
)
def test_email_carries_the_read_link(linking_renderer: Renderer, language: str, label: str) -> None:
    out = linking_renderer.render(message(), delivery("email", language))
    assert f"{label}: {LINK}\n" in out.text
    # after the staff text, before the footer
    assert out.text.index("Hilsen skolen") < out.text.index(LINK) < out.text.index("-- \n")
    assert f'<a href="{LINK}"' in (out.html or "")
    assert f">{label}</a>" in (out.html or "")


@pytest.mark.parametrize(
    ("language", "label"),
    [("nb", "Les meldingen"), ("nn", "Les meldinga"), ("en", "Read the message")],
)
def test_sms_carries_the_read_link_also_in_the_short_fallback(
    linking_renderer: Renderer, language: str, label: str
) -> None:
    urgent = message(subject="Stengt", body="Skolen er stengt i dag.", category=Category.emergency)
    out = linking_renderer.render(urgent, delivery("sms", language))
    # The bare link, last: no label and no settings line in an SMS (tests/test_sms_budget.py).
    assert out.text.endswith(f"\n{LINK}")
    assert out.short is not None
    assert out.short.endswith(f"\n{label}: {LINK}")
    assert f"{URL}/app" not in out.short
    assert encoding(out.text) == "GSM-7", out.text
    assert encoding(out.short) == "GSM-7", out.short


def test_push_and_inapp_have_no_read_link(linking_renderer: Renderer) -> None:
    for channel in ("push", "inapp"):
        out = linking_renderer.render(message(), delivery(channel, "nb"))
        everything = " ".join(filter(None, [out.text, out.html, out.short]))
        assert "/r/" not in everything


def test_no_link_when_link_for_gives_none() -> None:
    renderer = Renderer(TEMPLATES, URL, link_for=lambda delivery: None)
    email = renderer.render(message(), delivery("email", "nb"))
    sms = renderer.render(message(), delivery("sms", "nb"))
    assert "Les meldingen:" not in email.text and "/r/" not in (email.html or "")
    assert "Les meldingen:" not in sms.text
    assert (
        sms.short == f"Rektor Hansen, Solvang skole: Foreldremøte\nLes meldingen i appen: {URL}/app"
    )


def test_read_link_in_html_is_escaped() -> None:
    renderer = Renderer(TEMPLATES, URL, link_for=lambda delivery: 'https://x.example/r/a"b<c')
    html = renderer.render(message(), delivery("email", "nb")).html or ""
    assert 'href="https://x.example/r/a&#34;b&lt;c"' in html
