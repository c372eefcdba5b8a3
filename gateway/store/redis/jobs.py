"""The work queue in the Redis backend (the layout is in redis/scripts.py): one Stream
per job kind with the consumer group ``workers`` (each process one consumer), a sorted
set of waiting jobs per kind by due time, moved into the stream when due by whichever
claimer gets there first, in the claim script itself; a crashed worker's entries are
taken over with XAUTOCLAIM when their lease ends. All in the queue's slot ``P:{q}:``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from gateway.constants import JOB_SEND
from gateway.models import DeliveryStatus, Job
from gateway.store import SendOutcome, lanes
from gateway.store.encoding import from_us, us
from gateway.store.held import HeldClaims
from gateway.store.redis import keys as K
from gateway.store.redis import scripts as lua
from gateway.store.redis.base import RedisFeature, RedisHandle, opt
from gateway.store.redis.scripts import Lua, read

log = logging.getLogger(__name__)

_ADD_JOBS = Lua(lua.ADD_JOBS)
_CLAIM = Lua(lua.CLAIM)
_FINISH_JOBS = Lua(lua.FINISH_JOBS)
_RETRY_JOB = Lua(lua.RETRY_JOB)
_QUEUE_STATS = Lua(lua.QUEUE_STATS)
_FORGET_CONSUMERS = Lua(lua.FORGET_CONSUMERS)
# KEYS[1] the kinds set. ARGV: qp job_id. 1: removed; 0: no such job; -1: claimed before.
_TAKE_UNSTARTED = Lua(lua.QUEUE_COMMON + read("take_unstarted"))

# A claim looks for ended leases (XAUTOCLAIM per kind) at most this often on the caller's
# clock, or a quarter of the lease if that is shorter: a takeover comes this much later,
# and a claim under load costs one command per kind less.
_LEASE_SCAN_EVERY = 1.0

# Jobs this process claimed and has not ended: their kind, stream entry, lane and claim
# stamp, so that ending them needs no read of the job hash, and a retry or give-back after
# the lease was taken over by another claim is refused (retry_job.lua).
_NOT_HELD = ("", "", "", "")

# Apply status moves and end jobs in one round trip (RedisDeliveries.apply_moves).
ApplyMoves = Callable[[Sequence[SendOutcome], Sequence[str], Sequence[Job]], Awaitable[list[bool]]]


def _job(f: list[Any]) -> Job:
    return Job.model_construct(
        id=f[0],
        tenant_id=f[1],
        kind=f[2],
        ref=f[3],
        due_at=from_us(f[4]),
        attempts=int(f[5]),
        last_error=f[6] or None,
        urgent=f[7] == "1",
    )


def _unpacked(row: list[Any]) -> list[Any]:
    """HMGET k t r d a e p of a job hash as [t, k, r, d, a, e, p] (``_job``'s order): a
    job queued since 2026-12-07 keeps k t d p r packed in k, and a field written later
    wins (lua/queue_common.lua, read_job)."""
    kind, tenant, ref, due, attempts, error, urgent = row
    if "\x1f" in kind:
        kind, p_tenant, p_due, p_urgent, p_ref = kind.split("\x1f", 4)
        tenant = p_tenant if tenant is None else tenant
        due = p_due if due is None else due
        urgent = p_urgent if urgent is None else urgent
        ref = p_ref if ref is None else ref
    return [tenant, kind, ref, due, attempts or 0, error, urgent]


# --------------------------------------------------------------------------- the store


class RedisJobs(RedisFeature):
    """:class:`gateway.store.ports.JobQueue` on Redis. ``consumer`` names this process in
    the consumer group; ``claimed_send`` learns the tenant of each send job claimed (the
    delivery's tenant, kept by redis/deliveries.py)."""

    SCRIPTS = (
        _ADD_JOBS,
        _CLAIM,
        _FINISH_JOBS,
        _RETRY_JOB,
        _QUEUE_STATS,
        _FORGET_CONSUMERS,
        _TAKE_UNSTARTED,
    )

    def __init__(
        self, db: RedisHandle, consumer: str, claimed_send: Callable[[str, str], None]
    ) -> None:
        super().__init__(db)
        self._consumer = consumer
        self._claimed_send = claimed_send
        self._clamp_warned = False
        self._held: HeldClaims[tuple[str, str, str, str]] = HeldClaims()
        self._scanned_at: int | None = None  # µs on the caller's clock

    def _scan_now(self, stamp: int, lease_seconds: float) -> bool:
        """Whether this claim looks for ended leases (see _LEASE_SCAN_EVERY)."""
        every = min(_LEASE_SCAN_EVERY, lease_seconds / 4) * 1_000_000
        last = self._scanned_at
        if last is None or stamp < last or stamp - last >= every:
            self._scanned_at = stamp
            return True
        return False

    def queue(self, pipe: Any, jobs: Sequence[Job]) -> None:
        """Queue the insertion of jobs (existing ids are left untouched) on a pipeline."""
        if not jobs:
            return
        args: list[Any] = [self._db.qp]
        for j in jobs:
            args.extend(
                (
                    j.id,
                    j.tenant_id,
                    j.kind,
                    j.ref,
                    us(j.due_at),
                    j.attempts,
                    opt(j.last_error),
                    "1" if j.urgent else "0",
                    lanes.order_at(j),  # its score in the waiting set
                )
            )
        self._db.eval(pipe, _ADD_JOBS, [self._db.qp + K.KINDS], args)

    def queue_finish(self, pipe: Any, job_ids: Sequence[str]) -> None:
        """Queue the end of jobs on a pipeline."""
        self._db.eval(pipe, _FINISH_JOBS, [self._db.qp + K.KINDS], self._finish_args(job_ids))

    def _finish_args(self, job_ids: Sequence[str]) -> list[str]:
        """The end of a job this process holds since its claim names its stream entry (no
        read of its hash in the script); any other job is looked up there."""
        args = [self._db.qp]
        for job_id in job_ids:
            kind, entry, lane, _ = self._held.pop(job_id) or _NOT_HELD
            args.extend((job_id, kind, entry, lane))
        return args

    def _hold(self, jobs: Sequence[Job], entries: Sequence[str], stamp: int) -> None:
        claim = str(stamp)  # the job hash's c (claim.lua, take)
        for job, entry in zip(jobs, entries, strict=True):
            self._held.hold(job.id, (job.kind, entry, "1" if job.urgent else "0", claim))

    def hold_handed(self, jobs: Sequence[Job]) -> None:
        # In their waiting set (no stream entry), stamped h + their due time (add_jobs.lua:
        # a claim at that very microsecond stamps the bare number) until a claim takes
        # them over and stamps them anew.
        for handed in jobs:
            lane = "1" if handed.urgent else "0"
            self._held.hold(handed.id, (handed.kind, "", lane, f"h{us(handed.due_at)}"))

    async def claim_jobs(
        self,
        kinds: Sequence[str],
        limit: int,
        now: datetime,
        lease_seconds: float,
        *,
        normal_share: float = lanes.DEFAULT_NORMAL_SHARE,
    ) -> list[Job]:
        if not kinds or limit <= 0:
            return []
        split = lanes.split(limit, normal_share)
        stamp = us(now)
        out = await self._db.eval(
            self._redis,
            _CLAIM,
            [self._db.qp + K.CLOCK],
            [
                self._db.qp,
                stamp // 1000,
                stamp,
                max(1, round(lease_seconds * 1000)),
                limit,
                self._consumer,
                split.normal_reserved,
                "1" if self._scan_now(stamp, lease_seconds) else "0",
                *dict.fromkeys(kinds),
            ],
        )
        if out[-1] and not self._clamp_warned:
            self._clamp_warned = True
            log.warning("this worker's clock is ahead of Redis's: leases are checked on ours")
        jobs = [_job(out[i : i + 8]) for i in range(0, len(out) - 1, 9)]
        self._hold(jobs, out[8:-1:9], stamp)
        for job in jobs:
            if job.kind == JOB_SEND:
                self._claimed_send(job.ref, job.tenant_id)
        jobs.sort(key=lambda job: (not job.urgent, job.due_at, job.id))
        return jobs

    async def finish_job(self, job_id: str) -> None:
        await self._db.eval(
            self._redis, _FINISH_JOBS, [self._db.qp + K.KINDS], self._finish_args([job_id])
        )

    async def retry_job(self, job_id: str, due_at: datetime, error: str) -> None:
        await self._retry(job_id, due_at, error, give_back="0")

    async def postpone_job(self, job_id: str, due_at: datetime, reason: str) -> None:
        await self._retry(job_id, due_at, reason, give_back="1")

    async def _retry(self, job_id: str, due_at: datetime, error: str, *, give_back: str) -> None:
        """Make a job due again; one this process claimed only while that claim's lease is
        still the job's: once another claim took it over (this one stalled past its lease),
        that claim decides, and a give-back here would let a third claim send it again
        while the second one sends it (docs/redis.md, "Leases")."""
        # Forgotten only once the script ran: a call run again (a NOSCRIPT reload, a
        # retried error) is still checked against this process's claim.
        claim = (self._held.get(job_id) or _NOT_HELD)[3]
        done = await self._db.eval(
            self._redis,
            _RETRY_JOB,
            [self._db.qp + K.KINDS],
            [self._db.qp, job_id, us(due_at), error, give_back, claim],
        )
        self._held.pop(job_id)
        if done == -1:
            log.info(
                "a job taken over after its lease was left to its new holder",
                extra={"job_id": job_id},
            )

    async def get_jobs(self, job_ids: Sequence[str]) -> dict[str, Job]:
        if not job_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self._db.q(K.JOB, job_id), "k", "t", "r", "d", "a", "e", "p")
            rows = await pipe.execute()
        return {
            job_id: _job([job_id, *_unpacked(row)])
            for job_id, row in zip(job_ids, rows, strict=True)
            if row[0] is not None
        }

    async def queue_stats(self, now: datetime) -> dict[str, tuple[int, float]]:
        stamp = us(now)
        out = await self._db.eval(
            self._redis, _QUEUE_STATS, [self._db.qp + K.KINDS], [self._db.qp, stamp]
        )
        stats: dict[str, tuple[int, float]] = {}
        for i in range(0, len(out), 3):
            oldest = out[i + 2]
            age = 0.0 if oldest == "" else max(0.0, (stamp - int(oldest)) / 1e6)
            stats[out[i]] = (int(out[i + 1]), age)
        return stats

    async def take_unstarted(self, job_id: str) -> int:
        """Remove a job no worker ever claimed: 1 removed, 0 no such job, -1 claimed before
        (a scheduled message's cancel, redis/schedules.py)."""
        qp = self._db.qp
        taken = await self._db.eval(self._redis, _TAKE_UNSTARTED, [qp + K.KINDS], [qp, job_id])
        return int(taken)

    async def forget_consumer(self, client: Any) -> None:
        """Take this process out of the consumer groups (on close, with the last client)."""
        qp = self._db.qp
        await client.evalsha(_FORGET_CONSUMERS.sha, 1, qp + K.KINDS, qp, self._consumer)


class RedisSendLedger(RedisFeature):
    """:class:`gateway.store.ports.SendLedger` on Redis: a send's outcome is a status move
    with the end of its job, applied by the deliveries (``moves``)."""

    def __init__(self, db: RedisHandle, moves: ApplyMoves) -> None:
        super().__init__(db)
        self._moves = moves

    async def finish_send(
        self,
        job_id: str,
        delivery_id: str,
        status: DeliveryStatus,
        at: datetime,
        *,
        detail: str | None = None,
        reason: str | None = None,
        provider_id: str | None = None,
        segments: int | None = None,
    ) -> bool:
        # The move first, then the end of the job: a crash in between leaves the job,
        # which the dispatcher then drops because the delivery is final.
        move = SendOutcome("", delivery_id, status, at, detail, reason, provider_id, segments)
        return (await self._moves([move], [job_id], ()))[0]

    async def finish_sends(self, outcomes: Sequence[SendOutcome]) -> int:
        if not outcomes:
            return 0
        moves = outcomes  # a send outcome is a status move with the end of its job
        finished = list(dict.fromkeys(o.job_id for o in outcomes))
        moved = await self._moves(moves, finished, [j for o in outcomes for j in o.jobs])
        return sum(moved)
