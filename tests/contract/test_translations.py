"""Contract of the translation store: one row per (message, language), the first one
kept, scoped by tenant. Speaks only the Protocol."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.models import Translation, TranslationOrigin
from gateway.store import Store

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def row(
    language: str, origin: TranslationOrigin, body: str = "", tenant: str = "t1"
) -> Translation:
    return Translation(
        tenant_id=tenant,
        message_id="m1",
        language=language,
        origin=origin,
        subject=f"s-{language}" if body else "",
        body=body,
        provider="libretranslate" if origin is TranslationOrigin.machine else None,
        reason="rate_limited" if origin is TranslationOrigin.failed else None,
        at=T0,
    )


async def test_first_translation_per_language_is_kept(store: Store) -> None:
    teacher = row("pl", TranslationOrigin.teacher, "Wycieczka")
    assert await store.translations.add([row("nb", TranslationOrigin.source), teacher]) == [
        row("nb", TranslationOrigin.source),
        teacher,
    ]
    machine = row("pl", TranslationOrigin.machine, "maszyna")
    arabic = row("ar", TranslationOrigin.machine, "رحلة")
    # The teacher's row stays; the answer says which row is stored.
    assert await store.translations.add([machine, arabic]) == [teacher, arabic]
    found = await store.translations.of_message("t1", "m1")
    assert found == {"nb": row("nb", TranslationOrigin.source), "pl": teacher, "ar": arabic}
    assert await store.translations.add([]) == []


async def test_failed_rows_and_tenants(store: Store) -> None:
    failed = row("so", TranslationOrigin.failed)
    await store.translations.add([failed, row("so", TranslationOrigin.failed, tenant="t2")])
    assert (await store.translations.of_message("t1", "m1"))["so"].reason == "rate_limited"
    assert await store.translations.of_message("t3", "m1") == {}
    assert await store.translations.of_message("t1", "other") == {}
