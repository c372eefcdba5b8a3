"""Issue 17: our texts in twelve languages, one gettext catalogue each
(templates/locale/<lang>.po, gateway/locales.py). Every catalogue parses, has every key
of the Bokmål one and uses exactly its placeholders; a municipality's correction in
LOCALE_DIR wins entry by entry and is checked at startup; a language we lack falls back
to Bokmål and says so; SMS in a Latin script is not made UCS-2 by our letters alone."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.plurals import get_plural

from channels.gsm import count_segments, encoding, fold
from gateway.constants import SUPPORTED_LANGUAGES
from gateway.errors import ConfigError
from gateway.locales import (
    BUILTIN_LOCALE_DIR,
    FSI,
    PDI,
    RTL_LANGUAGES,
    direction,
    is_fallback,
    isolate,
    load,
    placeholders,
    read_catalogue,
    resolve_language,
)
from gateway.models import Audience, Category, Delivery, Message, Role
from gateway.render import Renderer
from gateway.service import TEMPLATES_DIR
from scripts import locale_keys

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
URL = "https://varsel.example.no"
LANGUAGES = ["nb", "nn", "se", "en", "pl", "lt", "so", "ar", "ti", "uk", "ur", "fa"]


def entries(lang: str) -> dict[tuple[str, str], str]:
    """(context, key) -> text; a plural's forms joined by " | "."""
    catalogue = read_catalogue(BUILTIN_LOCALE_DIR / f"{lang}.po", lang)
    found = {}
    for m in catalogue:
        if not m.id:
            continue
        key = m.id if isinstance(m.id, str) else m.id[0]
        text = m.string if isinstance(m.string, str) else " | ".join(m.string)
        found[(str(m.context), key)] = text
    return found


def test_the_twelve_languages_are_supported() -> None:
    assert sorted(SUPPORTED_LANGUAGES) == sorted(LANGUAGES)
    assert sorted(p.stem for p in BUILTIN_LOCALE_DIR.glob("*.po")) == sorted(LANGUAGES)
    assert {"ar", "ur", "fa"} == RTL_LANGUAGES


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_catalogue_parses_and_names_its_language(lang: str) -> None:
    catalogue = read_catalogue(BUILTIN_LOCALE_DIR / f"{lang}.po", lang)
    assert str(catalogue.locale) == lang
    assert not [m.id for m in catalogue if m.id and m.fuzzy]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_key_exists_and_every_placeholder_is_used(lang: str) -> None:
    nb = entries("nb")
    texts = entries(lang)
    assert set(texts) == set(nb), set(texts) ^ set(nb)
    for key, text in texts.items():
        assert text, f"{lang} {key} is empty"
        if " | " in nb[key]:  # a plural: every form filled, the last (other) uses {count}
            forms = text.split(" | ")
            assert len(forms) == get_plural(lang).num_plurals, (lang, key)
            assert all(forms), (lang, key)
            assert placeholders(forms[-1]) == placeholders(nb[key].split(" | ")[-1])
            continue
        assert placeholders(text) == placeholders(nb[key]), (lang, key, text)
        # a fragment that starts with a space in Bokmål is glued onto a sentence
        assert text == text.rstrip(), (lang, key)


def test_every_surface_has_its_texts_in_every_language() -> None:
    areas = load()
    assert set(areas) == {"texts", "pages", "unsubscribe", "parent"}
    for texts in areas.values():
        assert sorted(texts) == sorted(LANGUAGES)
    assert areas["parent"]["ar"]["categories"]["absence"] == "إشعارات الغياب"


@pytest.mark.parametrize(
    ("tag", "lang", "fallback"),
    [
        ("ar", "ar", False),
        ("ar-SA", "ar", False),
        ("sme", "se", False),
        ("pl_PL", "pl", False),
        ("de", "nb", True),
        ("zz-Latn", "nb", True),
        ("", "nb", False),
        (None, "nb", False),
    ],
)
def test_resolution_and_fallback(tag: str | None, lang: str, fallback: bool) -> None:
    assert resolve_language(tag) == lang
    assert is_fallback(tag) is fallback


def test_direction_and_isolates() -> None:
    assert [direction(lang) for lang in ("ar", "ur", "fa", "nb", "se")] == [
        "rtl",
        "rtl",
        "rtl",
        "ltr",
        "ltr",
    ]
    assert isolate("Ola", "ar") == f"{FSI}Ola{PDI}"
    assert isolate("Ola", "nb") == "Ola"  # an isolate would make a Latin SMS UCS-2


@pytest.mark.parametrize(
    ("lang", "counts"),
    [
        ("nb", {1: "1 ulest melding", 2: "2 uleste meldinger"}),
        ("en", {1: "1 unread message", 21: "21 unread messages"}),
        (
            "pl",
            {
                1: "1 nieprzeczytana wiadomość",
                3: "3 nieprzeczytane wiadomości",
                5: "5 nieprzeczytanych wiadomości",
                22: "22 nieprzeczytane wiadomości",
            },
        ),
        (
            "uk",
            {
                21: "21 непрочитане повідомлення",
                4: "4 непрочитані повідомлення",
                11: "11 непрочитаних повідомлень",
            },
        ),
        (
            "ar",
            {
                1: "رسالة واحدة غير مقروءة",
                2: "رسالتان غير مقروءتين",
                3: "3 رسائل غير مقروءة",
                11: "11 رسالة غير مقروءة",
            },
        ),
        ("lt", {1: "1 neperskaitytas pranešimas", 12: "12 neperskaitytų pranešimų"}),
    ],
)
def test_plural_forms_follow_babels_rules(lang: str, counts: dict[int, str]) -> None:
    unread = load()["parent"][lang]["unread_count"]
    for count, text in counts.items():
        assert unread.format(count=count) == text


# --------------------------------------------------------------- a municipality's correction


def write_po(path: Path, lang: str, entries: dict[tuple[str, str], str]) -> None:
    header = '"Content-Type: text/plain; charset=utf-8\\n"\n'
    lines = [f'msgid ""\nmsgstr ""\n"Language: {lang}\\n"\n{header}']
    for (context, key), text in entries.items():
        lines.append(f'\nmsgctxt "{context}"\nmsgid "{key}"\nmsgstr "{text}"\n')
    path.write_text("".join(lines), encoding="utf-8")


def message(body: str = "Velkommen til foreldremøte torsdag kl. 18.") -> Message:
    return Message(
        id="m1",
        tenant_id="t1",
        event_id="e1",
        event_type="message.created",
        body_hash="h",
        category=Category.general,
        subject="Foreldremøte",
        body=body,
        audience=Audience(children=["c1"]),
        created_at=NOW,
    )


def delivery(channel: str, language: str, **context: Any) -> Delivery:
    return Delivery(
        id="d1",
        tenant_id="t1",
        message_id="m1",
        recipient_id="p1",
        recipient_role=Role.guardian,
        channel=channel,
        address="+4791000001",
        language=language,
        child_ids=["c1"],
        context={
            "children": ["Ola"],
            "unit": "Solvang skole",
            "sender": "Rektor Hansen",
            **context,
        },
        created_at=NOW,
        updated_at=NOW,
    )


def test_a_correction_in_locale_dir_wins_entry_by_entry(tmp_path: Path) -> None:
    write_po(tmp_path / "ar.po", "ar", {("texts", "header"): "رسالة جديدة من {sender}"})
    areas = load(tmp_path)
    assert areas["texts"]["ar"]["header"] == "رسالة جديدة من {sender}"
    assert areas["texts"]["ar"]["concerns"] == "بخصوص: {children}"  # the rest as built in
    assert areas["texts"]["nb"]["header"] == "Melding fra {sender}"
    renderer = Renderer(TEMPLATES_DIR, URL, locale_dir=tmp_path)
    out = renderer.render(message(), delivery("email", "ar"))
    assert "رسالة جديدة من <bdi>Rektor Hansen, Solvang skole</bdi>" in (out.html or "")


def test_a_correction_with_an_unknown_placeholder_stops_startup(tmp_path: Path) -> None:
    write_po(tmp_path / "pl.po", "pl", {("texts", "header"): "Od {nadawca}"})
    with pytest.raises(
        ConfigError, match=r"pl.po: texts header uses unknown placeholders: nadawca"
    ):
        load(tmp_path)


def test_a_broken_po_file_stops_startup(tmp_path: Path) -> None:
    (tmp_path / "uk.po").write_text('msgid "header"\nmsgstr "unterminated\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"uk.po"):
        load(tmp_path)


# --------------------------------------------------------------------------------- SMS


@pytest.mark.parametrize("lang", ["pl", "lt", "se", "so", "nb", "nn", "en"])
def test_latin_sms_stays_gsm7_when_the_staff_text_is(lang: str) -> None:
    renderer = Renderer(TEMPLATES_DIR, URL, link_for=lambda d: f"{URL}/r/" + "x" * 64)
    out = renderer.render(message(), delivery("sms", lang))
    assert encoding(out.text) == "GSM-7", out.text
    assert encoding(out.short or "") == "GSM-7", out.short
    assert FSI not in out.text


def test_a_name_outside_gsm7_keeps_its_letters_and_the_wrapper_its_own() -> None:
    from tests.test_attachment_texts import FILES

    renderer = Renderer(TEMPLATES_DIR, URL, link_for=lambda d: f"{URL}/r/tok")
    out = renderer.render(message(), delivery("sms", "pl", children=["Żaneta"]), FILES)
    assert encoding(out.text) == "UCS-2"  # the name makes it so: nothing to gain by folding
    assert "(Żaneta)" in out.text
    assert "2 załączniki: " in out.text  # our own text keeps its letters too


def test_folding_only_touches_latin_letters() -> None:
    assert fold("Wiadomość od: {sender}") == "Wiadomosc od: {sender}"
    assert fold("Dieđáhus ŋ ŧ") == "Diedahus n t"
    assert fold("Fravær på Årstad") == "Fravær på Årstad"  # GSM-7 has æ ø å
    assert fold("Повідомлення") == "Повідомлення"
    assert fold("رسالة") == "رسالة"


@pytest.mark.parametrize("lang", ["ar", "ur", "fa"])
def test_right_to_left_sms_isolates_names_and_links(lang: str) -> None:
    renderer = Renderer(TEMPLATES_DIR, URL, link_for=lambda d: f"{URL}/r/tok")
    out = renderer.render(message(), delivery("sms", lang))
    assert f"{FSI}Ola{PDI}" in out.text
    assert f"{FSI}{URL}/r/tok{PDI}" in out.text
    assert encoding(out.text) == "UCS-2"
    assert count_segments(out.text) == len(out.text) // 67 + (1 if len(out.text) % 67 else 0)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_language_renders_every_channel(lang: str) -> None:
    renderer = Renderer(TEMPLATES_DIR, URL, link_for=lambda d: f"{URL}/r/tok")
    for channel in ("email", "sms", "push", "inapp"):
        out = renderer.render(message(), delivery(channel, lang))
        assert out.language == lang
        assert "Velkommen til foreldremøte" in out.text
        assert "Ola" in out.text
        assert not re.search(r"\{[a-z_]+\}", out.text), out.text  # every placeholder filled
    html = renderer.render(message(), delivery("email", lang)).html or ""
    assert f'<html lang="{lang}" dir="{direction(lang)}">' in html


def test_keys_added_the_old_way_can_be_moved_into_the_catalogues(tmp_path: Path) -> None:
    """scripts/locale_keys.py: a branch that added a key to the old texts.toml."""
    locale = tmp_path / "locale"
    shutil.copytree(BUILTIN_LOCALE_DIR, locale)
    toml = tmp_path / "texts.toml"
    toml.write_text(
        '[nb]\nheader = "Melding fra {sender}"\nreminder_due = "Frist: {date}"\n'
        '[nn]\nreminder_due = "Frist: {date}"\n'
        '[en]\nreminder_due = "Due: {date}"\n',
        encoding="utf-8",
    )
    assert locale_keys.add(toml, "texts", locale) == ["reminder_due"]
    assert locale_keys.add(toml, "texts", locale) == []  # already there: left alone
    texts = load(None, locale)["texts"]
    assert texts["nb"]["reminder_due"] == "Frist: {date}"
    assert texts["en"]["reminder_due"] == "Due: {date}"
    assert texts["ar"]["reminder_due"] == "Due: {date}"  # until a translator writes it
    assert "UNTRANSLATED" in (locale / "ar.po").read_text(encoding="utf-8")


def test_the_email_title_carries_no_markup() -> None:
    """<title> is raw text: a <bdi> there would show as letters in the window title."""
    renderer = Renderer(TEMPLATES_DIR, URL)
    urgent = message().model_copy(update={"category": Category.emergency})
    for lang in ("ar", "nb"):
        html = renderer.render(urgent, delivery("email", lang)).html or ""
        title = html.split("<title>")[1].split("</title>")[0]
        assert "<" not in title and "&lt;" not in title, title
        assert "Foreldremøte" in title


def test_isolates_typed_by_staff_never_unbalance_the_html() -> None:
    renderer = Renderer(TEMPLATES_DIR, URL)
    sneaky = message().model_copy(update={"subject": f"Møte {FSI}i dag", "body": f"Hei {PDI}"})
    for lang in ("ar", "nb"):
        html = renderer.render(sneaky, delivery("email", lang, children=[f"O{PDI}la"])).html
        assert html is not None
        assert html.count("<bdi>") == html.count("</bdi>") > 0


def test_the_catalogues_come_with_templates_dir(tmp_path: Path) -> None:
    """The Docker image copies templates/ apart from the installed package and sets
    TEMPLATES_DIR: the catalogues are read from there, not from the package's path."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    nb = templates / "locale" / "nb.po"
    nb.write_text(
        nb.read_text(encoding="utf-8").replace(
            'msgstr "Melding fra {sender}"', 'msgstr "Beskjed fra {sender}"'
        ),
        encoding="utf-8",
    )
    out = Renderer(templates, URL).render(message(), delivery("email", "nb"))
    assert "Beskjed fra " in out.text and "Melding fra " not in out.text


def test_attachments_are_counted_by_plural_rule_and_folded_in_sms() -> None:
    from tests.test_attachment_texts import FILES

    renderer = Renderer(TEMPLATES_DIR, URL, link_for=lambda d: f"{URL}/r/tok")
    sms = renderer.render(message(), delivery("sms", "pl"), FILES).text
    assert "2 zalaczniki: " in sms  # folded: the staff text is GSM-7
    push = renderer.render(message(), delivery("push", "pl"), FILES).short or ""
    assert push.startswith(
        "Rektor Hansen, Solvang skole: 2 załączniki. "
    )  # push is not SMS: nothing to fold
    arabic = renderer.render(message(), delivery("sms", "ar"), FILES[:1]).text
    assert "مرفق واحد" in arabic  # Arabic has a form of its own for one
