"""A job's handler knows how much of the job's lease is left when it starts
(gateway/lease_left.py): the dispatcher counts from the job's claim, so a job that
waited in the claimed buffer while every slot was busy starts with less. A channel then
makes no request that could end after the lease, when another worker may take the job
over and send it too (tests/test_sms.py and tests/test_push.py show the channels')."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.channel_health import ChannelHealth
from gateway.clock import ManualClock
from gateway.dispatcher import Dispatcher
from gateway.errors import LeaseShort
from gateway.lease_left import room_for
from gateway.models import Job
from gateway.render import Renderer
from gateway.service import TEMPLATES_DIR
from gateway.settings import DispatchSettings
from tests.contract.conftest import sqlite_backend

KIND = "work"
LEASE = 60.0


class Provider:
    """Handles the test's jobs: notes whether a 40 s request would fit in the lease left,
    then waits for the test before finishing."""

    def __init__(self) -> None:
        self.fits: dict[str, bool] = {}
        self.open = asyncio.Event()
        self.store: object = None

    async def __call__(self, job: Job) -> None:
        try:
            room_for(40.0)
            self.fits[job.id] = True
        except LeaseShort:
            self.fits[job.id] = False
        await self.open.wait()
        await self.store.finish_job(job.id)  # type: ignore[attr-defined]


async def test_a_job_that_waited_in_the_buffer_starts_with_less_of_its_lease(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    provider = Provider()
    async with sqlite_backend(tmp_path) as store:
        provider.store = store
        settings = DispatchSettings(concurrency=3, batch=6, lease_seconds=LEASE)
        renderer = Renderer(TEMPLATES_DIR, "https://budbringer.test")
        worker = Dispatcher(store, {}, renderer, clock, settings, handlers={KIND: provider})
        now = clock.now()
        ids = [f"{KIND}:{n}" for n in range(3)]
        await store.add_deliveries(
            [], [Job(id=i, tenant_id="t", kind=KIND, ref=i, due_at=now) for i in ids]
        )
        runner = asyncio.create_task(worker.run())
        try:
            # Two slots for normal work (one is kept for urgent work): two start at
            # once with the whole lease; the third waits, claimed, in the buffer.
            await until(lambda: len(provider.fits) == 2, runner)
            assert set(provider.fits.values()) == {True}
            clock.advance(25)  # less than half the lease: they still start, with 35 s left
            provider.open.set()
            await until(lambda: len(provider.fits) == 3, runner)
        finally:
            worker.stop()
            await runner
    assert sorted(provider.fits.values()) == [False, True, True]


def test_a_send_stopped_short_of_its_lease_says_nothing_about_the_provider() -> None:
    health = ChannelHealth(ManualClock(), threshold=5)
    health.record("sms", None, probe=False)
    for _ in range(20):
        health.record("sms", LeaseShort("no room", code="lease_short"), probe=False)
    assert health.snapshot()["sms"]["state"] == "ok"  # 20 in a row, not one counted


async def until(state: object, runner: asyncio.Task[None]) -> None:
    for _ in range(2000):
        if state() or runner.done():  # type: ignore[operator]
            break
        await asyncio.sleep(0.005)
    assert state(), "the dispatcher never got there"  # type: ignore[operator]
