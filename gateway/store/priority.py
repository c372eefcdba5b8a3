"""Urgent work first at the store's own queues, not only in the work queue.

The lanes (``lanes.py``) put urgent jobs first when work is claimed; but with SQLite
every step of urgent work (the intake of an absence, its plan, the claim of its sends,
their outcomes) is also a write on the single writer connection, and a read on the one
read connection, each serialised by a lock. With a plain FIFO lock an alert's write
waited behind every write the broadcast had queued before it (outcome batches, plan
batches of a thousand deliveries, claims). :class:`PriorityLock` hands the connection
to urgent waiters before normal ones, so urgent work waits for at most the transaction
in progress.

Which work is urgent is carried by a context variable (:func:`urgent_scope`), set by
the code that knows it: the dispatcher around an urgent job and its claims, the intake
of absence events (:func:`urgent_work`), the outcome batcher around urgent outcomes. Tasks started
inside a scope inherit it (asyncio copies the context).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

# Urgent hand-overs in a row, while normal work waits, before a normal waiter's turn.
URGENT_RUN = 8
_URGENT: ContextVar[bool] = ContextVar("budbringer_urgent_work", default=False)
_P = ParamSpec("_P")
_T = TypeVar("_T")


def is_urgent() -> bool:
    """Whether the running code does urgent work (emergency, absence)."""
    return _URGENT.get()


@contextlib.contextmanager
def urgent_scope(urgent: bool = True) -> Iterator[None]:
    """Mark the code inside (and tasks it starts) as urgent work, or as not urgent."""
    token = _URGENT.set(urgent)
    try:
        yield
    finally:
        _URGENT.reset(token)


def mark_urgent(urgent: bool) -> None:
    """Mark the rest of the running task as urgent work, or not (no scope to leave: for
    a task that goes from one job to the next in its own context)."""
    _URGENT.set(urgent)


def urgent_work(fn: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    """A coroutine function whose store calls are urgent work (absence intake)."""

    @functools.wraps(fn)
    async def urgent(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with urgent_scope():
            return await fn(*args, **kwargs)

    return urgent


class PriorityLock:
    """An asyncio lock that, when released, passes to the longest-waiting urgent waiter
    before any normal one; FIFO within each class. Urgency is taken from
    :func:`is_urgent` when acquiring. A normal waiter gets the lock whenever no urgent
    one waits, and after ``URGENT_RUN`` urgent hand-overs in a row while it waited: an
    emergency of thousands of sends keeps urgent claims and outcomes queued for minutes,
    and a normal outcome kept waiting past its job's lease would be sent again."""

    def __init__(self) -> None:
        self._locked = False
        self._urgent_run = 0  # urgent hand-overs in a row while normal waiters waited
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    def locked(self) -> bool:
        return self._locked

    async def acquire(self) -> None:
        if not self._locked:  # never unlocked while someone waits: it is handed over
            self._locked = True
            return
        queue = self._urgent if is_urgent() else self._normal
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed the lock, then cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(fut)
            raise

    def release(self) -> None:
        """Hand the lock to the next waiter (urgent first), or unlock."""
        if not self._locked:
            raise RuntimeError("PriorityLock is not acquired")
        normal_due = self._urgent_run >= URGENT_RUN
        for queue in (self._normal, self._urgent) if normal_due else (self._urgent, self._normal):
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)  # the lock stays locked: it now is theirs
                    urgent_over_normal = queue is self._urgent and bool(self._normal)
                    self._urgent_run = self._urgent_run + 1 if urgent_over_normal else 0
                    return
        self._urgent_run = 0
        self._locked = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()
