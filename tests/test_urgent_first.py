"""Urgent work preempts a running broadcast, on SQLite and Redis: an urgent job queued
while the dispatcher is busy sending a low-priority backlog is claimed and done before
the backlog is, without waiting for the claimed batch to drain; normal work still gets
its share while urgent work runs; every job is done once.

The jobs are of a kind of the test's own whose handler waits for the test ("the
provider"), so what is claimed and started when is decided by the dispatcher alone;
the waits below are bounded loops for a state, never timing assertions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway import dispatcher as dispatching
from gateway.channel_gate import ChannelGate
from gateway.clock import ManualClock
from gateway.dispatcher import Dispatcher
from gateway.models import Delivery, Job, Role
from gateway.render import Renderer
from gateway.service import TEMPLATES_DIR
from gateway.settings import DispatchSettings
from gateway.store import Store
from gateway.store.encoding import us
from gateway.store.lanes import order_at
from gateway.urgent_handoff import UrgentHandoff
from tests.contract.conftest import (
    forget_keys,
    redis_backend,
    redis_prefix,
    require_redis,
    sqlite_backend,
)

KIND = "work"
TENANT = "tenant-a"


@pytest.fixture(params=["sqlite", "redis"])
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "redis":
        require_redis()
        factory = redis_backend
    else:
        factory = sqlite_backend
    try:
        async with factory(tmp_path) as store:
            yield store
    finally:
        if request.param == "redis":
            forget_keys(redis_prefix(tmp_path))


class Provider:
    """The handler of KIND jobs: records each start, holds every job until released."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.started: list[str] = []
        self.done: list[str] = []
        self.open = asyncio.Event()
        self.urgent_open = asyncio.Event()

    async def __call__(self, job: Job) -> None:
        self.started.append(job.id)
        await (self.urgent_open if job.urgent else self.open).wait()
        await self.store.finish_job(job.id)
        self.done.append(job.id)


def jobs(clock: ManualClock, prefix: str, n: int, *, urgent: bool = False) -> list[Job]:
    now = clock.now()
    return [
        Job(
            id=f"{KIND}:{prefix}{i:03}",
            tenant_id=TENANT,
            kind=KIND,
            ref=f"{prefix}{i}",
            due_at=now,
            urgent=urgent,
        )
        for i in range(n)
    ]


def dispatcher(
    store: Store, clock: ManualClock, provider: Provider, **options: float
) -> Dispatcher:
    settings = DispatchSettings(**{"concurrency": 10, "batch": 10, **options})
    return Dispatcher(
        store,  # type: ignore[arg-type]  # only the queue is used by KIND jobs
        {},
        Renderer(TEMPLATES_DIR, "https://budbringer.test"),
        clock,
        settings,
        handlers={KIND: provider},
    )


async def until(state: Callable[[], bool], runner: asyncio.Task[None]) -> None:
    """Let the dispatcher run until ``state`` holds (bounded; fails if it never does)."""
    for _ in range(2000):
        if state() or runner.done():
            break
        await asyncio.sleep(0.005)
    assert state(), "the dispatcher never got there"


async def test_an_urgent_job_queued_during_a_backlog_is_done_before_the_backlog(
    queue: Store, clock: ManualClock
) -> None:
    provider = Provider(queue)
    worker = dispatcher(queue, clock, provider)
    backlog = jobs(clock, "low", 60)
    await queue.add_deliveries([], backlog)
    runner = asyncio.create_task(worker.run())
    try:
        # Busy with the broadcast: every slot normal work may take is held, a batch is
        # claimed and waits in the buffer.
        await until(lambda: len(provider.started) == 9, runner)
        (alert,) = jobs(clock, "alert", 1, urgent=True)
        await queue.add_deliveries([], [alert])
        worker.work_available.set()  # as the intake does in this process
        provider.urgent_open.set()
        await until(lambda: alert.id in provider.done, runner)
        # Done while the backlog's first sends were still held: not after the buffer.
        assert len(provider.started) <= 10
        assert not any(job_id in provider.done for job_id in (j.id for j in backlog))
        provider.open.set()
        await until(lambda: len(provider.done) == 61, runner)
    finally:
        worker.stop()
        await runner
    assert sorted(provider.done) == sorted([alert.id, *(j.id for j in backlog)])  # once each
    assert await queue.claim_jobs([KIND], 100, clock.now(), 30) == []


async def test_an_urgent_message_larger_than_a_claim_is_claimed_as_its_sends_end(
    queue: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No periodic claim to fall back on: only the urgent work's own flow claims again.
    monkeypatch.setattr(dispatching, "URGENT_POLL", 3600.0)
    provider = Provider(queue)
    provider.urgent_open.set()  # the provider answers urgent sends at once
    worker = dispatcher(queue, clock, provider)
    backlog = jobs(clock, "low", 60)
    await queue.add_deliveries([], backlog)
    runner = asyncio.create_task(worker.run())
    try:
        await until(lambda: len(provider.started) == 9, runner)
        emergency = jobs(clock, "emergency", 40, urgent=True)  # four claims' worth
        await queue.add_deliveries([], emergency)
        worker.work_available.set()  # once, as the intake does
        await until(lambda: all(j.id in provider.done for j in emergency), runner)
        assert not any(j.id in provider.done for j in backlog)  # the broadcast still held
        provider.open.set()
        await until(lambda: len(provider.done) == 100, runner)
    finally:
        worker.stop()
        await runner
    assert len(set(provider.done)) == 100


async def test_normal_work_keeps_its_share_while_urgent_work_runs(
    queue: Store, clock: ManualClock
) -> None:
    provider = Provider(queue)
    worker = dispatcher(queue, clock, provider, normal_share=0.2)
    urgent = jobs(clock, "alert", 30, urgent=True)
    await queue.add_deliveries([], urgent + jobs(clock, "low", 30))
    runner = asyncio.create_task(worker.run())
    try:
        # Every slot is taken, urgent jobs first, yet normal work holds its share (2 of
        # 10 here) of the slots: never starved by a stream of urgent work.
        def normal_started() -> int:
            return sum(1 for job_id in provider.started if "low" in job_id)

        await until(lambda: len(provider.started) == 10 and normal_started() >= 1, runner)
        assert 1 <= normal_started() <= 2
        provider.open.set()
        provider.urgent_open.set()
        await until(lambda: len(provider.done) == 60, runner)
    finally:
        worker.stop()
        await runner
    assert len(set(provider.done)) == 60


async def test_an_urgent_send_takes_the_channels_next_free_slot() -> None:
    gate = ChannelGate(3)
    for _ in range(3):  # every slot: broadcast sends in flight
        assert await gate.enter() is None
    order: list[str] = []

    async def send(name: str, urgent: bool) -> None:
        assert await gate.enter(urgent=urgent) is None
        order.append(name)
        gate.leave(0.01)

    waiting = [asyncio.create_task(send(f"normal{i}", False)) for i in range(2)]
    await asyncio.sleep(0)  # the broadcast's sends queue first
    waiting.append(asyncio.create_task(send("alert", True)))
    await asyncio.sleep(0)
    gate.leave(0.01)  # one broadcast send ends: its slot goes to the alert
    await asyncio.gather(*waiting)
    assert order == ["alert", "normal0", "normal1"]
    gate.leave(0.01)
    gate.leave(0.01)
    assert gate.in_flight == 0


async def test_a_send_past_the_waiting_ones_takes_a_freed_slot_and_a_cancel_leaves_none() -> None:
    """Past ``limit`` waiting sends a send waits with a timer (channel_gate.STALL_WAIT),
    not a task: a slot freed in time is its, and a cancelled wait leaves the line clean."""
    gate = ChannelGate(1)
    assert await gate.enter() is None  # the one slot in flight
    first = asyncio.create_task(gate.enter())  # waits without a dispatcher slot
    await asyncio.sleep(0)
    past = asyncio.create_task(gate.enter())  # beyond the waiting ones: excess
    cancelled = asyncio.create_task(gate.enter())
    await asyncio.sleep(0)
    assert (gate.waiting, gate.excess) == (3, 2)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    gate.leave(0.01)
    assert await first is None
    gate.leave(0.01)
    assert await past is None
    assert (gate.waiting, gate.excess, gate.in_flight) == (0, 0, 1)
    gate.leave(0.01)
    # Nothing left in line: the next send takes the free slot at once.
    assert await asyncio.wait_for(gate.enter(), 1) is None
    assert gate.in_flight == 1


async def test_small_urgent_work_handed_over_runs_before_the_urgent_backlog(
    queue: Store, clock: ManualClock
) -> None:
    provider = Provider(queue)  # holds the backlog: an emergency's sends, say
    done: list[str] = []
    freed = asyncio.Semaphore(0)

    async def alert_handler(job: Job) -> None:
        done.append(job.id)
        provider.started.append(job.id)  # one order for both kinds
        await queue.finish_job(job.id)

    async def backlog_handler(job: Job) -> None:
        provider.started.append(job.id)
        await freed.acquire()  # one backlog job ends per release
        await queue.finish_job(job.id)
        provider.done.append(job.id)

    worker = Dispatcher(
        queue,  # type: ignore[arg-type]  # only the queue is used by these jobs
        {},
        Renderer(TEMPLATES_DIR, "https://budbringer.test"),
        clock,
        DispatchSettings(concurrency=10, batch=10),
        handlers={KIND: backlog_handler, "alert": alert_handler},
    )
    (alert,) = [
        Job(id="alert:1", tenant_id=TENANT, kind="alert", ref="1", due_at=clock.now(), urgent=True)
    ]
    assert worker.handoff.lease([alert], clock.now()) is None  # no run loop yet: queued
    await queue.add_deliveries([], jobs(clock, "emergency", 40, urgent=True))
    runner = asyncio.create_task(worker.run())
    try:
        await until(lambda: len(provider.started) == 10, runner)  # every slot taken
        leased = worker.handoff.lease([alert], clock.now())
        assert leased is not None and leased[0].attempts == 1
        await queue.add_deliveries([], leased)
        # Stored as claimed by this process: no other worker may take it meanwhile.
        assert await queue.claim_jobs(["alert"], 10, clock.now(), 30) == []
        assert worker.handoff.hand(leased)
        freed.release()  # one backlog job ends: its slot goes to the alert
        await until(lambda: done == [alert.id], runner)
        assert provider.started.index(alert.id) == 10  # before the backlog's eleventh
        for _ in range(40):
            freed.release()
        await until(lambda: len(provider.done) == 40, runner)
    finally:
        worker.stop()
        await runner
    assert worker.handoff.lease([alert], clock.now()) is None  # stopped: queued again
    assert await queue.claim_jobs(["alert", KIND], 100, clock.now(), 30) == []


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_handed_job_another_worker_took_over_is_left_to_it(
    backend: str, tmp_path: Path, clock: ManualClock
) -> None:
    """The dispatcher tells its store which jobs it was handed: when its worker stalled past
    the hand-over's lease and another worker took the job, the first one's retry gives
    nothing back, so no third worker sends it while the second does."""
    if backend == "redis":
        require_redis()
    factory = redis_backend if backend == "redis" else sqlite_backend
    release = asyncio.Event()
    retried: list[str] = []
    alert = Job(
        id="alert:1", tenant_id=TENANT, kind="alert", ref="1", due_at=clock.now(), urgent=True
    )
    try:
        async with factory(tmp_path) as mine, factory(tmp_path) as other:

            async def alert_handler(job: Job) -> None:
                await release.wait()
                await mine.retry_job(job.id, clock.now(), "timeout")  # its send timed out
                retried.append(job.id)

            worker = Dispatcher(
                mine,  # type: ignore[arg-type]  # only the queue is used by these jobs
                {},
                Renderer(TEMPLATES_DIR, "https://budbringer.test"),
                clock,
                # no idle claims of its own: the takeover below is the other worker's
                DispatchSettings(concurrency=10, batch=10, lease_seconds=30, poll_interval=3600),
                handlers={"alert": alert_handler},
            )
            runner = asyncio.create_task(worker.run())
            try:
                await until(lambda: worker.handoff.lease([alert], clock.now()) is not None, runner)
                leased = worker.handoff.lease([alert], clock.now())
                assert leased is not None
                await mine.add_deliveries([], leased)
                assert worker.handoff.hand(leased)
                clock.advance(31)  # this worker stalled past the hand-over's lease
                (taken,) = await other.claim_jobs(["alert"], 10, clock.now(), 30)
                release.set()
                await until(lambda: retried == [alert.id], runner)
            finally:
                worker.stop()
                await runner
            assert await mine.claim_jobs(["alert"], 10, clock.now(), 30) == []  # other's
            other_retry = clock.now()
            await other.retry_job(taken.id, other_retry, "timeout")  # the holder's counts
            (again,) = await mine.claim_jobs(["alert"], 10, clock.now(), 30)
            assert again.attempts == 3
    finally:
        if backend == "redis":
            forget_keys(redis_prefix(tmp_path))


async def test_only_a_few_urgent_jobs_are_handed_over() -> None:
    clock = ManualClock()
    handoff = UrgentHandoff(2)
    handoff.attach(lambda jobs, deliveries: None, 60, [KIND])
    urgent = jobs(clock, "u", 3, urgent=True)
    assert handoff.lease(urgent[:2], clock.now()) is not None
    assert handoff.lease(urgent, clock.now()) is None  # more than the limit
    assert handoff.lease(jobs(clock, "n", 1), clock.now()) is None  # not urgent
    assert UrgentHandoff(0).lease(urgent[:1], clock.now()) is None  # switched off


def test_only_kinds_the_dispatcher_handles_are_handed_over() -> None:
    # A job of a kind it has no handler for would be ended as unknown there: lost. Queued,
    # a worker that handles the kind claims it.
    clock = ManualClock()
    handoff = UrgentHandoff(4)
    handoff.attach(lambda jobs, deliveries: None, 60, ["plan", KIND])
    (send,) = jobs(clock, "s", 1, urgent=True)
    other = send.model_copy(update={"id": "absence_plan:1", "kind": "absence_plan"})
    assert handoff.lease([send], clock.now()) is not None
    assert handoff.lease([other], clock.now()) is None
    assert handoff.lease([send, other], clock.now()) is None


def test_a_handed_job_keeps_no_rank() -> None:
    # Stored as claimed, it is due when the lease ends: a rank would move it earlier in
    # the lane (gateway/store/lanes.py) and another worker could take it meanwhile.
    clock = ManualClock()
    handoff = UrgentHandoff(2)
    handoff.attach(lambda jobs, deliveries: None, 60, [KIND])
    ranked = [job.model_copy(update={"rank": 0}) for job in jobs(clock, "u", 1, urgent=True)]
    (leased,) = handoff.lease(ranked, clock.now()) or []
    assert (leased.rank, leased.attempts) == (None, 1)
    assert order_at(leased) == us(clock.now() + timedelta(seconds=60))


def test_only_the_deliveries_of_handed_sends_go_to_the_dispatcher() -> None:
    # An in-app delivery or a suppression record has no send job: handed over, nothing
    # would ever take it out of the dispatcher's prefetched deliveries again.
    clock = ManualClock()
    taken: list[dict[str, Delivery]] = []
    handoff = UrgentHandoff(4)
    handoff.attach(lambda jobs, deliveries: taken.append(deliveries), 60, [KIND])
    sends = jobs(clock, "s", 2, urgent=True)
    leased = handoff.lease(sends, clock.now())
    assert leased is not None
    handoff.hand(leased, [delivery("s0"), delivery("s1"), delivery("inapp0")])
    assert [sorted(t) for t in taken] == [["s0", "s1"]]


def delivery(delivery_id: str) -> Delivery:
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    return Delivery(
        id=delivery_id,
        tenant_id=TENANT,
        message_id="m1",
        recipient_id="p1",
        recipient_role=Role.guardian,
        channel="sms",
        address="+4790000000",
        language="nb",
        created_at=now,
        updated_at=now,
    )


async def test_a_handed_job_is_not_counted_as_waiting_on_sqlite(tmp_path: Path) -> None:
    # Stored as claimed by its process until its lease ends, then waiting like a job of a
    # stopped worker. (Redis still counts it in its waiting set: docs/redis.md.)
    clock = ManualClock()
    handoff = UrgentHandoff(2)
    handoff.attach(lambda jobs, deliveries: None, 60, [KIND])
    (leased,) = handoff.lease(jobs(clock, "u", 1, urgent=True), clock.now()) or []
    async with sqlite_backend(tmp_path) as store:
        await store.add_deliveries([], [leased])
        assert (await store.queue_stats(clock.now()))[KIND] == (0, 0.0)
        later = clock.now() + timedelta(seconds=61)
        assert await store.queue_stats(later) == {KIND: (1, 1.0)}
        (again,) = await store.claim_jobs([KIND], 10, later, 60)
        assert (again.id, again.attempts) == (leased.id, 2)


async def test_a_channel_is_silent_once_its_provider_answers_nothing_for_a_while() -> None:
    """``silent`` counts from the last answer, or from getting busy after an idle spell
    (an hour idle is no silence): the dispatcher then starts the sends it set aside, and
    the gate's stall rule puts them off."""
    gate = ChannelGate(2)
    assert not gate.silent(0.05)  # nothing in flight
    await asyncio.sleep(0.06)
    assert await gate.enter() is None
    assert not gate.silent(0.05)  # just got busy
    await asyncio.sleep(0.06)
    assert gate.silent(0.05)  # no answer since
    assert await gate.enter() is None
    gate.leave(0.06)  # an answer
    assert not gate.silent(0.05)
    gate.leave(None)  # no send was made: no answer either
    await asyncio.sleep(0.06)
    assert not gate.silent(0.05)  # idle again
