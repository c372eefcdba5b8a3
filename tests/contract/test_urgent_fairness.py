"""Contract: inside the urgent lane, work is ordered per message (gateway/store/lanes.py,
``order_at``): a small urgent message queued during a big one's backlog is claimed
within a bounded number of claims, on every backend and across store instances, while
the normal lane keeps its share and retried or handed-over work keeps its due time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.models import Job
from gateway.store import Store
from gateway.store.lanes import RANKS

from .conftest import Backend

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
A = "tenant-a"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sends(message: str, n: int, due: datetime, *, first_rank: int = 0) -> list[Job]:
    """The urgent send jobs of one message, as the planner queues them: due now, ranked."""
    return [
        Job(
            id=f"send:{message}{i:05}",
            tenant_id=A,
            kind="send",
            ref=f"{message}{i:05}",
            due_at=due,
            urgent=True,
            rank=i,
        )
        for i in range(first_rank, first_rank + n)
    ]


def normal(n: int) -> list[Job]:
    return [
        Job(id=f"send:low{i:05}", tenant_id=A, kind="send", ref=f"low{i:05}", due_at=at(i / 1000))
        for i in range(n)
    ]


async def claim_ids(store: Store, limit: int, now: datetime, share: float = 0.0) -> list[str]:
    return [j.id for j in await store.claim_jobs(["send"], limit, now, 60, normal_share=share)]


async def claims(store: Store, n: int, limit: int, now: datetime) -> list[set[str]]:
    """The ids of ``n`` claims in a row (a claim's jobs come back in due order, so each
    claim is compared as a set)."""
    return [set(await claim_ids(store, limit, now)) for _ in range(n)]


ABSENCE = {"send:abs00000", "send:abs00001", "send:abs00002"}


async def test_a_small_message_goes_before_a_big_ones_backlog(store: Store) -> None:
    # An emergency of 2,000 sends, planned in two batches; 100 of them are claimed.
    await store.add_deliveries([], sends("big", 1000, T0))
    await store.add_deliveries([], sends("big", 1000, at(1), first_rank=1000))
    assert await claim_ids(store, 100, at(1)) == [f"send:big{i:05}" for i in range(100)]
    # An absence alert's three sends, queued after all of them: in the next claim.
    await store.add_deliveries([], sends("abs", 3, at(2)))
    (claimed,) = await claims(store, 1, 10, at(2))
    # and the emergency goes on where it was, in its own order
    assert claimed == ABSENCE | {f"send:big{i:05}" for i in range(100, 107)}


async def test_the_wait_is_bounded_by_the_backlogs_age_not_its_size(store: Store) -> None:
    # Nothing of the big message was claimed yet and it waited 30 s: the small message's
    # j-th send waits behind at most j + 30 of its sends (one per second waited).
    await store.add_deliveries([], sends("big", 3000, T0))
    await store.add_deliveries([], sends("abs", 3, at(30)))
    seen: set[str] = set().union(*await claims(store, 4, 10, at(30)))
    assert seen >= ABSENCE  # within four claims of ten
    big = sorted(seen - ABSENCE)
    assert big == [f"send:big{i:05}" for i in range(len(big))]


async def test_two_big_messages_share_the_lane(store: Store) -> None:
    await store.add_deliveries([], sends("one", 500, T0))
    await store.add_deliveries([], sends("two", 500, T0))
    claimed = await claim_ids(store, 100, at(1))
    assert sum(i.startswith("send:one") for i in claimed) == 50
    assert sum(i.startswith("send:two") for i in claimed) == 50


async def test_the_normal_lane_keeps_its_share(store: Store) -> None:
    await store.add_deliveries([], sends("big", 500, T0))
    assert len(await claim_ids(store, 100, at(1))) == 100
    await store.add_deliveries([], normal(20))
    await store.add_deliveries([], sends("abs", 2, at(1)))
    first = await store.claim_jobs(["send"], 4, at(1), 60, normal_share=0.25)
    assert [j.id for j in first if not j.urgent] == ["send:low00000"]
    assert {j.id for j in first if j.urgent} == {"send:abs00000", "send:abs00001", "send:big00100"}


async def test_a_retry_keeps_its_backoff_and_then_waits_a_bounded_time(store: Store) -> None:
    await store.add_deliveries([], sends("abs", 1, T0))
    (alert,) = await store.claim_jobs(["send"], 1, T0, 60)
    await store.retry_job(alert.id, at(10), "timeout")
    # ranked work queued meanwhile is claimed; the retry not before its due time
    await store.add_deliveries([], sends("other", 2, at(5)))
    assert await claim_ids(store, 10, at(9)) == ["send:other00000", "send:other00001"]
    # once due, it waits behind at most RANKS first sends of a message queued after it
    await store.add_deliveries([], sends("big", RANKS + 200, at(20)))
    seen: list[str] = []
    while "send:abs00000" not in seen:
        got = await claim_ids(store, 200, at(21))
        assert got
        seen += got
    assert len(seen) <= RANKS + 1
    assert "send:big01000" not in seen  # the big message's later sends come after it


async def test_work_with_an_attempt_keeps_its_due_time(store: Store) -> None:
    # A job handed over in its process is stored as claimed (its first attempt counted,
    # due when the lease ends): a rank must not make it visible to other workers.
    handed = sends("abs", 1, at(60))[0].model_copy(update={"attempts": 1})
    await store.add_deliveries([], [handed])
    assert await claim_ids(store, 10, at(30)) == []
    assert await claim_ids(store, 10, at(60)) == ["send:abs00000"]


async def test_queue_stats_give_the_due_time_of_ranked_work(store: Store) -> None:
    await store.add_deliveries([], sends("abs", 2, T0))
    waiting, age = (await store.queue_stats(at(10)))["send"]
    assert waiting == 2 and age == 10.0


async def test_queue_stats_give_the_oldest_due_time_behind_ranked_work(store: Store) -> None:
    # Ranked work sorts up to RANKS seconds ahead of its due time (lanes.order_at), so it
    # comes before older unranked work (a retry, an ended lease): the age is still the
    # oldest due job's, here the retry's 600 s, not the next job's 100 s.
    retry = Job(id="send:old", tenant_id=A, kind="send", ref="old", due_at=T0, urgent=True)
    await store.add_deliveries([], [retry, *sends("abs", 3, at(500))])
    waiting, age = (await store.queue_stats(at(600)))["send"]
    assert waiting == 4 and age == 600.0
    # One not yet due among them is not the oldest due, whatever its place.
    await store.add_deliveries([], sends("later", 2, at(700)))
    assert (await store.queue_stats(at(600)))["send"] == (6, 600.0)
    # The retry claimed and ended: the oldest due is the ranked work's.
    for job in await store.claim_jobs(["send"], 10, at(600), 60):
        if job.id == "send:old":
            await store.finish_job(job.id)
        else:
            await store.retry_job(job.id, job.due_at, "again")
    assert (await store.queue_stats(at(600)))["send"] == (5, 100.0)


async def test_queue_stats_find_the_oldest_behind_many_ranked_jobs(store: Store) -> None:
    # Redis reads the waiting set in pages of 100 (lua/queue_stats.lua).
    retry = Job(id="send:old", tenant_id=A, kind="send", ref="old", due_at=T0, urgent=True)
    await store.add_deliveries([], [retry, *sends("big", 250, at(500))])
    assert (await store.queue_stats(at(600)))["send"] == (251, 600.0)


async def test_fairness_across_store_instances(backend: Backend) -> None:
    async with backend.open() as api, backend.open() as worker:
        await api.add_deliveries([], sends("big", 1000, T0))
        assert len(await claim_ids(worker, 50, at(1))) == 50
        await api.add_deliveries([], sends("abs", 2, at(2)))
        claimed = set(await claim_ids(worker, 5, at(2)))
        assert {"send:abs00000", "send:abs00001"} <= claimed
