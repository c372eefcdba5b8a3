"""Our own texts in every language we have: one gettext catalogue (.po) per language.

``templates/locale/<lang>.po`` holds every wrapper text of one language. An entry's
``msgctxt`` names where the text is used (``texts``: email/SMS/push/in-app wrapper;
``pages``: the read page; ``unsubscribe``: the unsubscribe page; ``parent``: the
parent pages), its ``msgid`` is the key (a dot for a nested table:
``categories.general``) and its ``msgstr`` the text. Placeholders are Python format
fields (``{sender}``) and must match the Bokmål entry's.

A municipality corrects a text without touching code: copy the language's ``.po``
into the folder ``LOCALE_DIR`` names and edit the ``msgstr``; an entry there wins
over the built-in one, entry by entry (the file may hold only the corrected ones).
The catalogues are read (and checked) once at startup: a broken file, or a correction
with an unknown placeholder, stops startup with the file and key named.

The language of a recipient is resolved by :func:`resolve_language`; a language we
have no catalogue for falls back to Bokmål, and :func:`is_fallback` says so (the
status API reports it: never silent).
"""

from __future__ import annotations

import functools
import gettext
import io
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babel import Locale
from babel.messages.catalog import Catalog
from babel.messages.plurals import get_plural
from babel.messages.pofile import PoFileError, read_po
from babel.numbers import format_decimal
from markupsafe import Markup, escape

from gateway.constants import DEFAULT_LANGUAGE, SUPPORTED_LANGUAGES
from gateway.errors import ConfigError

BUILTIN_LOCALE_DIR = Path(__file__).resolve().parents[1] / "templates" / "locale"
# Scripts written right to left: pages and email get dir="rtl", plain text isolates.
RTL_LANGUAGES = frozenset({"ar", "ur", "fa"})
# Unicode isolates for plain text (FSI ... PDI): a name or number keeps its own direction.
FSI = "\u2068"
PDI = "\u2069"

# Language subtags (ISO 639-1 and -2, and common aliases) -> the catalogue's code.
_ALIASES = {
    "no": "nb",
    "nob": "nb",
    "nor": "nb",
    "nno": "nn",
    "sme": "se",
    "eng": "en",
    "pol": "pl",
    "lit": "lt",
    "som": "so",
    "ara": "ar",
    "tir": "ti",
    "ukr": "uk",
    "urd": "ur",
    "fas": "fa",
    "per": "fa",
    "pes": "fa",  # Iranian Persian
    "prs": "fa",  # Dari: written the same way
}

# Texts of one area: language -> nested texts (a dict per TOML-like table).
Texts = dict[str, dict[str, Any]]


def catalogue_dir(templates_dir: Path | None) -> Path:
    """Where the built-in catalogues are: ``<TEMPLATES_DIR>/locale`` (the Docker image
    copies the templates apart from the installed package), else the source tree's."""
    if templates_dir is not None and (templates_dir / "locale").is_dir():
        return templates_dir / "locale"
    return BUILTIN_LOCALE_DIR


def primary_subtag(tag: str | None) -> str:
    """``"nb-NO"`` -> ``"nb"``; the alias of a three-letter code; "" for none."""
    if not tag:
        return ""
    primary = re.split(r"[-_]", tag.strip().lower(), maxsplit=1)[0]
    return _ALIASES.get(primary, primary)


def resolve_language(tag: str | None, supported: tuple[str, ...] = SUPPORTED_LANGUAGES) -> str:
    """The language we write to someone who asked for ``tag``: its catalogue, else nb.

    "no", "nb-NO", "nb_NO" and "nob" are Bokmål; "nn-NO" Nynorsk; "ar-EG" Arabic.
    """
    primary = primary_subtag(tag)
    return primary if primary in supported else DEFAULT_LANGUAGE


def is_fallback(tag: str | None) -> bool:
    """True when ``tag`` names a language we have no texts for (it gets Bokmål)."""
    return bool(tag) and primary_subtag(tag) not in SUPPORTED_LANGUAGES


def is_rtl(lang: str) -> bool:
    return lang in RTL_LANGUAGES


def direction(lang: str) -> str:
    """``rtl`` or ``ltr``: the ``dir`` attribute of a page or email in ``lang``."""
    return "rtl" if is_rtl(lang) else "ltr"


def isolate(value: str, lang: str) -> str:
    """A name, number or link inside plain text in ``lang``: wrapped in FSI/PDI for a
    right-to-left language (so "Ola" or "07:45" keeps its own direction), untouched
    otherwise (an isolate would make an SMS in a Latin script UCS-2 for nothing)."""
    return f"{FSI}{value}{PDI}" if value and is_rtl(lang) else value


def placeholders(text: str) -> set[str]:
    """The format fields of ``text``: ``"Fra {sender}"`` -> ``{"sender"}``."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError as exc:  # an unmatched brace
        raise ValueError(f"broken placeholder in {text!r}") from exc


# A line of a .po file: a comment, a keyword with its quoted string, or a continued string.
_PO_LINE = re.compile(r'^(#.*|(msgctxt|msgid|msgid_plural|msgstr(\[\d+\])?)\s+".*"|".*")$')


def read_catalogue(path: Path, lang: str) -> Catalog:
    """One .po file, parsed strictly: a broken line (an unclosed quote, a stray word)
    names the file and line, where Babel alone would quietly cut the text."""
    try:
        raw = path.read_bytes()
        for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
            if line.strip() and not _PO_LINE.match(line.strip()):
                raise ValueError(f"line {number} is not valid .po syntax")
        return read_po(io.BytesIO(raw), locale=lang, abort_invalid=True)
    except (OSError, PoFileError, ValueError) as exc:
        raise ConfigError(f"{path.name} is missing or not a valid .po file: {exc}") from exc


@dataclass(frozen=True)
class PluralText:
    """A text with one form per plural category of its language (``msgid_plural``):
    ``t.unread_count.format(count=3)`` picks the form by Babel's plural rule for the
    language ("3 nieprzeczytane wiadomości", "5 nieprzeczytanych wiadomości") and
    writes the number the language's way."""

    forms: tuple[str, ...]
    lang: str

    def format(self, count: int) -> str:
        index = _plural_index(self.lang)(count)
        form = self.forms[min(index, len(self.forms) - 1)]
        return form.format(count=format_decimal(count, locale=self.lang))

    def placeholders(self) -> set[str]:
        return set().union(*(placeholders(form) for form in self.forms))


@functools.lru_cache(maxsize=32)
def _plural_index(lang: str) -> Callable[[int], int]:
    """The gettext plural formula of ``lang`` (from Babel's table) as a function."""
    return gettext.c2py(get_plural(lang).plural_expr)


Text = str | PluralText
Entries = dict[tuple[str, str], Text]  # (context, key) -> text


def _entries(catalogue: Catalog, lang: str) -> Entries:
    """(context, key) -> text of the translated, non-fuzzy entries."""
    out: Entries = {}
    for message in catalogue:
        if not message.id or message.fuzzy or not message.string:
            continue
        key = message.id if isinstance(message.id, str) else str(message.id[0])
        if isinstance(message.string, str):
            out[(message.context or "", key)] = message.string
        elif all(message.string):
            out[(message.context or "", key)] = PluralText(tuple(message.string), lang)
    return out


def _uses(text: Text) -> set[str]:
    return text.placeholders() if isinstance(text, PluralText) else placeholders(text)


def _nest(entries: dict[str, Text]) -> dict[str, Any]:
    """``{"categories.general": x}`` -> ``{"categories": {"general": x}}``."""
    out: dict[str, Any] = {}
    for key, text in entries.items():
        node = out
        *tables, leaf = key.split(".")
        for table in tables:
            node = node.setdefault(table, {})
        node[leaf] = text
    return out


@functools.lru_cache(maxsize=8)
def load(locale_dir: Path | None = None, builtin: Path = BUILTIN_LOCALE_DIR) -> dict[str, Texts]:
    """Every area's texts: ``load()["texts"]["ar"]["header"]``.

    Built-in catalogues first, then the entries of ``locale_dir/<lang>.po`` over them.
    A key a language lacks falls back to the Bokmål text (the completeness test keeps
    the built-in catalogues whole; a municipality's file may hold a few entries).
    """
    merged: dict[str, Entries] = {}
    for lang in SUPPORTED_LANGUAGES:
        entries = _entries(read_catalogue(builtin / f"{lang}.po", lang), lang)
        override = locale_dir / f"{lang}.po" if locale_dir is not None else None
        if override is not None and override.is_file():
            entries |= _entries(read_catalogue(override, lang), lang)
        merged[lang] = entries
    base = merged[DEFAULT_LANGUAGE]
    for lang, entries in merged.items():
        _check(lang, entries, base)
    areas: dict[str, Texts] = {}
    for lang in SUPPORTED_LANGUAGES:
        entries = base | merged[lang]
        for area in {context for context, _ in entries}:
            flat = {key: text for (context, key), text in entries.items() if context == area}
            areas.setdefault(area, {})[lang] = _nest(flat)
    return areas


def _check(lang: str, entries: Entries, base: Entries) -> None:
    """A text may only use the placeholders its Bokmål text has (else rendering fails)."""
    for (context, key), text in entries.items():
        try:
            used = _uses(text)
            allowed = _uses(base.get((context, key), text))
        except ValueError as exc:
            raise ConfigError(f"{lang}.po: {context} {key}: {exc}") from exc
        unknown = used - allowed
        if unknown:
            names = ", ".join(sorted(unknown))
            raise ConfigError(f"{lang}.po: {context} {key} uses unknown placeholders: {names}")


@functools.lru_cache(maxsize=256)
def language_name(tag: str, in_lang: str) -> str:
    """The name of the language ``tag`` names, in ``in_lang`` ("de" in nb: "tysk"); the
    tag itself when Babel does not know it."""
    name = Locale.parse(in_lang).languages.get(primary_subtag(tag))
    return str(name) if name else tag


@functools.lru_cache(maxsize=1)
def language_names() -> dict[str, str]:
    """Each language's name in itself (for a language picker): nb -> "Norsk bokmål"."""
    names = {}
    for lang in SUPPORTED_LANGUAGES:
        name = Locale.parse(lang).get_display_name(lang) or lang
        names[lang] = name[:1].upper() + name[1:]
    return names


def fill(text: str, **values: Any) -> Markup:
    """Jinja filter for pages: our ``text`` escaped, each value escaped inside ``<bdi>``
    (``{{ t.from | fill(sender=name) }}``): a name or number keeps its own direction.
    A value that is already markup (a list of isolated names) goes in as it is."""
    wrapped = {
        key: value if isinstance(value, Markup) else Markup("<bdi>{}</bdi>").format(value)
        for key, value in values.items()
    }
    return escape(text).format(**wrapped)
