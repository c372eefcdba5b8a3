"""Scheduled messages in the store: when a message is to go, and whether it was cancelled.

A scheduled message is an ordinary accepted message whose planning job is due at its
``send_at`` (the durable queue keeps it through restarts). This part of the store keeps
the ``send_at`` for the status and takes the planning job back on a cancel, atomically:
a job that was ever claimed has started and is not taken back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Schedule:
    tenant_id: str
    message_id: str
    send_at: datetime
    cancelled_at: datetime | None = None


class CancelResult(StrEnum):
    cancelled = "cancelled"  # the planning job is gone and never ran (also: cancelled before)
    started = "started"  # the planning job was claimed, or has run: too late
    unknown = "unknown"  # no scheduled message of this id


class Schedules(Protocol):
    async def add_schedule(self, schedule: Schedule) -> None:
        """Remember a message's ``send_at`` (a second call for the same message keeps the
        first)."""

    async def get_schedule(self, tenant_id: str, message_id: str) -> Schedule | None: ...

    async def cancel_scheduled(
        self, tenant_id: str, message_id: str, plan_job_id: str, at: datetime
    ) -> CancelResult:
        """Remove the planning job if it was never claimed and mark the schedule cancelled
        at ``at`` (a later cancel keeps the first time)."""
