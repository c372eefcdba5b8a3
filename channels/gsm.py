"""SMS encoding and segment counting (3GPP TS 23.038), and GSM-7-safe template text.

A text that uses only the GSM-7 default alphabet (which has æ ø å Æ Ø Å) and
its extension table goes out as GSM-7: 160 septets in a single SMS, 153 per
segment once concatenated (the user data header takes the rest). Extension
characters (€ [ ] { } \\ ~ ^ | and form feed) take two septets, an escape and
the character, and a segment never ends between the two. Any other character
switches the whole text to UCS-2: 70 UTF-16 code units in a single SMS, 67 per
segment, and a surrogate pair (an emoji) is never split either.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# The GSM 03.38 default alphabet, in table order (0x00-0x7F). 0x1B (escape) is left out.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"  # 0x1B, the escape, sits between Ξ and Æ
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# The extension table: each is sent as escape + character, so it costs two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE_GSM7 = 160
SEGMENT_GSM7 = 153
SINGLE_UCS2 = 70
SEGMENT_UCS2 = 67

# Typographic characters our templates may contain that would force UCS-2,
# mapped to GSM-7 look-alikes. Used on OUR template text, never on what staff wrote.
_REPLACEMENTS = str.maketrans(
    {
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\u2010": "-",  # hyphen
        "\u2011": "-",  # non-breaking hyphen
        "\u2212": "-",  # minus sign
        "\u2018": "'",  # left single quotation mark
        "\u2019": "'",  # right single quotation mark / apostrophe
        "\u201a": "'",  # single low-9 quotation mark
        "\u2032": "'",  # prime
        "\u201c": '"',  # left double quotation mark
        "\u201d": '"',  # right double quotation mark
        "\u201e": '"',  # double low-9 quotation mark (Norwegian „ “)
        "\u00ab": '"',  # « (Norwegian quotes)
        "\u00bb": '"',  # »
        "\u2026": "...",  # horizontal ellipsis
        "\u00a0": " ",  # no-break space
        "\u202f": " ",  # narrow no-break space (thousands separator in nb)
        "\u2009": " ",  # thin space
        "\u2007": " ",  # figure space
        "\u200b": "",  # zero-width space
        "\u00ad": "",  # soft hyphen
    }
)


def _septets(char: str) -> int | None:
    """Septets one character takes in GSM-7, or None if GSM-7 cannot carry it."""
    if char in GSM7_BASIC:
        return 1
    if char in GSM7_EXTENSION:
        return 2
    return None


_GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION


def encoding(text: str) -> Encoding:
    """The encoding an SMS with this text is sent in (a set test: every render of an
    SMS asks, so it runs in C rather than a Python loop over the characters)."""
    return "GSM-7" if _GSM7_ALL.issuperset(text) else "UCS-2"


def _units(text: str, enc: Encoding) -> list[int]:
    """The cost of each character: septets in GSM-7, UTF-16 code units in UCS-2."""
    if enc == "GSM-7":
        return [1 if char in GSM7_BASIC else 2 for char in text]
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def split(text: str) -> list[str]:
    """The text cut into the segments a phone receives, as a provider would cut it.

    Escape pairs and surrogate pairs stay in one segment. An empty text is one
    (empty) segment: it is still one SMS.
    """
    enc = encoding(text)
    costs = _units(text, enc)
    single, per_segment = (
        (SINGLE_GSM7, SEGMENT_GSM7) if enc == "GSM-7" else (SINGLE_UCS2, SEGMENT_UCS2)
    )
    if sum(costs) <= single:
        return [text]
    parts: list[str] = []
    start = used = 0
    for index, cost in enumerate(costs):
        if used + cost > per_segment:
            parts.append(text[start:index])
            start, used = index, 0
        used += cost
    parts.append(text[start:])
    return parts


def count_segments(text: str) -> int:
    """How many SMS segments this text is sent as (and billed for).

    Every SMS asks, so the common texts are counted in C: without escape pairs (GSM-7)
    or surrogate pairs (UCS-2) no character can be moved to the next segment, and the
    count is the units divided by the segment size; otherwise :func:`split` cuts it."""
    if encoding(text) == "GSM-7":
        single, per_segment = SINGLE_GSM7, SEGMENT_GSM7
        pairs = sum(map(text.count, GSM7_EXTENSION))
    else:
        single, per_segment = SINGLE_UCS2, SEGMENT_UCS2
        # "surrogatepass": a lone surrogate (JSON allows "\ud800") is one unit, as in
        # _units, rather than an encoding error that fails the send.
        pairs = len(text.encode("utf-16-le", "surrogatepass")) // 2 - len(text)
    units = len(text) + pairs
    if units <= single:
        return 1
    if pairs:
        return len(split(text))
    return -(-units // per_segment)


def sanitize(text: str) -> str:
    """Replace typographic characters that would force UCS-2 with GSM-7 equivalents.

    Meant for our own template text: en/em dashes, curly quotes, ellipsis and
    non-breaking spaces. Everything else is left as it is.
    """
    return text.translate(_REPLACEMENTS)


# Letters without a GSM-7 form that decomposition does not reach (Polish, Sámi, ...).
_FOLD_EXTRA = str.maketrans(
    {"ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ŋ": "n", "Ŋ": "N", "ŧ": "t", "Ŧ": "T", "ı": "i"}
)


def _fold_char(char: str) -> str:
    if _septets(char) is not None:
        return char
    plain = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    plain = plain.translate(_FOLD_EXTRA)
    return plain if plain and all(_septets(c) is not None for c in plain) else char


def fold(text: str) -> str:
    """Our own Latin-script text with its non-GSM-7 letters folded to GSM-7 ones
    ("Wiadomość" -> "Wiadomosc", "Dieđáhus" -> "Diedahus"), after
    :func:`sanitize`. Letters of other scripts (Arabic, Cyrillic, Ge'ez) stay: an SMS
    in them is UCS-2 whatever we do. Never used on what staff or guardians wrote."""
    return "".join(_fold_char(char) for char in sanitize(text).translate(_FOLD_EXTRA))
