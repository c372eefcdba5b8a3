"""What a store process remembers of the jobs it claimed until they end, one rule for
both backends: a map of bounded size, oldest claim dropped first. A job never ended
here (its worker lost it, a script ended it) just ages out; what the entry was for (the
Redis stream entry, the claim stamp or lease end a retry is checked against) is then
looked up or left unchecked, as for a job this process never claimed."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")

HELD_LIMIT = 100_000  # jobs; a few MB at most


class HeldClaims(Generic[V]):
    """job id -> what the claim that holds it wrote; a job claimed again is the newest."""

    def __init__(self, limit: int = HELD_LIMIT) -> None:
        self._items: OrderedDict[str, V] = OrderedDict()
        self._limit = limit

    def hold(self, job_id: str, value: V) -> None:
        self._items[job_id] = value
        self._items.move_to_end(job_id)
        if len(self._items) > self._limit:
            self._items.popitem(last=False)

    def get(self, job_id: str) -> V | None:
        return self._items.get(job_id)

    def pop(self, job_id: str) -> V | None:
        return self._items.pop(job_id, None)
