"""Contract: acquire_rate is a GCRA limit; a slot is taken only when the caller may wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.store import Store

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_burst_then_one_slot_per_interval(store: Store) -> None:
    waits = [await store.acquire_rate("sms:sender", 10.0, 3, T0) for _ in range(6)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2, 0.3])
    # another limit is apart
    assert await store.acquire_rate("email:relay", 10.0, 1, T0) == 0.0
    # time refills the bucket: after 0.6 s the queue of slots is worked off
    assert await store.acquire_rate("sms:sender", 10.0, 3, at(0.6)) == pytest.approx(0.0)


async def test_a_wait_above_max_wait_takes_nothing(store: Store) -> None:
    assert await store.acquire_rate("k", 1.0, 1, T0) == 0.0
    assert await store.acquire_rate("k", 1.0, 1, T0, max_wait=0.5) == pytest.approx(1.0)
    assert await store.acquire_rate("k", 1.0, 1, T0, max_wait=0.5) == pytest.approx(1.0)
    # nothing was taken by the refusals: the next slot is still 1 s away
    assert await store.acquire_rate("k", 1.0, 1, T0) == pytest.approx(1.0)
    assert await store.acquire_rate("k", 1.0, 1, T0) == pytest.approx(2.0)
