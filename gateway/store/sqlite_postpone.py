"""SQLite part of job postponement: a job put off for a reason that is no attempt."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from gateway.store.sqlite_base import SqliteParts, ts


class PostponeMixin(SqliteParts):
    """:meth:`gateway.store.Store.postpone_job` on SQLite."""

    SCHEMA: ClassVar[str] = ""

    async def postpone_job(self, job_id: str, due_at: datetime, reason: str) -> None:
        due = ts(due_at)
        async with self._write() as db:
            await db.execute(
                "UPDATE jobs SET due_at = ?, visible_at = ?, leased_until = NULL, "
                "last_error = ?, attempts = MAX(attempts - 1, 0) WHERE id = ?",
                (due, due, reason, job_id),
            )
