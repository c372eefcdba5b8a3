"""The in-flight limit of one channel in one dispatcher (``DISPATCH__CHANNEL_CONCURRENCY``).

A slow provider must not take every send slot of the process. A channel has at most
``limit`` sends in flight; up to ``limit`` more wait here for one WITHOUT holding a
slot of the dispatcher (``DISPATCH__CONCURRENCY``), so the other channels go on.
A send beyond those waits too, holding its slot, but at most :data:`STALL_WAIT`
seconds: if no send of the channel finished by then the channel is stalled, and it and
every further send beyond the waiting ones is put off (its job handed back, due later)
until a send of the channel finishes again. Put-off sends are spread over the time the
channel needs for the sends ahead of them at its measured latency, so a large backlog
of a stalled channel is handed back about once, not in a loop.

Urgent sends (emergency, absence) take a freed slot before every normal send waiting
here: an alert posted during a broadcast waits for one send of the channel to finish,
not for the broadcast's sends queued ahead of it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

INITIAL_LATENCY = 0.1  # seconds a send is assumed to take before one was measured
SMOOTHING = 0.2  # weight of the newest send in the moving average of the latency
STALL_WAIT = 5.0  # seconds a send beyond the waiting ones waits before it is put off


class ChannelGate:
    def __init__(self, limit: int, on_wait: Callable[[], None] = lambda: None) -> None:
        """``on_wait``: called when a send starts waiting here without a slot."""
        self.limit = limit
        self._on_wait = on_wait
        self.waiting = 0  # sends waiting here for a slot of the channel
        self.excess = 0  # of which this many hold a slot of the dispatcher
        self.in_flight = 0
        # Sends waiting for a slot, urgent ones first; a freed slot goes to the first.
        self._queues: tuple[deque[asyncio.Future[bool]], deque[asyncio.Future[bool]]] = (
            deque(),
            deque(),
        )
        self._stalled = False
        self._latency = INITIAL_LATENCY
        self._heard_at = 0.0  # time.monotonic() of the last answer, or of getting busy
        self._clear_at = 0.0  # time.monotonic() when the sends put off so far may go

    @property
    def free_waiting(self) -> int:
        """Sends waiting here that hold no slot of the dispatcher."""
        return self.waiting - self.excess

    def clears_in(self, seconds: float) -> int:
        """Sends the channel finishes in ``seconds`` at its limit and measured latency;
        0 while it is stalled."""
        if self._stalled:
            return 0
        return math.ceil(self.limit * seconds / max(self._latency, 1e-6))

    def silent(self, seconds: float) -> bool:
        """Whether sends are in flight and the provider answered none of them for
        ``seconds`` (since the channel got busy): hung, before a send waited here long
        enough to mark the channel stalled."""
        return self.in_flight > 0 and time.monotonic() - self._heard_at > seconds

    def take_free(self, urgent: bool = False) -> bool:
        """Take a slot if one is free and no send that goes first waits: True once taken
        (call :meth:`leave` after the send), False: :meth:`enter` waits for one."""
        if self._full(urgent):
            return False
        self._take_slot()
        return True

    async def enter(self, *, urgent: bool = False) -> float | None:
        """Take a slot of the channel: None once taken (call :meth:`leave` after the
        send), or the seconds to put the send off by (the channel is stalled). An urgent
        send is given a slot before any normal one that waits."""
        excess = self.waiting >= self.limit
        if excess and self._stalled:
            return self._put_off()
        self.waiting += 1
        self.excess += excess
        try:
            if not excess:
                if self._full(urgent):
                    self._on_wait()
                await self._acquire(urgent, None)
                return None
            if not await self._acquire(urgent, STALL_WAIT):
                self._stalled = True
                return self._put_off()
            return None
        finally:
            self.waiting -= 1
            self.excess -= excess

    def leave(self, seconds: float | None) -> None:
        """Give the slot back after a send that took ``seconds`` (None: none was made)."""
        self.in_flight -= 1
        self._hand_on()
        if seconds is not None:
            self._stalled = False
            self._heard_at = time.monotonic()
            self._latency += SMOOTHING * (seconds - self._latency)

    def _full(self, urgent: bool) -> bool:
        """Whether a send must queue: no free slot, or others (that go first) wait."""
        ahead = self._queues[0] if urgent else self._queues[0] or self._queues[1]
        return self.in_flight >= self.limit or bool(ahead)

    async def _acquire(self, urgent: bool, timeout: float | None) -> bool:
        """Take a slot, waiting in line for one if needed: True once taken, False when
        ``timeout`` seconds passed first. The timeout is one timer that ends the turn
        (not ``asyncio.wait_for``, which costs a task and a timer per send)."""
        if not self._full(urgent):
            self._take_slot()
            return True
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[bool] = loop.create_future()
        queue = self._queues[0 if urgent else 1]
        queue.append(turn)
        timer = None if timeout is None else loop.call_later(timeout, _expire, turn, queue)
        try:
            return await turn  # True: _hand_on counted the slot for this send
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.result():
                self.in_flight -= 1  # handed a slot, but gave up: pass it on
                self._hand_on()
            elif turn in queue:
                queue.remove(turn)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _hand_on(self) -> None:
        """Give free slots to the first waiting sends, urgent ones first."""
        for queue in self._queues:
            while queue and self.in_flight < self.limit:
                turn = queue.popleft()
                if not turn.done():
                    self._take_slot()
                    turn.set_result(True)

    def _take_slot(self) -> None:
        if self.in_flight == 0:
            self._heard_at = time.monotonic()  # silence counts from getting busy
        self.in_flight += 1

    def _put_off(self) -> float:
        now = time.monotonic()
        per_send = self._latency / self.limit
        ahead = now + (self.waiting + self.limit) * per_send
        self._clear_at = max(self._clear_at, ahead) + per_send
        return max(self._clear_at - now, STALL_WAIT)


def _expire(turn: asyncio.Future[bool], queue: deque[asyncio.Future[bool]]) -> None:
    """The wait of ``turn`` is over without a slot: out of the line, answered False."""
    if not turn.done():
        queue.remove(turn)
        turn.set_result(False)
