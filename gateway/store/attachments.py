"""The attachment part of the store: what was uploaded, and which message took it.

Each backend composes one of these with its connection handle (``store.attachments``):
:class:`gateway.store.sqlite.attachments.SqliteAttachments` and
:class:`gateway.store.redis.attachments.RedisAttachments`. The contract suite
(tests/contract/test_attachments.py) runs on every backend.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from gateway.models import Attachment

# A problem with one id given to claim(): it is not this tenant's, or another message has it.
UNKNOWN = "unknown"
USED = "used"


class AttachmentStore(Protocol):
    async def add(self, attachment: Attachment) -> None:
        """Record an upload (not used by a message yet)."""

    async def get(self, tenant_id: str, ids: list[str]) -> list[Attachment]:
        """The tenant's attachments among ``ids`` (unknown ids are left out)."""

    async def claim(
        self, tenant_id: str, ids: list[str], message_id: str, at: datetime
    ) -> dict[str, str]:
        """Give these uploads to ``message_id``, in this order, all or none: the problem of
        each id that cannot be given (UNKNOWN, USED); empty when all were. Claiming again
        for the same message changes nothing."""

    async def for_message(self, tenant_id: str, message_id: str) -> list[Attachment]:
        """The message's attachments in the order the event named them."""

    async def expired(
        self, used_before: datetime, unused_before: datetime, limit: int
    ) -> list[tuple[str, str]]:
        """Up to ``limit`` (tenant, id) pairs due for removal: used by a message before
        ``used_before`` (the retention) or uploaded before ``unused_before`` and unused."""

    async def remove(self, pairs: list[tuple[str, str]]) -> None:
        """Forget these (tenant, id) pairs; the caller removes the files first."""
