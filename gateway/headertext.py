"""Text that ends up in an email header: subjects, person names, unit and sender names.

A header is one line; whatever can end it, or make a reader see something else, must
never get in. Mail readers decode RFC 2047 encoded words (``=?utf-8?q?...?=``), so a
value is judged by what it decodes to: ``=?utf-8?q?x=0D=0ABcc:_a@b?=`` carries a line
break as surely as a raw ``\\r\\n``. The API refuses such text (422 naming the field,
:func:`header_text_problem`); the email channel cleans whatever still arrives
(:func:`header_text`) before it builds a header, so old rows or an import cannot
inject either. Imports nothing of ours, so models and channels can both use it.
"""

from __future__ import annotations

import unicodedata
from email.errors import HeaderParseError
from email.header import decode_header

# Bidirectional embeddings, overrides and isolates: they reorder what a reader sees
# (``moc.elpmaxe@`` shown as ``@example.com``). Zero-width joiners stay: emoji and
# several scripts need them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_MAX_DECODE_ROUNDS = 4


def _unsafe(char: str) -> bool:
    # Cc: C0/C1 controls incl. CR, LF, TAB, NUL, DEL; Zl/Zp: U+2028/U+2029, which
    # str.splitlines (and so some header code) treats as line ends.
    return char in _BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Zl", "Zp")


def _decoded_once(value: str) -> str:
    try:
        parts = decode_header(value)
    except (HeaderParseError, ValueError):  # e.g. broken base64: no reader decodes it
        return value
    text = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            text.append(chunk)
            continue
        try:
            text.append(chunk.decode(charset or "ascii", "replace"))
        except LookupError:  # an unknown charset: read its bytes as Latin-1, as some do
            text.append(chunk.decode("latin-1"))
    return "".join(text)


def decode_encoded_words(value: str) -> str:
    """``value`` with RFC 2047 encoded words decoded, repeatedly, as far as they nest.

    Unknown charsets are read as Latin-1, so a line break hidden in one still shows.
    """
    for _ in range(_MAX_DECODE_ROUNDS):
        if "=?" not in value:
            return value
        decoded = _decoded_once(value)
        if decoded == value:
            return value
        value = decoded
    return value


def header_text_problem(value: str) -> str | None:
    """Why ``value`` cannot stand in a header (None: it can). Never quotes the value."""
    if any(_unsafe(c) for c in value):
        return "control characters (line breaks, tabs, direction overrides) are not allowed"
    decoded = decode_encoded_words(value)
    if decoded != value and any(_unsafe(c) for c in decoded):
        return "an RFC 2047 encoded word in the text decodes to control characters"
    return None


def body_text_problem(value: str) -> str | None:
    """Why ``value`` cannot be the text of a message or an answer (None: it can): a
    direction control would make a link in it read as another (an override before
    "gro.elpmaxe" shows "example.org"), there as in a header. Line breaks and tabs are
    text here (the JSON reader already refuses other control characters)."""
    if any(c in _BIDI_CONTROLS for c in value):
        return "direction controls (U+202A-U+202E, U+2066-U+2069) are not allowed"
    return None


def typed_text(value: str) -> str:
    """What a guardian typed into a form, as it is kept: line breaks as LF, other
    control characters and direction controls left out (a form is not refused for a
    stray character the phone put in)."""
    lines = value.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in lines if c in "\n\t" or not _unsafe(c))


def header_text(value: str) -> str:
    """``value`` made safe for one header line: encoded words decoded, control
    characters removed, runs of white space folded to one space."""
    decoded = decode_encoded_words(value)
    kept = "".join(" " if _unsafe(c) else c for c in decoded)
    return " ".join(kept.split())
