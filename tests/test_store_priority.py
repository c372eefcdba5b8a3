"""Urgent work goes first at the store's own queues (gateway/store/priority.py): the
SQLite writer and reader are handed to an urgent waiter before normal waiters that came
earlier (urgent send outcomes: tests/test_outcomes.py).

The order is observed, never timed: the tests hold the lock (or the real writer) while
the others queue, then read in which order they got it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from gateway.store.priority import URGENT_RUN, PriorityLock, is_urgent, urgent_scope, urgent_work
from gateway.store.sqlite.base import SqliteHandle


async def _take(lock: PriorityLock, name: str, order: list[str], *, urgent: bool) -> None:
    with urgent_scope(urgent):
        async with lock:
            order.append(name)
            await asyncio.sleep(0)


async def _queued(lock: PriorityLock, names: list[tuple[str, bool]]) -> list[str]:
    """Hold ``lock``, queue a waiter per (name, urgent) in that order, release: the order
    in which they got it."""
    order: list[str] = []
    await lock.acquire()
    tasks = []
    for name, urgent in names:
        tasks.append(asyncio.create_task(_take(lock, name, order, urgent=urgent)))
        await asyncio.sleep(0)  # queued in this order
    lock.release()
    await asyncio.gather(*tasks)
    assert not lock.locked()
    return order


async def test_an_urgent_waiter_gets_the_lock_before_earlier_normal_waiters() -> None:
    order = await _queued(PriorityLock(), [("normal1", False), ("normal2", False), ("alert", True)])
    assert order == ["alert", "normal1", "normal2"]


async def test_waiters_of_one_kind_get_the_lock_in_arrival_order() -> None:
    order = await _queued(
        PriorityLock(),
        [("n1", False), ("u1", True), ("n2", False), ("u2", True), ("n3", False)],
    )
    assert order == ["u1", "u2", "n1", "n2", "n3"]


async def test_a_normal_waiter_gets_its_turn_after_a_run_of_urgent_ones() -> None:
    # An emergency keeps urgent claims and outcomes queued: a normal outcome must not
    # wait past its job's lease (it would be sent again), so it goes after URGENT_RUN.
    names = [("n1", False), *((f"u{i}", True) for i in range(URGENT_RUN + 3))]
    order = await _queued(PriorityLock(), names)
    assert order.index("n1") == URGENT_RUN
    assert [n for n in order if n != "n1"] == [f"u{i}" for i in range(URGENT_RUN + 3)]


async def test_a_free_lock_is_taken_at_once_whatever_the_work() -> None:
    lock = PriorityLock()
    async with lock:
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()


async def test_a_waiter_cancelled_before_or_after_its_turn_does_not_keep_the_lock() -> None:
    lock = PriorityLock()
    order: list[str] = []
    await lock.acquire()
    gone = asyncio.create_task(_take(lock, "gone", order, urgent=True))
    handed = asyncio.create_task(_take(lock, "handed", order, urgent=True))
    last = asyncio.create_task(_take(lock, "last", order, urgent=False))
    await asyncio.sleep(0)
    gone.cancel()  # still waiting: leaves the queue
    await asyncio.sleep(0)
    lock.release()  # handed to "handed", which is cancelled before it runs
    handed.cancel()
    await asyncio.gather(gone, handed, last, return_exceptions=True)
    assert order == ["last"]
    assert not lock.locked()


async def test_the_scope_is_inherited_by_tasks_and_undone_on_leaving() -> None:
    async def inside() -> bool:
        return is_urgent()

    assert not is_urgent()
    with urgent_scope():
        assert await asyncio.create_task(inside())
        with urgent_scope(False):
            assert not is_urgent()
        assert is_urgent()
    assert not is_urgent()


@pytest.fixture
async def handle(tmp_path: Path) -> AsyncIterator[SqliteHandle]:
    async def prepare(db: aiosqlite.Connection) -> None:
        await db.execute(
            "CREATE TABLE IF NOT EXISTS writes (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT)"
        )

    db = SqliteHandle(str(tmp_path / "priority.db"), 5000)
    await db.open(prepare)
    try:
        yield db
    finally:
        await db.close()


async def _write(db: SqliteHandle, name: str, *, urgent: bool) -> None:
    with urgent_scope(urgent):
        async with db.write() as conn:
            await conn.execute("INSERT INTO writes (name) VALUES (?)", (name,))


async def test_an_urgent_write_commits_before_normal_writes_queued_earlier(
    handle: SqliteHandle,
) -> None:
    release = asyncio.Event()

    async def broadcast_batch() -> None:  # the transaction in progress
        async with handle.write() as conn:
            await conn.execute("INSERT INTO writes (name) VALUES ('batch')")
            await release.wait()

    tasks = [asyncio.create_task(broadcast_batch())]
    await asyncio.sleep(0.01)
    for name, urgent in (("outcomes", False), ("plan", False), ("alert", True)):
        tasks.append(asyncio.create_task(_write(handle, name, urgent=urgent)))
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*tasks)
    async with handle.read() as conn:
        rows = await conn.execute_fetchall("SELECT name FROM writes ORDER BY seq")
    assert [row[0] for row in rows] == ["batch", "alert", "outcomes", "plan"]


async def test_a_function_marked_as_urgent_work_runs_in_the_scope() -> None:
    @urgent_work
    async def intake(value: int) -> tuple[int, bool]:
        return value, is_urgent()

    assert await intake(7) == (7, True)
    assert not is_urgent()
