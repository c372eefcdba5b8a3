"""Contract: the urgent lane of the work queue is claimed first, the normal lane keeps
its share (gateway/store/lanes.py), on every backend and across store instances."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.models import Job
from gateway.store import Store

from .conftest import Backend

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
A = "tenant-a"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(jid: str, *, kind: str = "send", due: datetime = T0, urgent: bool = False) -> Job:
    ref = jid.removeprefix(kind + ":")
    return Job(id=jid, tenant_id=A, kind=kind, ref=ref, due_at=due, urgent=urgent)


def backlog(n: int, *, kind: str = "send") -> list[Job]:
    """A general broadcast's send jobs, all due before anything urgent arrives."""
    return [job(f"{kind}:low{i:05}", kind=kind, due=at(i / 1000)) for i in range(n)]


async def test_an_urgent_job_queued_after_a_backlog_is_claimed_first(store: Store) -> None:
    await store.add_deliveries([], backlog(500))
    await store.add_deliveries([], [job("send:alert", due=at(30), urgent=True)])
    # strict order (no share kept for the normal lane): the one job claimed is the urgent one
    (first,) = await store.claim_jobs(["send"], 1, at(60), 30, normal_share=0.0)
    assert (first.id, first.urgent) == ("send:alert", True)
    # and then the backlog, oldest first
    nxt = await store.claim_jobs(["send"], 3, at(60), 30, normal_share=0.0)
    assert [j.id for j in nxt] == ["send:low00000", "send:low00001", "send:low00002"]
    assert not any(j.urgent for j in nxt)


async def test_with_the_default_share_the_urgent_job_is_in_the_first_claim(store: Store) -> None:
    await store.add_deliveries([], backlog(300))
    urgent = [job(f"send:alert{i}", due=at(40 + i), urgent=True) for i in range(3)]
    await store.add_deliveries([], urgent)
    claimed = await store.claim_jobs(["send"], 10, at(60), 30)
    assert len(claimed) == 10
    # urgent jobs come first in the claim, in due order
    assert [j.id for j in claimed[:3]] == ["send:alert0", "send:alert1", "send:alert2"]
    assert all(not j.urgent for j in claimed[3:])


async def test_urgent_work_of_another_kind_goes_first_too(store: Store) -> None:
    await store.add_deliveries([], backlog(50) + backlog(50, kind="plan"))
    await store.add_deliveries([], [job("escalate:m1:1", kind="escalate", due=at(20), urgent=True)])
    (first,) = await store.claim_jobs(["plan", "send", "escalate"], 1, at(60), 30, normal_share=0)
    assert first.id == "escalate:m1:1"


async def test_the_normal_lane_keeps_its_share_while_urgent_work_keeps_coming(
    store: Store,
) -> None:
    await store.add_deliveries([], backlog(20))
    normal_claimed: list[str] = []
    for round_ in range(12):
        # more urgent work arrives every round than one claim can take
        fresh = [job(f"send:u{round_:02}-{i}", due=at(round_), urgent=True) for i in range(6)]
        await store.add_deliveries([], fresh)
        claimed = await store.claim_jobs(["send"], 4, at(round_), 30, normal_share=0.25)
        assert len(claimed) == 4
        normal = [j.id for j in claimed if not j.urgent]
        # a quarter of four slots: exactly one normal job per claim, never zero
        assert len(normal) == 1, claimed
        normal_claimed += normal
    # the backlog moves forward in its own order
    assert normal_claimed == [f"send:low{i:05}" for i in range(12)]


async def test_a_lane_with_nothing_due_leaves_its_slots_to_the_other(store: Store) -> None:
    await store.add_deliveries([], [job(f"send:u{i}", urgent=True) for i in range(10)])
    claimed = await store.claim_jobs(["send"], 8, at(1), 30, normal_share=0.5)
    assert len(claimed) == 8 and all(j.urgent for j in claimed)
    await store.add_deliveries([], backlog(10))
    # two urgent jobs are left: the normal lane gets the other six slots
    claimed = await store.claim_jobs(["send"], 8, at(1), 30, normal_share=0.0)
    assert [j.urgent for j in claimed] == [True, True] + [False] * 6


async def test_retried_and_postponed_jobs_stay_in_their_lane(store: Store) -> None:
    await store.add_deliveries([], [job("send:alert", urgent=True)])
    (claimed,) = await store.claim_jobs(["send"], 1, T0, 30)
    await store.retry_job(claimed.id, at(10), "timeout")
    await store.add_deliveries([], backlog(100))
    (again,) = await store.claim_jobs(["send"], 1, at(10), 30, normal_share=0)
    assert (again.id, again.urgent, again.attempts) == ("send:alert", True, 2)
    await store.postpone_job(again.id, at(20), "rate_limited")
    (third,) = await store.claim_jobs(["send"], 1, at(20), 30, normal_share=0)
    assert (third.id, third.urgent) == ("send:alert", True)
    await store.finish_job(third.id)
    rest = await store.claim_jobs(["send"], 200, at(20), 30)
    assert len(rest) == 100 and not any(j.urgent for j in rest)


async def test_a_leased_urgent_job_comes_back_urgent_after_its_lease(store: Store) -> None:
    await store.add_deliveries([], [job("send:alert", urgent=True), *backlog(30)])
    (claimed,) = await store.claim_jobs(["send"], 1, T0, 5, normal_share=0)
    assert claimed.id == "send:alert"
    (again,) = await store.claim_jobs(["send"], 1, at(6), 5, normal_share=0)
    assert (again.id, again.urgent, again.attempts) == ("send:alert", True, 2)


async def test_queue_stats_count_both_lanes(store: Store) -> None:
    await store.add_deliveries([], [*backlog(3), job("send:alert", due=at(5), urgent=True)])
    waiting, age = (await store.queue_stats(at(10)))["send"]
    assert waiting == 4 and age == 10.0


async def test_urgent_first_across_store_instances(backend: Backend) -> None:
    async with backend.open() as api, backend.open() as worker:
        await api.add_deliveries([], backlog(200))
        await api.add_deliveries([], [job("send:alert", due=at(30), urgent=True)])
        (first,) = await worker.claim_jobs(["send"], 1, at(60), 30, normal_share=0)
        assert first.id == "send:alert"
