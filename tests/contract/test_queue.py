"""Store contract: the work queue and the send ledger (ports JobQueue, SendLedger).

These tests speak only the ports: nothing here may know which backend runs.
"""

from __future__ import annotations

import asyncio

from gateway.models import DeliveryStatus
from gateway.store import LEASE_ENDED, SendOutcome, Store
from gateway.urgent_handoff import UrgentHandoff

from .builders import T0, accepted, at, delivery, job, message
from .conftest import Backend


async def test_claim_leases_a_job_until_the_lease_ends(store: Store) -> None:
    await store.add_deliveries([], [job("send:1", due=at(0)), job("send:2", due=at(10))])
    (first,) = await store.claim_jobs(["send"], 10, at(5), lease_seconds=30)
    assert (first.id, first.attempts, first.due_at) == ("send:1", 1, at(0))
    assert [j.id for j in await store.claim_jobs(["send"], 10, at(20), 30)] == ["send:2"]
    assert await store.claim_jobs(["send"], 10, at(34), 30) == []
    (again,) = await store.claim_jobs(["send"], 10, at(35), 30)
    assert (again.id, again.attempts) == ("send:1", 2)


async def test_claim_takes_oldest_due_first_and_only_given_kinds(store: Store) -> None:
    jobs = [job(f"send:{i}", due=at(10 - i)) for i in range(5)] + [job("plan:x", kind="plan")]
    await store.add_deliveries([], jobs)
    claimed = await store.claim_jobs(["send"], 2, at(100), 30)
    assert [j.id for j in claimed] == ["send:4", "send:3"]
    both = await store.claim_jobs(["send", "plan"], 10, at(100), 30)
    assert {j.id for j in both} == {"send:0", "send:1", "send:2", "plan:x"}
    assert await store.claim_jobs([], 10, at(100), 30) == []
    assert await store.claim_jobs(["send"], 0, at(1000), 30) == []


async def test_concurrent_claimers_never_share_a_job(store: Store) -> None:
    await store.add_deliveries([], [job(f"send:{i:03}") for i in range(60)])
    batches = await asyncio.gather(*(store.claim_jobs(["send"], 7, T0, 30) for _ in range(12)))
    ids = [j.id for batch in batches for j in batch]
    assert len(ids) == len(set(ids)) == 60


async def test_two_store_instances_never_share_a_job(backend: Backend) -> None:
    async with backend.open() as one, backend.open() as two:
        await one.add_deliveries([], [job(f"send:{i:03}") for i in range(40)])
        batches = await asyncio.gather(
            *(s.claim_jobs(["send"], 3, T0, 30) for s in (one, two) * 10)
        )
    ids = [j.id for batch in batches for j in batch]
    assert len(ids) == len(set(ids)) == 40


async def test_retry_job_makes_it_due_later(store: Store) -> None:
    await store.add_deliveries([], [job("send:1")])
    (claimed,) = await store.claim_jobs(["send"], 1, T0, 300)
    await store.retry_job(claimed.id, at(60), "timeout")
    assert await store.claim_jobs(["send"], 1, at(59), 300) == []
    (again,) = await store.claim_jobs(["send"], 1, at(60), 300)
    assert (again.attempts, again.last_error, again.due_at) == (2, "timeout", at(60))
    # a retry moves a job earlier, too (Retry-After shorter than the lease)
    await store.retry_job(again.id, at(61), "429")
    (third,) = await store.claim_jobs(["send"], 1, at(61), 300)
    assert third.attempts == 3


async def test_finish_job_removes_it(store: Store) -> None:
    await store.add_deliveries([], [job("plan:1", kind="plan")])
    (claimed,) = await store.claim_jobs(["plan"], 1, T0, 1)
    await store.finish_job(claimed.id)
    assert await store.claim_jobs(["plan"], 1, at(3600), 1) == []
    await store.finish_job("plan:unknown")  # finishing twice is harmless


async def test_finish_send(store: Store) -> None:
    msg = await accepted(store, message())
    d = delivery(msg, "p1", "sms", address="+4791234567")
    await store.add_deliveries([d], [job(f"send:{d.id}")])
    (claimed,) = await store.claim_jobs(["send"], 1, T0, 30)
    assert await store.finish_send(
        claimed.id, d.id, DeliveryStatus.sent, at(1), provider_id="SM1", segments=1
    )
    stored = await store.get_delivery(d.id)
    assert stored is not None
    assert (stored.status, stored.provider_id, stored.segments) == (DeliveryStatus.sent, "SM1", 1)
    assert await store.claim_jobs(["send"], 1, at(3600), 30) == []
    # a refused move still ends the job
    await store.add_deliveries([], [job("send:again")])
    assert not await store.finish_send("send:again", d.id, DeliveryStatus.queued, at(2))
    assert await store.claim_jobs(["send"], 1, at(3600), 30) == []


async def test_finish_sends_in_one_batch(store: Store) -> None:
    msg = await accepted(store, message())
    ds = [delivery(msg, f"p{i}") for i in range(5)]
    await store.add_deliveries(ds, [job(f"send:{d.id}") for d in ds])
    await store.transition(ds[4].id, DeliveryStatus.failed, at(1), reason="dead")
    claimed = await store.claim_jobs(["send"], 10, at(2), 30)
    assert len(claimed) == 5
    outcomes = [
        SendOutcome(f"send:{ds[0].id}", ds[0].id, DeliveryStatus.sent, at(3), provider_id="x0"),
        SendOutcome(f"send:{ds[1].id}", ds[1].id, DeliveryStatus.sent, at(3)),
        SendOutcome(f"send:{ds[2].id}", ds[2].id, DeliveryStatus.failed, at(3), reason="400"),
        SendOutcome(f"send:{ds[3].id}", ds[3].id, DeliveryStatus.delivered, at(3)),
        SendOutcome(f"send:{ds[3].id}", ds[3].id, DeliveryStatus.sent, at(4)),  # behind
        SendOutcome(f"send:{ds[4].id}", ds[4].id, DeliveryStatus.sent, at(3)),  # final already
    ]
    assert await store.finish_sends(outcomes) == 4
    stored = await store.get_deliveries([d.id for d in ds])
    assert [stored[d.id].status for d in ds] == [
        DeliveryStatus.sent,
        DeliveryStatus.sent,
        DeliveryStatus.failed,
        DeliveryStatus.delivered,
        DeliveryStatus.failed,
    ]
    assert stored[ds[0].id].provider_id == "x0"
    assert stored[ds[2].id].reason == "400"
    assert await store.claim_jobs(["send"], 10, at(3600), 30) == []
    assert await store.finish_sends([]) == 0


async def test_queue_stats(store: Store) -> None:
    await store.add_deliveries(
        [],
        [
            job("send:1", due=at(0)),
            job("send:2", due=at(50)),
            job("send:3", due=at(500)),
            job("plan:1", kind="plan", due=at(90)),
        ],
    )
    await store.claim_jobs(["send"], 1, at(60), 600)  # send:1 is leased
    stats = await store.queue_stats(at(100))
    assert stats["send"] == (2, 50.0)
    assert stats["plan"] == (1, 10.0)
    quiet = await store.queue_stats(at(30))
    assert quiet["send"] == (2, 0.0)  # send:2 and send:3 wait, none of them is due yet
    # once its lease has ended, the leased job waits again (a crashed worker's)
    assert (await store.queue_stats(at(700)))["send"] == (3, 700.0)


async def test_a_send_ended_by_its_first_holder_after_a_takeover_and_retry_is_gone(
    backend: Backend,
) -> None:
    """A slow first holder's outcome wins over the retry of the process that took its job
    over after the lease: the job is not claimed again and the queue is empty."""
    async with backend.open() as one, backend.open() as two:
        msg = await accepted(one, message())
        d = delivery(msg, "p1", "sms", address="+4790000001")
        await one.add_deliveries([d], [job(f"send:{d.id}")])
        (first,) = await one.claim_jobs(["send"], 1, at(1), 30)
        (taken,) = await two.claim_jobs(["send"], 1, at(40), 30)  # the lease ended
        assert taken.id == first.id
        await two.retry_job(taken.id, at(50), "timeout")
        outcome = SendOutcome(first.id, d.id, DeliveryStatus.sent, at(45), provider_id="SM1")
        assert await one.finish_sends([outcome]) == 1
        assert await two.claim_jobs(["send"], 10, at(60), 30) == []
        assert await one.claim_jobs(["send"], 10, at(200), 30) == []
        assert "send" not in await one.queue_stats(at(200))  # (the message's plan job is)
        assert (await one.get_deliveries([d.id]))[d.id].status is DeliveryStatus.sent


async def test_a_holder_whose_lease_was_taken_over_gives_nothing_back(
    backend: Backend,
) -> None:
    """A worker that stalled past its lease, its job taken over by another claim, then puts
    the job off (its buffer's give-back at half the lease) or retries it (its own send
    timed out): the claim that took it over keeps it, so no third claim gets the job and
    sends it again while that one sends it. The holder's own retry still counts."""
    async with backend.open() as one, backend.open() as two:
        await one.add_deliveries([], [job("send:1"), job("send:2")])
        first, other = await one.claim_jobs(["send"], 2, at(1), 30)
        taken = await two.claim_jobs(["send"], 2, at(40), 30)  # both leases ended
        assert {j.id for j in taken} == {"send:1", "send:2"}
        await one.postpone_job(first.id, at(41), "lease_half_gone")
        await one.retry_job(other.id, at(41), "smtp_timeout")
        assert await one.claim_jobs(["send"], 10, at(42), 30) == []
        assert await two.claim_jobs(["send"], 10, at(69), 30) == []
        await two.retry_job(first.id, at(50), "timeout")  # the holder's retry counts
        (again,) = await one.claim_jobs(["send"], 10, at(50), 30)
        assert (again.id, again.attempts, again.last_error) == (first.id, 3, "timeout")
        (late,) = await one.claim_jobs(["send"], 10, at(70), 30)  # two's lease ended
        assert (late.id, late.attempts) == (other.id, 3)


async def test_a_claim_that_takes_over_an_ended_lease_says_so(backend: Backend) -> None:
    """A job claimed after the lease of the claim before ended (that worker stopped or
    stalled, and may have done it) comes with LEASE_ENDED as its last error, and keeps it
    while it is held; a first claim, and one after a retry, do not."""
    async with backend.open() as one, backend.open() as two:
        await one.add_deliveries([], [job("send:1"), job("send:2")])
        first = await one.claim_jobs(["send"], 2, at(1), 30)
        assert [j.last_error for j in first] == [None, None]
        await one.retry_job("send:2", at(2), "smtp_timeout")
        taken = await two.claim_jobs(["send"], 10, at(40), 30)
        assert sorted((j.id, j.attempts, j.last_error) for j in taken) == [
            ("send:1", 2, LEASE_ENDED),
            ("send:2", 2, "smtp_timeout"),
        ]
        assert (await two.get_jobs(["send:1"]))["send:1"].last_error == LEASE_ENDED


async def test_a_job_handed_over_in_its_process_and_taken_over_gives_nothing_back(
    backend: Backend,
) -> None:
    """Sends stored as claimed by their own process (an absence alert's, handed past the
    queue: gateway/urgent_handoff.py) whose worker then stalled past that lease: another
    claim took them over, and the first process's give-back or retry leaves them to it.
    Its retry before anyone took the job still counts."""
    handoff = UrgentHandoff(8)
    handoff.attach(lambda jobs, deliveries: None, 30, ["send"])
    urgent = [job(f"send:{n}").model_copy(update={"urgent": True}) for n in (1, 2, 3)]
    handed = handoff.lease(urgent, at(0))
    assert handed is not None
    async with backend.open() as one, backend.open() as two:
        await one.add_deliveries([], handed)
        one.hold_handed(handed)
        assert await two.claim_jobs(["send"], 10, at(29), 30) == []  # the hand-over's lease
        await one.retry_job("send:3", at(20), "smtp_timeout")  # its own: counts
        # At the very microsecond the hand-over's lease ends (its stamp must not be this
        # claim's).
        taken = await two.claim_jobs(["send"], 10, at(30), 30)
        # Taken over: the hand-over's worker may have sent them (send:3 was given back).
        assert sorted((j.id, j.attempts, j.last_error) for j in taken) == [
            ("send:1", 2, LEASE_ENDED),
            ("send:2", 2, LEASE_ENDED),
            ("send:3", 2, "smtp_timeout"),
        ]
        await two.retry_job("send:2", at(300), "timeout")  # the new holder's backoff
        await one.postpone_job("send:1", at(32), "lease_half_gone")
        await one.retry_job("send:2", at(32), "smtp_timeout")
        assert await one.claim_jobs(["send"], 10, at(33), 30) == []
        await two.finish_job("send:3")
        (late,) = await one.claim_jobs(["send"], 10, at(61), 30)  # two's lease ended
        assert (late.id, late.attempts, late.last_error) == ("send:1", 3, LEASE_ENDED)
        await one.finish_job(late.id)
        (retried,) = await one.claim_jobs(["send"], 10, at(300), 30)  # after two's backoff
        assert (retried.id, retried.attempts, retried.last_error) == ("send:2", 3, "timeout")
