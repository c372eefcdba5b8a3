"""Contract: lists page by (created_at, id) — issue 12. Messages of one batch share one
``created_at``; paging by time alone listed 1,000 of 1,031 outbox messages at limit 500
and 21 at limit 7. Every row must be listed exactly once, in order, at any page size."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import pytest

from gateway.store import Store

from .builders import accepted, delivery, message
from .test_webhooks import T0, outbox, queued, send_job

A = "tenant-a"
EARLIER = 9  # rows created before the instant the others share
# (page size, rows created at one instant): more rows than a page, across page ends
SIZES = [(1, 40), (7, 60), (500, 1031)]

Page = Callable[[int, datetime | None, str | None], Awaitable[list[tuple[datetime, str]]]]


async def page_all(page: Page, limit: int, total: int) -> list[str]:
    """Follow the pages as a client does: the last row's (created_at, id) as the cursor."""
    seen: list[str] = []
    before: datetime | None = None
    before_id: str | None = None
    for _ in range(total + 2):
        rows = await page(limit, before, before_id)
        seen.extend(i for _, i in rows)
        if len(rows) < limit:
            return seen
        before, before_id = rows[-1]
    raise AssertionError("paging did not end")


@pytest.mark.parametrize(("limit", "count"), SIZES)
async def test_webhook_outbox_pages_by_time_and_id(store: Store, limit: int, count: int) -> None:
    same = [f"m{n:05d}" for n in range(count)]
    await queued(store, *same)
    cursor = await store.webhook_cursor()
    early = [
        outbox(f"e{n}").model_copy(update={"created_at": T0 - timedelta(seconds=n + 1)})
        for n in range(EARLIER)
    ]
    await store.enqueue_webhooks(
        cursor, cursor, early, [send_job(m.id) for m in early], "webhook_fanout"
    )

    async def page(
        limit: int, before: datetime | None, before_id: str | None
    ) -> list[tuple[datetime, str]]:
        rows = await store.list_webhook_messages(A, limit=limit, before=before, before_id=before_id)
        return [(m.created_at, m.id) for m in rows]

    listed = await page_all(page, limit, count + EARLIER)
    expected = sorted(same, reverse=True) + [f"e{n}" for n in range(EARLIER)]
    assert listed == expected


@pytest.mark.parametrize(("limit", "count"), SIZES)
async def test_inbox_pages_by_time_and_id(store: Store, limit: int, count: int) -> None:
    messages = [await accepted(store, message(A, f"ev{n:04d}")) for n in range(count)]
    messages += [
        await accepted(store, message(A, f"early{n}", created=T0 - timedelta(minutes=n + 1)))
        for n in range(EARLIER)
    ]
    await store.add_deliveries([delivery(m, "p1") for m in messages], [])
    now = T0 + timedelta(hours=1)

    async def page(
        limit: int, before: datetime | None, before_id: str | None
    ) -> list[tuple[datetime, str]]:
        rows = await store.list_inbox(
            A, "p1", limit=limit, before=before, before_id=before_id, now=now
        )
        return [(i.created_at, i.message_id) for i in rows]

    listed = await page_all(page, limit, count + EARLIER)
    same = sorted((m.id for m in messages[:count]), reverse=True)
    assert listed == same + [m.id for m in messages[count:]]
