"""Group commit of send outcomes: many finished sends, one store transaction.

Under load every send ends with a write (its status and the end of its job). One
transaction per send serialises the dispatcher behind the store's single writer;
:class:`OutcomeBatcher` collects the outcomes that arrive while a commit is under
way and commits them together with :meth:`SendLedger.finish_sends`. A caller's
``commit`` returns only once its outcome is durable, so a job is never reported
done before its outcome is stored. When idle, an outcome is committed at once
(after one turn of the event loop), so a single alert waits for nothing.

Urgent outcomes (sent inside :func:`~gateway.store.priority.urgent_scope`: an absence
alert, an emergency) are batched apart and committed beside the normal ones, as urgent
work at the store's writer: an alert's outcome waits neither for a batch of the
broadcast's hundreds nor for that batch's turn at the writer. While urgent work runs,
normal batches are kept small (``BESIDE_URGENT_BATCH``), so the transaction an urgent
write waits for is short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from gateway.errors import StoreError
from gateway.store.ports import SendLedger
from gateway.store.priority import is_urgent, urgent_scope
from gateway.store.records import SendOutcome

log = logging.getLogger(__name__)

MAX_BATCH = 500  # outcomes per transaction
# Normal outcomes per transaction while urgent work runs: each of them is a write an
# urgent one may have to wait for (gateway/store/priority.py lets it wait for one only).
BESIDE_URGENT_BATCH = 50
RETRY_DELAYS = (0.05, 0.25, 1.0)  # seconds before the 2nd, 3rd and 4th commit attempt


class OutcomeBatcher:
    """Commits :class:`SendOutcome` rows in batches; ``await commit(o)`` until stored."""

    def __init__(
        self,
        store: SendLedger,
        *,
        max_batch: int = MAX_BATCH,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        urgent_active: Callable[[], bool] = lambda: False,
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        # Whether urgent work runs now: normal batches are kept small meanwhile.
        self._urgent_active = urgent_active
        self._retry_delays = tuple(retry_delays)
        # Per lane (urgent or not): the outcomes waiting, and the task committing them.
        self._pending: dict[bool, list[tuple[SendOutcome, asyncio.Future[None]]]] = {
            True: [],
            False: [],
        }
        self._flushers: dict[bool, asyncio.Task[None]] = {}

    async def commit(self, outcome: SendOutcome) -> None:
        """Store ``outcome`` (its transition and the end of its job) with others; raise what
        the store raised if that commit failed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        urgent = is_urgent()
        self._pending[urgent].append((outcome, future))
        flusher = self._flushers.get(urgent)
        if flusher is None or flusher.done():
            self._flushers[urgent] = asyncio.create_task(self._flush(urgent))
        # A cancelled sender cancels only its future: its outcome is in the batch already
        # and is stored with it (no shield, which cost a second future per send).
        await future

    async def _flush(self, urgent: bool) -> None:
        pending = self._pending[urgent]
        while pending:
            await asyncio.sleep(0)  # let the outcomes of this loop turn join the batch
            size = self._batch_size(urgent)
            batch = pending[:size]
            del pending[:size]
            try:
                with urgent_scope(urgent):
                    await self._commit([outcome for outcome, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    def _batch_size(self, urgent: bool) -> int:
        if urgent or not self._urgent_active():
            return self._max_batch
        return min(self._max_batch, BESIDE_URGENT_BATCH)

    async def _commit(self, outcomes: list[SendOutcome]) -> None:
        # These sends happened: a failed commit would make their jobs retry and send again,
        # so a passing store error (a full pool, a failover) is waited out first. Applying
        # a batch twice is harmless: the second application moves nothing.
        for delay in self._retry_delays:
            try:
                await self._store.finish_sends(outcomes)
                return
            except StoreError:
                log.warning("committing send outcomes failed; retrying", extra={"n": len(outcomes)})
                await asyncio.sleep(delay)
        await self._store.finish_sends(outcomes)

    async def drain(self) -> None:
        """Wait until every outcome handed in so far is committed (graceful shutdown)."""
        while running := [f for f in self._flushers.values() if not f.done()]:
            with contextlib.suppress(Exception):
                await asyncio.shield(running[0])
