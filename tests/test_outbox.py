"""The development outbox: .eml files for email, JSON lines for the other channels."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from datetime import UTC, datetime
from pathlib import Path

from channels.inapp import InAppChannel
from channels.outbox import OutboxChannel, mask_address
from gateway.models import Delivery, DeliveryStatus, Rendered, Role

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
URL = "http://127.0.0.1:8080"


def delivery(n: int, channel: str, address: str, *, target: str = "", **context: str) -> Delivery:
    return Delivery(
        id=f"d{n:03d}",
        tenant_id="t1",
        message_id="m1",
        recipient_id=f"p{n}",
        recipient_role=Role.guardian,
        channel=channel,
        target=target,
        address=address,
        language="nn",
        context=dict(context),
        created_at=NOW,
        updated_at=NOW,
    )


async def test_email_becomes_one_eml_per_delivery(tmp_path: Path) -> None:
    outbox = OutboxChannel("email", tmp_path, URL)
    await outbox.start()
    content = Rendered(
        subject="Tur i morgon",
        text="Gjeld: Kari\n\nHusk matpakke.",
        html='<html lang="nn"><body><p>Husk matpakke.</p></body></html>',
        language="nn",
    )
    first = delivery(1, "email", "ola@example.no")
    receipt = await outbox.send(first, content)
    await outbox.send(first, content)  # a resend replaces the file
    await outbox.send(delivery(2, "email", "kari@example.no", sender="Solvang skule"), content)
    await outbox.aclose()

    assert receipt.status is DeliveryStatus.sent
    assert receipt.provider_id == "outbox:d001"
    assert sorted(p.name for p in (tmp_path / "email").iterdir()) == ["d001.eml", "d002.eml"]
    raw = (tmp_path / "email" / "d001.eml").read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["From"] == "Budbringer <noreply@budbringer.invalid>"
    assert [a.addr_spec for a in message["To"].addresses] == ["ola@example.no"]
    assert message["Cc"] is None and message["Bcc"] is None
    assert message["Message-ID"] == "<d001@budbringer.invalid>"
    assert message["List-Unsubscribe"] == f"<{URL}/preferences>"
    assert message["Content-Language"] == "nn"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    second = email.message_from_bytes(
        (tmp_path / "email" / "d002.eml").read_bytes(), policy=email.policy.default
    )
    assert second["From"].addresses[0].display_name == "Solvang skule"


async def test_other_channels_append_json_lines(tmp_path: Path) -> None:
    sms = OutboxChannel("sms", tmp_path / "out", URL)
    push = OutboxChannel("push", tmp_path / "out", URL)
    content = Rendered(
        subject="Stengt", text="Skulen er stengd.", short="Stengt\nLes i appen", language="nn"
    )
    phones = [f"+479000{n:04d}" for n in range(30)]
    receipts = await asyncio.gather(
        *(sms.send(delivery(n, "sms", phone), content) for n, phone in enumerate(phones))
    )
    await push.send(delivery(99, "push", "fcm-token-abcdefghijkl", target="dev1"), content)

    assert {r.provider_id for r in receipts} == {f"outbox:d{n:03d}" for n in range(30)}
    assert {r.segments for r in receipts} == {1}  # counted as the SMS channel counts them
    long = content.model_copy(update={"text": "Skulen er stengd i dag. " * 10})
    assert (await sms.send(delivery(50, "sms", "+4790009999"), long)).segments == 2
    # past the SMS channel's four segments: the short text goes, as Twilio would get it
    longer = content.model_copy(update={"text": "Skulen er stengd i dag. " * 40})
    assert (await sms.send(delivery(51, "sms", "+4790009998"), longer)).segments == 1
    text = (tmp_path / "out" / "sms.jsonl").read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 32
    assert {line["delivery_id"] for line in lines} == {f"d{n:03d}" for n in (*range(30), 50, 51)}
    assert [line["segments"] for line in lines] == [1] * 30 + [2, 1]
    assert lines[-1]["text"] == "Stengt\nLes i appen"
    for line in lines[:30]:
        assert line["channel"] == "sms"
        assert line["message_id"] == "m1"
        assert line["language"] == "nn"
        assert line["subject"] == "Stengt"
        assert line["text"] == "Skulen er stengd."
        assert line["short"] == "Stengt\nLes i appen"
    for phone in phones:
        assert phone not in text  # masked
    (pushed,) = [json.loads(x) for x in (tmp_path / "out" / "push.jsonl").read_text().splitlines()]
    assert pushed["target"] == "dev1"
    assert pushed["channel"] == "push"
    assert "segments" not in pushed
    assert "abcdefghijkl" not in pushed["address"]


def test_mask_address() -> None:
    assert mask_address("ola.nordmann@example.no") == "o***@example.no"
    assert mask_address("+4790012345") == "+47***45"
    assert mask_address("token-secret") == "toke***"
    assert mask_address(None) is None


async def test_inapp_is_delivered_without_io() -> None:
    inapp = InAppChannel()
    receipt = await inapp.send(delivery(1, "inapp", ""), Rendered(subject="Hei", text="Hei på deg"))
    assert receipt.status is DeliveryStatus.delivered
    assert InAppChannel.name == "inapp"
