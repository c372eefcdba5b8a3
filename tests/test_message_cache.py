"""gateway/message_cache.py: what the sends of one message read, read once."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import StoreError
from gateway.message_cache import MessageCache


class Reads:
    """A read that answers when released, and counts how often it was called."""

    def __init__(self, answer: list[str] | None) -> None:
        self.answer = answer
        self.calls = 0
        self.release = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self) -> list[str] | None:
        self.calls += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.answer


async def test_sends_starting_at_once_share_one_read() -> None:
    cache: MessageCache[list[str]] = MessageCache()
    read = Reads(["a.pdf"])
    waiting = [asyncio.create_task(cache.load("m1", read)) for _ in range(144)]
    await asyncio.sleep(0)
    read.release.set()
    assert await asyncio.gather(*waiting) == [["a.pdf"]] * 144
    assert read.calls == 1
    assert cache.get("m1") == ["a.pdf"]
    assert await cache.load("m1", read) == ["a.pdf"]
    assert read.calls == 1


async def test_nothing_found_is_not_kept() -> None:
    cache: MessageCache[list[str]] = MessageCache()
    read = Reads(None)
    read.release.set()
    assert await cache.load("m1", read) is None
    assert await cache.load("m1", read) is None
    assert read.calls == 2
    assert cache.get("m1") is None


async def test_a_failed_read_fails_every_waiter_and_the_next_load_reads_again() -> None:
    cache: MessageCache[list[str]] = MessageCache()
    read = Reads(["a.pdf"])
    read.error = StoreError("the store failed")
    waiting = [asyncio.create_task(cache.load("m1", read)) for _ in range(3)]
    await asyncio.sleep(0)
    read.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results)
    read.error = None
    assert await cache.load("m1", read) == ["a.pdf"]
    assert read.calls == 2


async def test_a_cancelled_send_does_not_cancel_the_read_others_wait_for() -> None:
    cache: MessageCache[list[str]] = MessageCache()
    read = Reads(["a.pdf"])
    first = asyncio.create_task(cache.load("m1", read))
    second = asyncio.create_task(cache.load("m1", read))
    await asyncio.sleep(0)
    first.cancel()
    read.release.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == ["a.pdf"]
    assert read.calls == 1


async def test_the_newest_messages_are_kept_and_a_forgotten_one_is_read_again() -> None:
    cache: MessageCache[list[str]] = MessageCache(size=2)
    read = Reads([])
    read.release.set()
    for key in ("m1", "m2", "m3"):
        await cache.load(key, read)
    assert cache.get("m1") is None
    assert cache.get("m3") == []
    cache.forget("m3")
    assert cache.get("m3") is None
    await cache.load("m3", read)
    assert read.calls == 4


async def test_a_read_under_way_when_forgotten_is_neither_joined_nor_kept() -> None:
    cache: MessageCache[list[str]] = MessageCache()
    old, new = Reads(["old.pdf"]), Reads(["new.pdf"])
    before = asyncio.create_task(cache.load("m1", old))
    await asyncio.sleep(0)
    cache.forget("m1")  # the rows changed while the first read was out
    after = asyncio.create_task(cache.load("m1", new))
    await asyncio.sleep(0)
    old.release.set()
    new.release.set()
    assert await before == ["old.pdf"]  # its caller asked before the change
    assert await after == ["new.pdf"]
    assert (old.calls, new.calls) == (1, 1)
    assert cache.get("m1") == ["new.pdf"]
