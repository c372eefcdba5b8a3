"""How each channel tells of attachments (issue 16): the email lists them (carried or
linked), an SMS and a push notification say how many there are and stay short; and
settings that cannot work stop the start with a message naming them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from channels.gsm import encoding
from gateway.models import Attachment, Delivery
from gateway.render import Renderer
from gateway.settings import load_settings
from tests.test_render import NOW, TEMPLATES, URL, delivery, message

READ = f"{URL}/r/tok"


def attachment(attachment_id: str, name: str, size: int) -> Attachment:
    return Attachment(
        id=attachment_id,
        tenant_id="t1",
        name=name,
        content_type="application/pdf",
        size=size,
        sha256="0" * 64,
        created_at=NOW,
        message_id="m1",
    )


FILES = [attachment("a1", "Lapp.pdf", 40_000), attachment("a2", "Bilder.pdf", 5_000_000)]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    def link_for(_: Delivery) -> str:
        return READ

    return Renderer(TEMPLATES, URL, link_for=link_for, email_max_bytes=1_000_000)


@pytest.mark.parametrize(
    ("language", "attached"),
    [("nb", "vedlagt denne e-posten"), ("nn", "lagt ved"), ("en", "attached to this email")],
)
def test_email_lists_carried_files_and_links_large_ones(
    renderer: Renderer, language: str, attached: str
) -> None:
    out = renderer.render(message(), delivery("email", language), FILES)
    assert f"- Lapp.pdf (40 kB), {attached}" in out.text
    assert f"- Bilder.pdf (5.0 MB): {READ}/files/a2" in out.text
    assert out.html is not None
    assert f'href="{READ}/files/a2"' in out.html and f"{READ}/files/a1" not in out.html


@pytest.mark.parametrize(("language", "count"), [("nb", "2 vedlegg"), ("en", "2 attachments")])
def test_sms_and_push_say_how_many_and_stay_gsm7(
    renderer: Renderer, language: str, count: str
) -> None:
    short = message(subject="Tur", body="Se lappen.")
    sms = renderer.render(short, delivery("sms", language), FILES)
    # The SMS budget's layout (tests/test_sms_budget.py): the count before the bare link.
    assert sms.text.endswith(f"\n{count}: {READ}")
    assert "Lapp.pdf" not in sms.text  # names stay on the page: the SMS stays short
    assert encoding(sms.text) == "GSM-7"
    push = renderer.render(short, delivery("push", language), FILES)
    assert push.short is not None and push.short.startswith(
        f"Rektor Hansen, Solvang skole: {count}. "
    )


def test_without_files_nothing_changes(renderer: Renderer) -> None:
    assert renderer.render(message(), delivery("sms")) == renderer.render(
        message(), delivery("sms"), []
    )


@pytest.mark.parametrize(
    ("attachments", "problem"),
    [
        ({"max_file_bytes": 5_000_000, "max_message_bytes": 1_000_000}, "max_file_bytes"),
        ({"storage": "s3"}, "s3"),
        (
            {"storage": "s3", "s3": {"bucket": "skolefiler", "access_key_id": "x"}},
            "secret_access_key",
        ),
        ({"max_file_bytes": 10}, "max_file_bytes"),
        ({"storage": "disk"}, "storage"),
    ],
)
def test_bad_settings_stop_the_start(attachments: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        load_settings(attachments=attachments)
    assert problem in str(caught.value)
