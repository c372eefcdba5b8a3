"""GSM-7 / UCS-2 encoding and segment counting (3GPP TS 23.038), and template sanitising."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.gsm import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    count_segments,
    encoding,
    sanitize,
    split,
)

NORWEGIAN = "Hei! Husk foreldremøte på tirsdag kl. 18. Æ, Ø og Å er med. Vennlig hilsen Åsane skole"


def septets(text: str) -> int:
    return sum(2 if char in GSM7_EXTENSION else 1 for char in text)


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_norwegian_letters_stay_gsm7() -> None:
    assert encoding(NORWEGIAN) == "GSM-7"
    assert encoding("æøåÆØÅéÉüÜäÄöÖ") == "GSM-7"
    assert count_segments(NORWEGIAN) == 1


@pytest.mark.parametrize(
    "char",
    ["\U0001f642", "\u2013", "\u2014", "\u201c", "\u2019", "\u2026", "\u00a0", "ç", "ê"],
)
def test_characters_outside_gsm7_switch_to_ucs2(char: str) -> None:
    assert encoding("Hei " + char) == "UCS-2"


def test_single_sms_limits() -> None:
    assert count_segments("a" * 160) == 1
    assert count_segments("a" * 161) == 2
    assert count_segments("ø" * 70 + "\u2013") == 2  # 71 UCS-2 units
    assert count_segments("\u2013" * 70) == 1


def test_concatenated_gsm7_segments_hold_153_septets() -> None:
    assert count_segments("a" * 306) == 2
    assert count_segments("a" * 307) == 3
    assert [len(part) for part in split("a" * 307)] == [153, 153, 1]


def test_concatenated_ucs2_segments_hold_67_units() -> None:
    assert count_segments("\u2013" * 134) == 2
    assert count_segments("\u2013" * 135) == 3


@pytest.mark.parametrize("char", sorted(GSM7_EXTENSION))
def test_extension_characters_count_double(char: str) -> None:
    assert encoding(char) == "GSM-7"
    assert count_segments("a" * 158 + char) == 1  # 160 septets
    assert count_segments("a" * 159 + char) == 2  # 161 septets


def test_euro_after_152_characters_fits_one_sms() -> None:
    # 152 + 2 = 154 septets: still a single SMS (limit 160, no header).
    assert count_segments("a" * 152 + "€") == 1
    # Once concatenated, the escape pair would straddle septets 153/154 of the
    # first segment, so the whole "€" moves to the second one.
    parts = split("a" * 152 + "€" + "b" * 7)  # 161 septets
    assert parts == ["a" * 152, "€" + "b" * 7]
    assert count_segments("a" * 151 + "€" + "b" * 8) == 2
    assert split("a" * 151 + "€" + "b" * 8)[0] == "a" * 151 + "€"  # exactly 153 septets


@pytest.mark.parametrize("char", ["[", "]", "€", "{", "\\"])
def test_escape_pairs_are_never_split(char: str) -> None:
    text = (char + "x") * 200
    for part in split(text):
        assert septets(part) <= 153
    assert "".join(split(text)) == text


def test_surrogate_pairs_are_never_split() -> None:
    text = "a" * 66 + "\U0001f600" + "b" * 10  # the emoji would straddle units 67/68
    parts = split(text)
    assert parts == ["a" * 66, "\U0001f600" + "b" * 10]
    assert utf16_units(parts[0]) == 66


def test_a_lone_surrogate_counts_as_one_unit() -> None:
    # JSON can carry "\ud800" alone; counting it must not raise UnicodeEncodeError.
    assert count_segments("\ud800") == 1
    assert count_segments("ø" * 69 + "\ud800") == 1
    assert count_segments("ø" * 70 + "\ud800") == len(split("ø" * 70 + "\ud800")) == 2


def test_empty_text_is_one_sms() -> None:
    assert count_segments("") == 1


def test_sanitize_makes_template_text_gsm7() -> None:
    template = (
        "Foreldremøte \u2013 husk \u201cmatpakke\u201d og \u2018drikke\u2019\u2026 kl.\u00a018"
    )
    cleaned = sanitize(template)
    assert cleaned == "Foreldremøte - husk \"matpakke\" og 'drikke'... kl. 18"
    assert encoding(template) == "UCS-2"
    assert encoding(cleaned) == "GSM-7"


def test_sanitize_leaves_other_text_alone() -> None:
    assert sanitize(NORWEGIAN) == NORWEGIAN
    assert sanitize("\U0001f642") == "\U0001f642"


gsm_text = st.text(alphabet=sorted(GSM7_BASIC | GSM7_EXTENSION), max_size=700)
any_text = st.text(max_size=400)


@given(gsm_text)
def test_gsm7_segments_match_the_formula(text: str) -> None:
    count = count_segments(text)
    if septets(text) <= 160:
        assert count == 1
    else:
        # at least ceil(septets / 153); at most one more per escape pushed over a boundary
        assert count >= -(-septets(text) // 153)
        assert count <= -(-septets(text) // 152)


@given(any_text)
def test_split_rejoins_and_respects_limits(text: str) -> None:
    parts = split(text)
    assert "".join(parts) == text
    assert len(parts) == count_segments(text)
    if len(parts) > 1:
        limit, measure = (153, septets) if encoding(text) == "GSM-7" else (67, utf16_units)
        assert all(0 < measure(part) <= limit for part in parts)


@given(any_text, st.characters())
def test_segments_never_decrease_as_text_grows(text: str, extra: str) -> None:
    assert count_segments(text + extra) >= count_segments(text)


@given(gsm_text)
def test_sanitize_never_changes_gsm7_text(text: str) -> None:
    assert sanitize(text) == text
