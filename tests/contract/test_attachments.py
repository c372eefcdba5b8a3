"""Contract of the attachment store: uploads, the message that takes them (all or none,
once), and what the retention purge finds. Speaks only the Protocol."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.models import Attachment
from gateway.store import Store
from gateway.store.attachments import UNKNOWN, USED

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def upload(tenant: str, attachment_id: str, minutes: float = 0, size: int = 100) -> Attachment:
    return Attachment(
        id=attachment_id,
        tenant_id=tenant,
        name=f"{attachment_id}.pdf",
        content_type="application/pdf",
        size=size,
        sha256="ab" * 32,
        created_at=T0 + timedelta(minutes=minutes),
    )


async def test_a_message_takes_uploads_in_order(store: Store) -> None:
    for n, attachment_id in enumerate(("a1", "a2", "a3")):
        await store.attachments.add(upload("asker", attachment_id, n))
    assert await store.attachments.for_message("asker", "m1") == []
    at = T0 + timedelta(hours=1)
    assert await store.attachments.claim("asker", ["a3", "a1"], "m1", at) == {}
    taken = await store.attachments.for_message("asker", "m1")
    assert [a.id for a in taken] == ["a3", "a1"]
    assert taken[0] == upload("asker", "a3", 2).model_copy(
        update={"message_id": "m1", "used_at": at, "position": 0}
    )
    # Claiming again for the same message (a replay) changes nothing.
    assert await store.attachments.claim("asker", ["a3", "a1"], "m1", at) == {}
    assert [a.id for a in await store.attachments.for_message("asker", "m1")] == ["a3", "a1"]
    found = await store.attachments.get("asker", ["a2", "a1", "zz"])
    assert sorted(a.id for a in found) == ["a1", "a2"]


async def test_all_or_none_and_only_once(store: Store) -> None:
    await store.attachments.add(upload("asker", "a1"))
    await store.attachments.add(upload("asker", "a2"))
    await store.attachments.add(upload("baerum", "b1"))
    assert await store.attachments.claim("asker", ["a1"], "m1", T0) == {}
    problems = await store.attachments.claim("asker", ["a2", "a1", "b1", "nope"], "m2", T0)
    assert problems == {"a1": USED, "b1": UNKNOWN, "nope": UNKNOWN}
    # a2 was not taken: nothing is, when anything is wrong.
    assert await store.attachments.for_message("asker", "m2") == []
    assert await store.attachments.claim("asker", ["a2"], "m2", T0) == {}
    assert await store.attachments.get("baerum", ["a1"]) == []  # scoped by tenant


async def test_expired_follows_the_message_and_unused_uploads_go_sooner(store: Store) -> None:
    await store.attachments.add(upload("asker", "old-used", 0))
    await store.attachments.add(upload("asker", "new-used", 0))
    await store.attachments.add(upload("asker", "old-unused", 0))
    await store.attachments.add(upload("asker", "new-unused", 120))
    await store.attachments.claim("asker", ["old-used"], "m1", T0 + timedelta(minutes=1))
    await store.attachments.claim("asker", ["new-used"], "m2", T0 + timedelta(days=30))
    due = await store.attachments.expired(
        used_before=T0 + timedelta(days=1), unused_before=T0 + timedelta(minutes=60), limit=10
    )
    assert sorted(due) == [("asker", "old-unused"), ("asker", "old-used")]
    await store.attachments.remove(due)
    assert await store.attachments.for_message("asker", "m1") == []
    assert await store.attachments.get("asker", ["old-used", "old-unused"]) == []
    later = await store.attachments.expired(T0 + timedelta(days=31), T0 + timedelta(days=31), 10)
    assert sorted(later) == [("asker", "new-unused"), ("asker", "new-used")]
    assert len(await store.attachments.expired(T0 + timedelta(days=31), T0, 1)) == 1
    await store.attachments.remove([])
