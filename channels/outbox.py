"""Development outbox: stands in for a provider that is not configured, writing files.

Email becomes one ``<directory>/email/<delivery id>.eml`` per delivery (the very
message ``EmailChannel`` would send); any other channel appends one JSON line per
delivery to ``<directory>/<channel>.jsonl``, with the address masked. An SMS counts
its segments as the SMS channel would (with Twilio's default ``max_segments``, as no
Twilio is configured), so the status API's ``sms_segments`` means the same in a demo.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from email.policy import SMTP, SMTPUTF8
from pathlib import Path
from typing import Any, ClassVar

from channels.email import build_email
from channels.sms import choose_text
from gateway.errors import ConfigError
from gateway.models import Delivery, DeliveryStatus, Receipt, Rendered
from gateway.settings import SMS_MAX_SEGMENTS

DEFAULT_SENDER = "Budbringer <noreply@budbringer.invalid>"


def mask_address(address: str | None) -> str | None:
    """Enough of an address to tell two apart in a demo, not enough to contact anyone."""
    if not address:
        return None
    if "@" in address:
        local, _, domain = address.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if address.startswith("+"):
        return f"{address[:3]}***{address[-2:]}"
    return f"{address[:4]}***"


class OutboxChannel:
    """Writes what ``channel`` would have sent into ``directory``; never contacts anyone.

    ``name`` is "outbox" (a Protocol ClassVar); ``channel`` is the channel it stands in for.
    """

    name: ClassVar[str] = "outbox"
    max_body: ClassVar[int | None] = None
    rate_per_second: ClassVar[float | None] = None

    def __init__(
        self,
        name: str,
        directory: Path,
        public_url: str = "",
        *,
        sender: str = DEFAULT_SENDER,
    ) -> None:
        self.channel = name
        self._directory = directory
        self._public_url = public_url
        self._sender = sender
        self._lock = asyncio.Lock()  # one JSON line at a time, never interleaved

    async def start(self) -> None:
        """Create the directory."""
        try:
            await asyncio.to_thread(self._directory.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the outbox folder {self._directory}: {exc.strerror}"
                " (BUDBRINGER_OUTBOX_DIR)"
            ) from exc

    async def send(self, delivery: Delivery, content: Rendered) -> Receipt:
        """Write the delivery to the outbox."""
        segments = None
        if self.channel == "sms":  # the text and its segments, as the SMS channel chooses
            text, segments = choose_text(content, SMS_MAX_SEGMENTS)
            content = content.model_copy(update={"text": text})
        if self.channel == "email":
            await self._write_email(delivery, content)
        else:
            await self._append_line(delivery, content, segments)
        return Receipt(
            status=DeliveryStatus.sent, provider_id=f"outbox:{delivery.id}", segments=segments
        )

    async def _write_email(self, delivery: Delivery, content: Rendered) -> None:
        message = build_email(delivery, content, self._sender, self._public_url)
        utf8 = not (delivery.address or "").isascii()
        data = message.as_bytes(policy=SMTPUTF8 if utf8 else SMTP)
        path = self._directory / self.channel / f"{delivery.id}.eml"

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a reader never sees half a message, a resend replaces it.
            partial = path.with_suffix(".eml.part")
            partial.write_bytes(data)
            partial.replace(path)

        await asyncio.to_thread(write)

    async def _append_line(
        self, delivery: Delivery, content: Rendered, segments: int | None
    ) -> None:
        record: dict[str, Any] = {
            "at": datetime.now(UTC).isoformat(),
            "delivery_id": delivery.id,
            "message_id": delivery.message_id,
            "channel": self.channel,
            "target": delivery.target,
            "address": mask_address(delivery.address),
            "language": content.language or delivery.language,
            "subject": content.subject,
            "text": content.text,
            "short": content.short,
            **({"segments": segments} if segments is not None else {}),
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        path = self._directory / f"{self.channel}.jsonl"

        def append() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as file:
                file.write(line)

        async with self._lock:
            await asyncio.to_thread(append)

    async def aclose(self) -> None:
        """Nothing stays open between writes."""
