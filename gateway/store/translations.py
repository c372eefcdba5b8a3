"""The translation store's Protocol: a message's subject and body per language, written
once per (message, language) and read by every send of the message. Backends:
sqlite_translations.py and redis_translations.py, each a small class the store holds as
``store.translations``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.models import Translation


class TranslationStore(Protocol):
    async def add(self, rows: Sequence[Translation]) -> list[Translation]:
        """Store translations; a (message, language) stored before keeps its first row
        (never replaced). Returns the rows as stored, the earlier ones where they exist."""

    async def of_message(self, tenant_id: str, message_id: str) -> dict[str, Translation]:
        """Every translation of a message by language (another tenant's: none)."""
