"""Retention: delivery records, messages with their attachments, replies, absence
records with their explanations and finished webhook outbox messages are kept
``retention_days`` (396 by default: a school year plus margin), then removed by a daily
purge job.

On Redis the per-message keys also expire by themselves (``EXPIRE``, a day after the
purge would have removed them); the job keeps the counters right and does the same for
SQLite, where nothing expires on its own.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Protocol

from gateway.attachments import Attachments
from gateway.clock import Clock
from gateway.constants import JOB_PURGE
from gateway.jobs import JobHandler
from gateway.models import Job
from gateway.store.ports import DeliveryStore, JobQueue, RetentionStore

log = logging.getLogger(__name__)

PURGE_EVERY = timedelta(days=1)


class PurgeStore(RetentionStore, JobQueue, DeliveryStore, Protocol):
    """The purge, and its daily job (queued through ``add_deliveries``)."""


class Retention:
    """The purge job: ``schedule()`` makes sure it exists; ``run`` is its handler."""

    def __init__(
        self, store: PurgeStore, clock: Clock, days: int, *, attachments: Attachments | None = None
    ) -> None:
        self.store = store
        self.attachments = attachments
        self.clock = clock
        self.keep = timedelta(days=days)

    async def schedule(self) -> None:
        """Queue the daily purge unless it is queued already (any process may call this)."""
        job = Job(id=JOB_PURGE, tenant_id="", kind=JOB_PURGE, ref="", due_at=self.clock.now())
        await self.store.add_deliveries([], [job])

    def handlers(self) -> dict[str, JobHandler]:
        """The daily purge."""
        return {JOB_PURGE: self.run}

    async def run(self, job: Job) -> None:
        now = self.clock.now()
        removed = await self.store.purge_before(now - self.keep)
        log.info("purged old deliveries", extra={"deliveries": removed})
        if self.attachments is not None:
            # A message's files go with it; uploads no message took go sooner.
            files = await self.attachments.purge(now - self.keep)
            log.info("purged old attachments", extra={"attachments": files})
        # The same job again tomorrow; postponing does not count as an attempt.
        await self.store.postpone_job(job.id, now + PURGE_EVERY, "daily")
