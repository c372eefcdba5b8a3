"""Claimed jobs not started yet, in claim order, with a send for a full channel set aside.

Jobs are claimed in one mixed order (by id), so a broadcast's claims bring every
channel's sends in proportion to its deliveries, not to its in-flight limit. A send
started while its channel is full waits at the channel's gate (gateway/channel_gate.py),
and beyond the ones the gate holds without a dispatch slot, it waits holding one: the
backlog of the slowest channel then took the slots the other channels had room for,
and every channel went at the pace of the slowest.

Here a send whose channel has no room is set aside in its channel's line instead of
started; the jobs behind it start, and it starts first once its channel has room again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

Job = TypeVar("Job")  # the dispatcher's job (gateway.models.Job)


@dataclass(frozen=True, slots=True)
class Ready(Generic[Job]):
    job: Job
    claimed_at: datetime
    channel: str | None  # a send's channel when known; None: no channel to wait for


class ReadyBuffer(Generic[Job]):
    """The jobs of one lane that were claimed and wait for a dispatch slot."""

    def __init__(self) -> None:
        self._queue: deque[Ready[Job]] = deque()  # in claim order, none set aside yet
        self._held: dict[str, deque[Ready[Job]]] = {}  # channel -> its sends set aside
        self._held_count = 0

    def __len__(self) -> int:
        return len(self._queue) + self._held_count

    def __bool__(self) -> bool:
        return bool(self._queue) or self._held_count > 0

    def held(self, channel: str) -> int:
        """Sends of ``channel`` set aside: claimed while it had no room."""
        line = self._held.get(channel)
        return len(line) if line else 0

    def append(self, ready: Ready[Job]) -> None:
        self._queue.append(ready)

    def put_first(self, ready: list[Ready[Job]]) -> None:
        """Ahead of everything not set aside (work handed over in this process)."""
        self._queue.extendleft(reversed(ready))

    def startable(self, fits: Callable[[str], bool]) -> bool:
        """Whether a job could start now: one not set aside, or a set-aside send whose
        channel ``fits`` (has room) again."""
        if self._queue:
            return True
        return any(line and fits(channel) for channel, line in self._held.items())

    def take(self, fits: Callable[[str], bool]) -> Ready[Job] | None:
        """The next job to start, with its channel: set-aside sends of channels that have
        room again first (claimed before the rest; each channel's in claim order, the
        channels in the order they were first set aside), then the queue in claim order,
        setting aside each send whose channel does not ``fits``; None when nothing can
        start."""
        for channel, line in self._held.items():
            if line and fits(channel):
                self._held_count -= 1
                return line.popleft()
        while self._queue:
            ready = self._queue.popleft()
            if ready.channel is None or fits(ready.channel):
                return ready
            self._held.setdefault(ready.channel, deque()).append(ready)
            self._held_count += 1
        return None

    def take_older(self, limit: datetime) -> Iterator[Job]:
        """Remove and yield the jobs claimed at or before ``limit``."""
        for line in (self._queue, *self._held.values()):
            while line and line[0].claimed_at <= limit:
                if line is not self._queue:
                    self._held_count -= 1
                yield line.popleft().job

    def take_all(self) -> Iterator[Job]:
        """Remove and yield every job."""
        for line in (self._queue, *self._held.values()):
            while line:
                if line is not self._queue:
                    self._held_count -= 1
                yield line.popleft().job
