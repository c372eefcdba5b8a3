"""When a failed attempt is tried again, and what its delivery's history says of it.

One rule for every send that is retried: the dispatcher's send jobs and the daily
digest's (gateway/digest.py). The wait is exponential with full jitter, capped, and at
least the provider's Retry-After; the delivery moves to ``sending`` (so its next attempt
knows an earlier one may have reached the provider) with a history row that names the
attempt, its error and the next try.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.models import DeliveryStatus

if TYPE_CHECKING:
    from gateway.store.ports import DeliveryReport, DeliveryStore


def backoff(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: full jitter, at least Retry-After."""
    delay = random.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def attempt_note(attempt: int, code: str, due: datetime, now: datetime) -> str:
    """The history row of a failed attempt that is tried again at ``due``."""
    delay = (due - now).total_seconds()
    return (
        f"attempt {attempt} {_failed_with(code)} next try at "
        f"{due.isoformat(timespec='seconds')} (in {delay:.1f}s)"
    )


def _failed_with(code: str) -> str:
    """What :func:`attempt_note` writes of an attempt that failed with ``code``."""
    return f"failed: {code};"


async def unanswered_before(store: DeliveryReport, delivery_id: str, code: str) -> bool:
    """Whether an earlier attempt of the delivery failed with this ``code``, read from
    its history rows (:func:`attempt_note`). For a maybe-sent failure (an email written
    whole and answered too late): the second one ends the delivery as sent, unconfirmed,
    rather than send a third copy (RFC 1047)."""
    rows = (await store.history([delivery_id])).get(delivery_id, [])
    return any(_failed_with(code) in (row.detail or "") for row in rows)


async def record_attempt(store: DeliveryStore, delivery_id: str, at: datetime, note: str) -> None:
    """A failed attempt of a send that is tried again: ``sending`` with ``note`` as its
    history row, or the row alone when it is ``sending`` already."""
    if not await store.transition(delivery_id, DeliveryStatus.sending, at, detail=note):
        await store.note_attempt(delivery_id, at, note)
