"""What the sends of one message all read once: the message, its files, its translations.

A broadcast starts a dispatch round of sends of one message at once (144 by default).
Each asks for the message's row, its attachments and its translations; with a plain
cache every send of the first rounds missed it (the first read had not answered yet)
and read the same rows again: in a 300-child emergency four store reads per ten sends
(issue 18). :class:`MessageCache` keeps one read in flight per message that every
send waits for, and the newest ``size`` values after.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

SIZE = 256  # messages whose values are kept


class _Read(Generic[T]):
    """A read under way; ``stale`` once :meth:`MessageCache.forget` dropped it."""

    __slots__ = ("future", "stale")

    def __init__(self, future: asyncio.Future[T | None]) -> None:
        self.future = future
        self.stale = False


class MessageCache(Generic[T]):
    """Values by message id, read once; None is never kept (a message not found yet)."""

    def __init__(self, size: int = SIZE) -> None:
        self._size = size
        self._values: OrderedDict[str, T] = OrderedDict()
        self._loading: dict[str, _Read[T]] = {}

    def get(self, key: str) -> T | None:
        """The value if kept: no await on the hot path."""
        return self._values.get(key)

    async def load(self, key: str, read: Callable[[], Awaitable[T | None]]) -> T | None:
        """The kept value, else ``read()``'s: one read at a time per key, whose answer (or
        error) every caller waiting meanwhile gets."""
        value = self._values.get(key)
        if value is not None:
            return value
        loading = self._loading.get(key)
        if loading is None:
            loading = _Read(asyncio.ensure_future(read()))
            self._loading[key] = loading
            loading.future.add_done_callback(lambda _: self._settled(key, loading))
        # Shielded: a cancelled caller does not cancel the read the others wait for.
        value = await asyncio.shield(loading.future)
        if value is not None and not loading.stale:
            self._values[key] = value
            if len(self._values) > self._size:
                self._values.popitem(last=False)
        return value

    def forget(self, key: str) -> None:
        """Drop a kept value (its rows changed): the next :meth:`load` reads again, and a
        read already under way is neither joined nor kept (it may predate the change)."""
        self._values.pop(key, None)
        loading = self._loading.pop(key, None)
        if loading is not None:
            loading.stale = True

    def _settled(self, key: str, loading: _Read[T]) -> None:
        if self._loading.get(key) is loading:
            del self._loading[key]
