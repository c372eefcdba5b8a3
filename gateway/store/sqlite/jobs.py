"""The work queue in the SQLite backend: the ``JobQueue`` and ``SendLedger`` ports.

``visible_at`` is when a claimer may take a job (its due time, or the end of its
lease); a claim is one write transaction, so it is atomic against other processes
too. Postponing (a job put off for a reason that is no attempt) gives the attempt
back. Finishing a send moves its delivery by the status rule (``deliveries.py``) in
the transaction that ends its job."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

import aiosqlite

from gateway.models import DeliveryStatus, Job
from gateway.store import LEASE_ENDED, SendOutcome, lanes
from gateway.store.encoding import from_us, us
from gateway.store.held import HeldClaims
from gateway.store.sqlite.base import IDS, SqliteFeature, SqliteHandle, id_list, insert_jobs_now
from gateway.store.sqlite.deliveries import apply_moves, apply_moves_now
from gateway.store.trusted import assembler

_JOB_COLUMNS = "id, tenant_id, kind, ref, due_at, attempts, last_error, urgent"
# A retry's condition: the caller's lease (NULL: not claimed by this store) is the job's.
_STILL_OURS = " AND (? IS NULL OR leased_until = ?)"


_new_job = assembler(Job)


def _job(row: Any) -> Job:
    # One per claimed job: built as the store's deliveries are (gateway/store/trusted.py).
    return _new_job(
        {
            "id": row[0],
            "tenant_id": row[1],
            "kind": row[2],
            "ref": row[3],
            "due_at": from_us(row[4]),
            "attempts": row[5],
            "last_error": row[6],
            "urgent": bool(row[7]),
            "rank": None,
        }
    )


class SqliteJobs(SqliteFeature):
    """Claim, finish, retry and postpone jobs; finish sends with their status moves."""

    def __init__(self, db: SqliteHandle) -> None:
        super().__init__(db)
        # The lease end each claim of this store wrote, until its job ends: a retry or
        # give-back applies only while that lease is still the job's.
        self._leases: HeldClaims[int] = HeldClaims()

    SCHEMA: ClassVar[str] = """
-- visible_at is when a claimer may take the job: due_at, or the end of its lease.
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, kind TEXT NOT NULL, ref TEXT NOT NULL,
    due_at INTEGER NOT NULL, visible_at INTEGER NOT NULL, leased_until INTEGER,
    attempts INTEGER NOT NULL, last_error TEXT, urgent INTEGER NOT NULL DEFAULT 0
);
"""

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
        lease_end = us(now + timedelta(seconds=lease_seconds))
        stamp = us(now)
        # One index-ordered, limited arm per kind and lane: no sort over every due job.
        arm = (
            "SELECT * FROM (SELECT id, urgent, visible_at FROM jobs WHERE kind = ? "
            "AND urgent = ? AND visible_at <= ? ORDER BY visible_at, id LIMIT ?)"
        )
        wanted = list(dict.fromkeys(kinds))
        select = (
            f"SELECT id FROM ({' UNION ALL '.join(arm for _ in wanted)}) "
            "ORDER BY visible_at, id LIMIT ?"
        )

        # One write transaction, run whole on the writer's thread (SqliteHandle.transact):
        # atomic even against another process, and one round trip instead of five.
        def claim(conn: sqlite3.Connection) -> list[Any]:
            due: dict[int, list[str]] = {}
            for lane in (1, 0):
                params: list[Any] = []
                for kind in wanted:
                    params.extend((kind, lane, stamp, limit))
                due[lane] = [row[0] for row in conn.execute(select, [*params, limit])]
            urgent, normal = lanes.take(split, len(due[1]), len(due[0]))
            chosen = due[1][:urgent] + due[0][:normal]
            if not chosen:
                return []
            # A lease still set is one that ended (a retry or give-back clears it): the job
            # is taken over, and says so (the expressions read the row before the update).
            return conn.execute(
                "UPDATE jobs SET visible_at = ?, leased_until = ?, attempts = attempts + 1, "
                "last_error = CASE WHEN leased_until IS NULL THEN last_error ELSE ? END "
                f"WHERE id IN {IDS} RETURNING {_JOB_COLUMNS}",
                [lease_end, lease_end, LEASE_ENDED, id_list(chosen)],
            ).fetchall()

        rows = await self._db.transact(claim)
        jobs = [_job(row) for row in rows]
        for found in jobs:
            self._leases.hold(found.id, lease_end)
        jobs.sort(key=lambda job: (not job.urgent, job.due_at, job.id))
        return jobs

    def hold_handed(self, jobs: Sequence[Job]) -> None:
        # Stored with their due time as their lease's end (base._job_rows: leased_until).
        for handed in jobs:
            self._leases.hold(handed.id, us(handed.due_at))

    async def finish_job(self, job_id: str) -> None:
        self._leases.pop(job_id)
        async with self._db.write() as db:
            await db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

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
        move = SendOutcome("", delivery_id, status, at, detail, reason, provider_id, segments)
        self._leases.pop(job_id)
        async with self._db.write() as db:
            moved = await apply_moves(db, [move])
            await db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return moved[0]

    async def finish_sends(self, outcomes: Sequence[SendOutcome]) -> int:
        if not outcomes:
            return 0
        for outcome in outcomes:
            self._leases.pop(outcome.job_id)

        # A send outcome is a status move with the end of its job; one round trip to the
        # writer's thread for the whole batch (SqliteHandle.transact).
        def finish(conn: sqlite3.Connection) -> int:
            moved = apply_moves_now(conn, outcomes)
            conn.executemany("DELETE FROM jobs WHERE id = ?", [(o.job_id,) for o in outcomes])
            insert_jobs_now(conn, [job for o in outcomes for job in o.jobs])
            return sum(moved)

        return await self._db.transact(finish)

    async def retry_job(self, job_id: str, due_at: datetime, error: str) -> None:
        due = us(due_at)
        async with self._db.write() as db:
            await db.execute(
                "UPDATE jobs SET due_at = ?, visible_at = ?, leased_until = NULL, last_error = ? "
                f"WHERE id = ?{_STILL_OURS}",
                (due, due, error, job_id, *self._lease_of(job_id)),
            )
        self._leases.pop(job_id)

    def _lease_of(self, job_id: str) -> tuple[int | None, int | None]:
        """The parameters of _STILL_OURS: the lease this store's claim of the job wrote, if
        it claimed it. Once another claim took the job over after that lease (this one
        stalled past it), that claim decides: a give-back here would let a third claim send
        it while the second one sends it (docs/redis.md, "Leases")."""
        lease = self._leases.get(job_id)  # forgotten once the write went through
        return lease, lease

    async def queue_stats(self, now: datetime) -> dict[str, tuple[int, float]]:
        stamp = us(now)
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT kind, "
                "SUM(leased_until IS NULL OR leased_until <= :now), "
                "MIN(CASE WHEN (leased_until IS NULL OR leased_until <= :now) "
                "AND visible_at <= :now THEN due_at END) "
                "FROM jobs GROUP BY kind",
                {"now": stamp},
            )
        return {
            row[0]: (int(row[1]), 0.0 if row[2] is None else max(0.0, (stamp - row[2]) / 1e6))
            for row in rows
        }

    async def postpone_job(self, job_id: str, due_at: datetime, reason: str) -> None:
        due = us(due_at)
        async with self._db.write() as db:
            await db.execute(
                "UPDATE jobs SET due_at = ?, visible_at = ?, leased_until = NULL, "
                f"last_error = ?, attempts = MAX(attempts - 1, 0) WHERE id = ?{_STILL_OURS}",
                (due, due, reason, job_id, *self._lease_of(job_id)),
            )
        self._leases.pop(job_id)

    async def get_jobs(self, job_ids: Sequence[str]) -> dict[str, Job]:
        if not job_ids:
            return {}
        async with self._db.read() as db:
            rows = await db.execute_fetchall(
                "SELECT id, tenant_id, kind, ref, due_at, attempts, last_error FROM jobs "
                f"WHERE id IN {IDS}",
                (id_list(job_ids),),
            )
        return {
            row[0]: Job.model_construct(
                id=row[0],
                tenant_id=row[1],
                kind=row[2],
                ref=row[3],
                due_at=from_us(row[4]),
                attempts=row[5],
                last_error=row[6],
            )
            for row in rows
        }


async def add_job_lanes(db: aiosqlite.Connection) -> None:
    """Give a jobs table of an older version its lane column (the jobs queued there are
    normal work) and the index claims read each lane through."""
    columns = {row[1] for row in await db.execute_fetchall("PRAGMA table_info(jobs)")}
    if "urgent" not in columns:
        await db.execute("ALTER TABLE jobs ADD COLUMN urgent INTEGER NOT NULL DEFAULT 0")
    await db.execute("DROP INDEX IF EXISTS jobs_by_kind_visible")
    # id in the index lets a claim read a lane in (visible_at, id) order without sorting.
    await db.execute(
        "CREATE INDEX IF NOT EXISTS jobs_by_lane_visible ON jobs (kind, urgent, visible_at, id)"
    )
