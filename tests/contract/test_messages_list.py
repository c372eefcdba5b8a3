"""Contract: list_messages lists a tenant's messages newest first and pages by time
(the staff pages' message list), on every backend."""

from __future__ import annotations

from datetime import timedelta

from gateway.store import Store

from .builders import T0, A, B, accepted, message


async def test_newest_first_paged_and_per_tenant(store: Store) -> None:
    for n in range(5):
        await accepted(store, message(A, f"ev{n}", created=T0 + timedelta(minutes=n)))
    await accepted(store, message(B, "other", created=T0 + timedelta(minutes=9)))
    first = await store.list_messages(A, limit=3)
    assert [m.event_id for m in first] == ["ev4", "ev3", "ev2"]
    assert first[0].subject == "Subject ev4" and first[0].tenant_id == A
    rest = await store.list_messages(A, limit=3, before=first[-1].created_at)
    assert [m.event_id for m in rest] == ["ev1", "ev0"]
    assert await store.list_messages(A, before=T0) == []
    assert [m.event_id for m in await store.list_messages(B)] == ["other"]
    assert await store.list_messages("nobody") == []


async def test_a_purged_message_is_no_longer_listed(store: Store) -> None:
    await accepted(store, message(A, "old", created=T0))
    await accepted(store, message(A, "new", created=T0 + timedelta(days=400)))
    await store.purge_before(T0 + timedelta(days=1))
    assert [m.event_id for m in await store.list_messages(A)] == ["new"]


async def test_paging_by_time_and_id_never_skips_messages_of_one_moment(store: Store) -> None:
    for n in range(5):
        await accepted(store, message(A, f"same{n}", created=T0))
    await accepted(store, message(A, "earlier", created=T0 - timedelta(minutes=1)))
    seen: list[str] = []
    page = await store.list_messages(A, limit=2)
    while page:
        seen += [m.event_id for m in page]
        last = page[-1]
        page = await store.list_messages(A, limit=2, before=last.created_at, before_id=last.id)
    assert len(seen) == 6 and len(set(seen)) == 6 and seen[-1] == "earlier"
    ids = [m.id for m in await store.list_messages(A)]
    assert ids[:5] == sorted(ids[:5], reverse=True)  # equal times: id descending
