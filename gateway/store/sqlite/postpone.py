"""SQLite part of job postponement: a job put off for a reason that is no attempt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar

from gateway.models import Job
from gateway.store.encoding import from_us, us
from gateway.store.sqlite.base import SqliteParts, id_list


class PostponeMixin(SqliteParts):
    """:meth:`gateway.store.Store.postpone_job` and ``get_jobs`` on SQLite."""

    SCHEMA: ClassVar[str] = ""

    async def postpone_job(self, job_id: str, due_at: datetime, reason: str) -> None:
        due = us(due_at)
        async with self._write() as db:
            await db.execute(
                "UPDATE jobs SET due_at = ?, visible_at = ?, leased_until = NULL, "
                "last_error = ?, attempts = MAX(attempts - 1, 0) WHERE id = ?",
                (due, due, reason, job_id),
            )

    async def get_jobs(self, job_ids: Sequence[str]) -> dict[str, Job]:
        if not job_ids:
            return {}
        async with self._read() as db:
            rows = await db.execute_fetchall(
                "SELECT id, tenant_id, kind, ref, due_at, attempts, last_error FROM jobs "
                "WHERE id IN (SELECT value FROM json_each(?))",
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
