"""Translations go with the retention on SQLite (Redis lets their keys expire)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.models import Translation, TranslationOrigin
from gateway.store.sqlite import SqliteStore

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


async def test_the_purge_removes_old_translations(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "b.db")
    await store.open()
    try:
        rows = [
            Translation(
                tenant_id="t1",
                message_id=message_id,
                language="pl",
                origin=TranslationOrigin.machine,
                subject="s",
                body="b",
                at=at,
            )
            for message_id, at in (("old", T0), ("new", T0 + timedelta(days=400)))
        ]
        await store.translations.add(rows)
        await store.purge_before(T0 + timedelta(days=1))
        assert await store.translations.of_message("t1", "old") == {}
        assert set(await store.translations.of_message("t1", "new")) == {"pl"}
    finally:
        await store.close()
