"""Contract: postpone_job puts a job off without counting the claim as an attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.models import Job
from gateway.store import Store

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(job_id: str) -> Job:
    return Job(id=job_id, tenant_id="t1", kind="send", ref=job_id, due_at=T0)


async def test_postpone_keeps_attempts_and_makes_the_job_due_later(store: Store) -> None:
    await store.add_deliveries([], [job("send:1")])
    (claimed,) = await store.claim_jobs(["send"], 1, T0, 300)
    assert claimed.attempts == 1
    for n in range(1, 6):  # a long outage: claimed and put off again and again
        await store.postpone_job(claimed.id, at(60 * n), "channel_unavailable")
        assert await store.claim_jobs(["send"], 1, at(60 * n - 1), 300) == []
        (claimed,) = await store.claim_jobs(["send"], 1, at(60 * n), 300)
        assert (claimed.attempts, claimed.last_error) == (1, "channel_unavailable")
        assert claimed.due_at == at(60 * n)


async def test_postpone_never_goes_below_zero_and_ignores_unknown_jobs(store: Store) -> None:
    await store.add_deliveries([], [job("send:1")])
    await store.postpone_job("send:1", at(5), "deferred")  # not claimed: nothing to give back
    (claimed,) = await store.claim_jobs(["send"], 1, at(5), 300)
    assert claimed.attempts == 1
    await store.postpone_job("send:unknown", at(5), "deferred")


async def test_get_jobs_reads_due_attempts_and_last_error_as_stored(store: Store) -> None:
    await store.add_deliveries([], [job("send:1")])
    for n in range(1, 4):  # three tries, each failing
        (claimed,) = await store.claim_jobs(["send"], 1, at(10 * n), 300)
        await store.retry_job(claimed.id, at(10 * n + 10), f"smtp_{n}")
    await store.add_deliveries([], [job("send:2")])
    found = await store.get_jobs(["send:1", "send:2", "send:unknown"])
    assert set(found) == {"send:1", "send:2"}
    first = found["send:1"]
    assert (first.due_at, first.attempts, first.last_error) == (at(40), 3, "smtp_3")
    assert (first.tenant_id, first.kind, first.ref) == ("t1", "send", "send:1")
    second = found["send:2"]
    assert (second.due_at, second.attempts, second.last_error) == (T0, 0, None)
    await store.finish_job("send:1")
    assert set(await store.get_jobs(["send:1"])) == set()
    assert await store.get_jobs([]) == {}
