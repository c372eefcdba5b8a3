"""The daily digest's entries in the store: which held deliveries go into which digest.

A delivery a guardian wants in a daily digest (gateway/digest.py) is planned ``queued``
with a ``digest`` job instead of a send job; one job per guardian and digest time,
whose id is deterministic, so every message of the day joins the same job. The entries
say which deliveries (of which messages) the job sends; they are written before the
deliveries, so a crash in between leaves an entry without a delivery (skipped), never a
held delivery without its entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class DigestEntry:
    tenant_id: str
    digest_id: str  # the id of the digest job
    message_id: str
    delivery_id: str


class Digests(Protocol):
    async def add_digest_entries(self, entries: Sequence[DigestEntry]) -> None:
        """Remember entries (an entry again is kept once)."""

    async def digest_entries(self, tenant_id: str, digest_id: str) -> list[DigestEntry]:
        """The entries of one digest, in the order they were added."""

    async def drop_digest_entries(
        self, tenant_id: str, digest_id: str, delivery_ids: Sequence[str]
    ) -> None:
        """Forget these entries of a digest (sent, or their delivery is gone)."""
