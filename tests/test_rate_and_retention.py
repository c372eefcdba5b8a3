"""The dispatcher waits for a channel's deployment-wide rate limit, and the daily purge
job keeps deliveries only for the retention (both on the embedded store here; the
limits themselves are contract-tested on every backend)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest

from channels.inapp import InAppChannel
from gateway.clock import ManualClock
from gateway.constants import JOB_PURGE, JOB_SEND
from gateway.dispatcher import Dispatcher
from gateway.models import (
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    Job,
    Message,
    Receipt,
    Rendered,
    Role,
    derive_id,
)
from gateway.render import Renderer
from gateway.retention import Retention
from gateway.service import TEMPLATES_DIR
from gateway.settings import DispatchSettings
from gateway.store import Store
from gateway.store.sqlite import SqliteStore

T = "tenant-a"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = SqliteStore(tmp_path / "budbringer.db")
    await opened.open()
    yield opened
    await opened.close()


class PacedChannel(InAppChannel):
    """In-app, but declaring a limit of 10 per second, and noting when each send went."""

    rate_per_second: ClassVar[float | None] = 10.0

    def __init__(self) -> None:
        self.sent_at: list[float] = []

    async def send(self, delivery: Delivery, content: Rendered) -> Receipt:
        self.sent_at.append(time.monotonic())
        return await super().send(delivery, content)


async def broadcast(store: Store, clock: ManualClock, n: int, event: str = "ev1") -> Message:
    now = clock.now()
    message = Message(
        id=derive_id(T, event),
        tenant_id=T,
        event_id=event,
        event_type="message.created",
        body_hash="h",
        category=Category.emergency,
        subject="Stengt",
        body="Skolen er stengt.",
        audience=Audience(units=["u1"]),
        created_at=now,
    )
    await store.accept_message(
        message, Job(id=f"plan:{message.id}", tenant_id=T, kind="plan", ref=message.id, due_at=now)
    )
    await store.finish_job(f"plan:{message.id}")
    deliveries = [
        Delivery(
            id=Delivery.make_id(T, event, f"p{i}", "inapp"),
            tenant_id=T,
            message_id=message.id,
            recipient_id=f"p{i}",
            recipient_role=Role.guardian,
            channel="inapp",
            language="nb",
            status=DeliveryStatus.queued,
            created_at=now,
            updated_at=now,
        )
        for i in range(n)
    ]
    jobs = [
        Job(id=f"{JOB_SEND}:{d.id}", tenant_id=T, kind=JOB_SEND, ref=d.id, due_at=now)
        for d in deliveries
    ]
    await store.add_deliveries(deliveries, jobs)
    return message


async def test_sends_keep_to_the_channels_rate(store: Store, clock: ManualClock) -> None:
    channel = PacedChannel()
    dispatcher = Dispatcher(
        store,
        {"inapp": channel},
        Renderer(TEMPLATES_DIR, "http://127.0.0.1:8080"),
        clock,
        DispatchSettings(concurrency=64),
    )
    message = await broadcast(store, clock, 25)
    await dispatcher.run_until_idle()
    # 10 at once (one second's worth), 10 more spread over the next second; the last 5
    # would wait longer than a send may hold its job: they are put off instead.
    assert len(channel.sent_at) == 20
    assert channel.sent_at[-1] - channel.sent_at[0] >= 0.9
    counts = await store.count_by_status(T, message.id)
    assert counts == {"delivered": 20, "queued": 5}
    waiting = await store.claim_jobs([JOB_SEND], 10, clock.now() + timedelta(seconds=3), 60)
    assert [j.attempts for j in waiting] == [1] * 5  # putting off did not count as a try
    for j in waiting:
        await store.retry_job(j.id, clock.now() + timedelta(seconds=3), "test")
    clock.advance(3)
    await dispatcher.run_until_idle()
    assert await store.count_by_status(T, message.id) == {"delivered": 25}


async def test_the_daily_purge_keeps_only_the_retention(store: Store, clock: ManualClock) -> None:
    old = await broadcast(store, clock, 3, "old")
    clock.advance(397 * 86_400)
    new = await broadcast(store, clock, 2, "new")
    retention = Retention(store, clock, days=396)
    await retention.schedule()
    await retention.schedule()  # every worker process does this at start: one job
    (job,) = await store.claim_jobs([JOB_PURGE], 10, clock.now(), 60)
    await retention.run(job)
    assert await store.get_message(T, old.id) is None
    assert await store.list_deliveries(T, old.id) == []
    assert len(await store.list_deliveries(T, new.id)) == 2
    # the same job again a day later, not counted as an attempt
    assert await store.claim_jobs([JOB_PURGE], 10, clock.now() + timedelta(hours=23), 60) == []
    (again,) = await store.claim_jobs([JOB_PURGE], 10, clock.now() + timedelta(days=1), 60)
    assert (again.id, again.attempts) == (JOB_PURGE, 1)
