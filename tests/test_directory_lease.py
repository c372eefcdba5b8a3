"""A directory batch's lease (gateway/store/directory_apply.py) stops the writes once
the lock may have expired, whatever the renewer last reported: a renewal that is late
(a busy writer) or failing (a Redis blip) must not let a chunk be written after another
process could have taken the lock; a blip alone does not end a batch."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import StoreError
from gateway.store import directory_apply
from gateway.store.directory_apply import LOCK_TTL, DirectoryLocks, Lease


async def test_a_lease_past_its_lock_expiry_refuses_the_next_write() -> None:
    now = asyncio.get_running_loop().time()
    Lease(now + LOCK_TTL).check()  # fresh: writes go on
    with pytest.raises(StoreError):
        Lease(now + LOCK_TTL / 6 - 0.01).check()  # the next chunk could outlive the lock


class _Flaky:
    """A lock backend whose renewals fail ``fails`` times with StoreError, then hold."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.renewals = 0
        self.unlocked = False

    async def try_lock(self, tenant_id: str, token: str, ttl: float) -> bool:
        return True

    async def renew_lock(self, tenant_id: str, token: str, ttl: float) -> bool:
        self.renewals += 1
        if self.fails:
            self.fails -= 1
            raise StoreError("blip")
        return True

    async def unlock(self, tenant_id: str, token: str) -> None:
        self.unlocked = True


async def test_a_failing_renewal_is_tried_again_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(directory_apply, "LOCK_TTL", 0.3)  # renew every 0.1 s
    backend = _Flaky(fails=1)
    async with DirectoryLocks(backend).hold("t") as lease:
        while backend.renewals < 3:
            await asyncio.sleep(0.02)
        assert not lease.lost
    assert backend.unlocked
