"""OutcomeBatcher: concurrent send outcomes share one store transaction, and each caller
returns only once its own outcome is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.models import Delivery, DeliveryStatus, Job, Role
from gateway.outcomes import BESIDE_URGENT_BATCH, OutcomeBatcher
from gateway.store import SendOutcome
from gateway.store.priority import is_urgent, urgent_scope
from gateway.store.sqlite import SqliteStore

NOW = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


class CountingStore(SqliteStore):
    """The real SQLite store, counting finish_sends transactions and their sizes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.fail = 0  # how many finish_sends calls fail from now on
        self.lanes: list[bool] = []  # whether each batch was committed as urgent work
        self.hold: asyncio.Event | None = None  # normal batches wait for it when set

    async def finish_sends(self, outcomes: Sequence[SendOutcome]) -> int:
        self.batches.append(len(outcomes))
        self.lanes.append(is_urgent())
        if self.hold is not None and not is_urgent():
            await self.hold.wait()  # the broadcast's batch, still being committed
        if self.fail:
            self.fail -= 1
            raise StoreError("the store failed")
        return await super().finish_sends(outcomes)


def delivery(n: int) -> Delivery:
    return Delivery(
        id=f"d{n:04d}",
        tenant_id="t1",
        message_id="m1",
        recipient_id=f"g{n}",
        recipient_role=Role.guardian,
        channel="sms",
        address="+4791234567",
        language="nb",
        status=DeliveryStatus.queued,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    opened = CountingStore(tmp_path / "outcomes.db")
    await opened.open()
    deliveries = [delivery(n) for n in range(40)]
    jobs = [
        Job(id=f"send:{d.id}", tenant_id="t1", kind="send", ref=d.id, due_at=NOW)
        for d in deliveries
    ]
    await opened.add_deliveries(deliveries, jobs)
    yield opened
    await opened.close()


def sent(n: int) -> SendOutcome:
    return SendOutcome(
        f"send:d{n:04d}", f"d{n:04d}", DeliveryStatus.sent, NOW, provider_id=f"SM{n}"
    )


async def test_concurrent_outcomes_share_transactions_and_are_stored(store: CountingStore) -> None:
    batcher = OutcomeBatcher(store, max_batch=16)
    await asyncio.gather(*(batcher.commit(sent(n)) for n in range(40)))
    # 40 outcomes in batches of at most 16, not 40 transactions
    assert sum(store.batches) == 40
    assert len(store.batches) == 3 and max(store.batches) == 16
    stored = await store.get_deliveries([f"d{n:04d}" for n in range(40)])
    assert {d.status for d in stored.values()} == {DeliveryStatus.sent}
    assert stored["d0007"].provider_id == "SM7"
    assert await store.queue_stats(NOW) == {}  # every send job finished with its outcome


async def test_a_lone_outcome_is_committed_at_once(store: CountingStore) -> None:
    batcher = OutcomeBatcher(store)
    await asyncio.wait_for(batcher.commit(sent(1)), timeout=2)
    assert store.batches == [1]
    assert (await store.get_deliveries(["d0001"]))["d0001"].status is DeliveryStatus.sent


async def test_a_passing_store_error_is_waited_out_not_sent_again(store: CountingStore) -> None:
    store.fail = 2
    batcher = OutcomeBatcher(store, retry_delays=(0, 0, 0))
    await asyncio.gather(*(batcher.commit(sent(n)) for n in range(5)))
    assert store.batches == [5, 5, 5]
    stored = await store.get_deliveries([f"d{n:04d}" for n in range(5)])
    assert {d.status for d in stored.values()} == {DeliveryStatus.sent}


async def test_a_failing_store_reaches_every_caller_and_stores_nothing(
    store: CountingStore,
) -> None:
    store.fail = 10
    batcher = OutcomeBatcher(store, retry_delays=(0, 0))
    results = await asyncio.gather(
        *(batcher.commit(sent(n)) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, StoreError) for r in results)
    assert store.batches == [5, 5, 5]
    stored = await store.get_deliveries([f"d{n:04d}" for n in range(5)])
    assert {d.status for d in stored.values()} == {DeliveryStatus.queued}


async def test_a_cancelled_sender_still_has_its_outcome_stored(store: CountingStore) -> None:
    batcher = OutcomeBatcher(store)
    task = asyncio.create_task(batcher.commit(sent(3)))
    await asyncio.sleep(0)
    task.cancel()
    await batcher.drain()
    assert (await store.get_deliveries(["d0003"]))["d0003"].status is DeliveryStatus.sent


async def test_an_urgent_outcome_does_not_wait_for_the_broadcasts_batch(
    store: CountingStore,
) -> None:
    store.hold = asyncio.Event()
    batcher = OutcomeBatcher(store)
    normal = [asyncio.create_task(batcher.commit(sent(n))) for n in range(3)]
    await asyncio.sleep(0.01)  # their batch is being committed (held)

    async def alert() -> None:
        with urgent_scope():  # as the dispatcher runs an absence alert's send
            await batcher.commit(sent(9))

    await asyncio.wait_for(alert(), timeout=5)
    assert (await store.get_deliveries(["d0009"]))["d0009"].status is DeliveryStatus.sent
    assert not any(task.done() for task in normal)
    store.hold.set()
    await asyncio.gather(*normal)
    await batcher.drain()
    # Two batches: the broadcast's three, then the alert's alone and as urgent work.
    assert list(zip(store.batches, store.lanes, strict=True)) == [(3, False), (1, True)]
    stored = await store.get_deliveries([f"d{n:04d}" for n in (0, 1, 2, 9)])
    assert {d.status for d in stored.values()} == {DeliveryStatus.sent}


async def test_normal_outcomes_go_in_short_transactions_while_urgent_work_runs(
    store: CountingStore,
) -> None:
    more = [delivery(n) for n in range(100, 220)]
    await store.add_deliveries(
        more,
        [Job(id=f"send:{d.id}", tenant_id="t1", kind="send", ref=d.id, due_at=NOW) for d in more],
    )
    urgent_running = True
    batcher = OutcomeBatcher(store, urgent_active=lambda: urgent_running)
    await asyncio.gather(*(batcher.commit(sent(n)) for n in range(100, 220)))
    assert sum(store.batches) == 120
    assert max(store.batches) <= BESIDE_URGENT_BATCH < 120
    store.batches.clear()
    urgent_running = False  # alone again: one transaction for all of them
    await asyncio.gather(*(batcher.commit(sent(n)) for n in range(40)))
    assert store.batches == [40]
