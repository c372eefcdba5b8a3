"""Keeps personal names and dates out of machine translation.

``guard`` replaces each protected span (a name from the directory, a date or a time of
day) with an empty ``<x id="N"/>`` tag and escapes the rest as markup; both providers
keep such tags (LibreTranslate with ``format=html``, DeepL with ``tag_handling=xml``),
so a name never reaches the provider at all. ``restore`` puts the spans back; a
translation that lost one is refused (the original goes out rather than a message
without the child's name or the date)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.errors import TranslationRejected

_MONTHS = "januar|februar|mars|april|mai|juni|juli|august|september|oktober|november|desember"
_DATES = (
    r"\d{4}-\d{2}-\d{2}"  # 2026-12-24
    r"|\d{1,2}\.\s?\d{1,2}\.(?:\s?\d{4}|\d{2})?"  # 24.12. / 24.12.2026
    rf"|\d{{1,2}}\.\s?(?:{_MONTHS})(?:\s\d{{4}})?"  # 24. desember 2026
    r"|\d{1,2}[:.]\d{2}"  # 08.30, 8:30
)
_PLACEHOLDER = re.compile(r'<x\s+id="(\d+)"\s*(?:/>|>\s*</x>)')


@dataclass(frozen=True)
class Guarded:
    markup: str
    spans: tuple[str, ...]


def _pattern(names: Iterable[str]) -> re.Pattern[str]:
    words = sorted({n.strip() for n in names if len(n.strip()) >= 2}, key=len, reverse=True)
    alternatives = [re.escape(word) for word in words]
    alternatives.append(_DATES)
    return re.compile(rf"(?<!\w)(?:{'|'.join(alternatives)})(?!\w)", re.IGNORECASE)


def _escape(text: str) -> str:
    # Line breaks as tags too: HTML and XML handling may fold whitespace.
    return html.escape(text, quote=False).replace("\n", "<br/>")


def guard(text: str, names: Iterable[str]) -> Guarded:
    """``text`` as markup with names and dates replaced by placeholders."""
    spans: list[str] = []
    parts: list[str] = []
    last = 0
    for match in _pattern(names).finditer(text):
        parts.append(_escape(text[last : match.start()]))
        parts.append(f'<x id="{len(spans)}"/>')
        spans.append(match.group(0))
        last = match.end()
    parts.append(_escape(text[last:]))
    return Guarded("".join(parts), tuple(spans))


def restore(markup: str, spans: tuple[str, ...]) -> str:
    """The translated markup as text with every protected span put back."""
    seen: set[int] = set()

    def put_back(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if index >= len(spans):
            raise TranslationRejected("a placeholder the text never had", code="bad_answer")
        seen.add(index)
        return "\x00" + str(index) + "\x00"

    marked = _PLACEHOLDER.sub(put_back, markup)
    if len(seen) != len(spans):
        raise TranslationRejected("the translation lost a protected name or date", code="lost_name")
    text = html.unescape(re.sub(r"<br\s*/?>(?:</br>)?", "\n", marked))
    return re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], text)
