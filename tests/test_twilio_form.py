"""The Twilio form body is what ``urllib.parse.urlencode`` makes, byte for byte
(channels/twilio_form.form_body; issue 18)."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from channels.twilio_form import form_body, form_quote

FORM = {
    "To": "+4790012345",
    "From": "Solvang skole",
    "Body": "Hei! Stengt i dag – hent Åse før 12:00. Les: https://x.no/r/AbC-_1~ 100% 😀 a+b&c=d",
    "StatusCallback": "https://gateway.example.no/v1/providers/twilio/status?x=1&y=æ",
}


def test_a_message_form_is_encoded_as_urlencode_does() -> None:
    assert form_body(FORM) == urlencode(FORM).encode("ascii")


@settings(max_examples=2000)
@given(st.dictionaries(st.text(max_size=20), st.text(max_size=400), max_size=5))
def test_any_form_is_encoded_as_urlencode_does(form: dict[str, str]) -> None:
    assert form_body(form) == urlencode(form).encode("ascii")


@given(st.text(max_size=60))
def test_a_status_callback_query_is_quoted_as_urlencode_does(delivery_id: str) -> None:
    assert f"d={form_quote(delivery_id)}" == urlencode({"d": delivery_id})
