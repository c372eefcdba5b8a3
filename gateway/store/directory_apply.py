"""How every backend writes a directory batch: checked whole, written in chunks, one
writer per tenant at a time.

A batch of 100,000 persons written in one transaction held SQLite's single writer
(every event waited for it) and, on Redis, the server itself (one MULTI/EXEC) for
seconds. So a backend

1. takes the tenant's directory lock (:class:`DirectoryLocks`): no other batch or
   deletion of the tenant runs meanwhile, in this process or another;
2. checks the whole batch against the stored directory (``check_batch``): a 422 writes
   nothing, as before;
3. writes it in chunks of at most ``chunk_rows`` rows (:func:`chunks`), each its own
   transaction, in the order units, groups, persons (with their memberships),
   relations, preferences. Every committed prefix is a consistent directory: a row only
   refers to rows written before it or already stored. Between chunks the writer is
   free for everything else (events, receipts, reads);
4. lets the lock go.

What "all or nothing" means now: the validation is all or nothing. A process that
dies in the middle of step 3 leaves a prefix written and the client without a 200;
posting the same batch again completes it (every write is an upsert).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from gateway.errors import StoreError
from gateway.models import DirectoryBatch

log = logging.getLogger(__name__)

CHUNK_ROWS = 250  # rows per transaction of a directory batch
LOCK_TTL = 30.0  # seconds a lock lives unless its holder renews it
LOCK_WAIT = 300.0  # seconds a directory write waits for another one of the tenant

# Called after each committed chunk (tests hook the chunk boundary with it).
ChunkHook = Callable[[], Awaitable[None]]


def chunks(batch: DirectoryBatch, rows: int = CHUNK_ROWS) -> Iterator[DirectoryBatch]:
    """The batch in pieces of at most ``rows`` rows, in dependency order."""
    for name in ("units", "groups", "persons", "relations"):
        items = getattr(batch, name)
        for start in range(0, len(items), rows):
            yield _piece(**{name: items[start : start + rows]})
    preferences = list(batch.preferences.items())
    for start in range(0, len(preferences), rows):
        yield _piece(preferences=dict(preferences[start : start + rows]))


def _piece(**rows: Any) -> DirectoryBatch:
    # Every field given: model_construct inspects default factories, slowly.
    fields: dict[str, Any] = {"units": [], "groups": [], "persons": [], "relations": []}
    return DirectoryBatch.model_construct(**{**fields, "preferences": {}, **rows})


async def write_in_chunks(
    batch: DirectoryBatch,
    write: Callable[[DirectoryBatch], Awaitable[int]],
    lease: Lease,
    *,
    rows: int,
    on_chunk: ChunkHook | None,
    between: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """``write`` each chunk of a checked batch while ``lease`` holds; the preferences
    written. After each chunk the writer is free and the loop yields (``between``:
    how the backend gives way to what waits, default one turn of the loop)."""
    applied = 0
    for chunk in chunks(batch, rows):
        lease.check()
        applied += await write(chunk)
        if on_chunk is not None:
            await on_chunk()
        await (between() if between is not None else asyncio.sleep(0))
    return applied


def applied_counts(batch: DirectoryBatch, preferences: int) -> dict[str, int]:
    """What ``apply_directory`` answers: rows per kind (preferences: those written)."""
    return {
        "units": len(batch.units),
        "groups": len(batch.groups),
        "persons": len(batch.persons),
        "relations": len(batch.relations),
        "preferences": preferences,
    }


class LockBackend(Protocol):
    """A backend's tenant directory lock: a token that expires unless renewed."""

    async def try_lock(self, tenant_id: str, token: str, ttl: float) -> bool:
        """Take the lock if it is free or expired."""

    async def renew_lock(self, tenant_id: str, token: str, ttl: float) -> bool:
        """Extend the lock if ``token`` still holds it."""

    async def unlock(self, tenant_id: str, token: str) -> None:
        """Free the lock if ``token`` holds it."""


class Lease:
    """A held directory lock; :meth:`check` before each write. Besides what the renewer
    reports, the lease knows when the lock expires unless renewed (``held_until``, loop
    time), so a renewal that is late or failing cannot let a write pass after another
    process could have taken the lock."""

    def __init__(self, held_until: float) -> None:
        self.lost = False
        self.held_until = held_until

    def check(self) -> None:
        margin = LOCK_TTL / 6  # a chunk's write must end before the lock can expire
        if self.lost or asyncio.get_running_loop().time() > self.held_until - margin:
            raise StoreError("the directory lock was lost; post the batch again")


class DirectoryLocks:
    """One directory writer per tenant: an asyncio lock in this process, and the
    backend's lock (with a token and an expiry, renewed while held) across processes."""

    def __init__(self, backend: LockBackend) -> None:
        self._backend = backend
        self._local: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, tenant_id: str) -> AsyncIterator[Lease]:
        async with self._local.setdefault(tenant_id, asyncio.Lock()):
            token = secrets.token_hex(16)
            loop = asyncio.get_running_loop()
            taken_at = loop.time()
            await self._acquire(tenant_id, token)
            lease = Lease(taken_at + LOCK_TTL)
            renewer = asyncio.create_task(self._renew(tenant_id, token, lease))
            try:
                yield lease
            finally:
                renewer.cancel()
                # wait() does not raise the renewer's cancellation, only this task's own.
                await asyncio.wait([renewer])
                try:
                    await self._backend.unlock(tenant_id, token)
                except StoreError:  # it expires by itself within LOCK_TTL
                    log.warning("a directory lock could not be released; it will expire")

    async def _acquire(self, tenant_id: str, token: str) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + LOCK_WAIT
        pause = 0.02
        while not await self._backend.try_lock(tenant_id, token, LOCK_TTL):
            if loop.time() > give_up:
                raise StoreError("another directory change of this tenant is still running")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _renew(self, tenant_id: str, token: str, lease: Lease) -> None:
        """Extend the lock every third of its life; a failing renewal is tried again
        each second (the lease itself stops the writes once the lock may expire)."""
        loop = asyncio.get_running_loop()
        pause = LOCK_TTL / 3
        while True:
            await asyncio.sleep(pause)
            asked_at = loop.time()
            try:
                held = await self._backend.renew_lock(tenant_id, token, LOCK_TTL)
            except StoreError:
                pause = 1.0
                continue
            if not held:
                log.warning("a directory lock was lost before its batch was written")
                lease.lost = True
                return
            lease.held_until, pause = asked_at + LOCK_TTL, LOCK_TTL / 3
