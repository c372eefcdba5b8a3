"""Small urgent work handed to this process's dispatcher, past the queue.

The urgent lane is first in, first out (gateway/store/lanes.py): an absence alert posted
just after an emergency to a unit waited for every one of the emergency's sends, over a
thousand, to be claimed before its own plan job, and then again before its own two or
three sends. Queued in a process whose dispatcher runs, such work is instead stored *as
claimed by this process*: due only when a lease would end, its first attempt counted
(:meth:`UrgentHandoff.lease`), and, once stored, handed straight to the dispatcher's urgent
buffer (:meth:`UrgentHandoff.hand`).

Durability does not change: the job is stored before it runs, and if this process dies
its "lease" runs out and any worker claims it, as for any claimed job; the dispatcher
hands back what it has not started when it stops. Only jobs the store wrote now are
handed (the caller checks): one that existed already may be another worker's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from gateway.models import Delivery, Job

# What the dispatcher takes: the stored jobs, and the deliveries of send jobs by id.
Taker = Callable[[list[Job], dict[str, Delivery]], None]


class UrgentHandoff:
    """Between the code that queues small urgent work and the dispatcher of its process.

    ``limit`` is the most jobs handed at once (``DISPATCH__URGENT_HANDOFF``; 0: never).
    Nothing is handed while no dispatcher runs here (an API-only process, a test
    driving the dispatcher by hand)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._take: Taker | None = None
        self._kinds: frozenset[str] = frozenset()
        self._lease = timedelta(0)

    def attach(self, take: Taker, lease_seconds: float, kinds: Iterable[str]) -> None:
        """The dispatcher's run loop started: hand it work of ``kinds`` (those it has a
        handler for) from now on."""
        self._take = take
        self._kinds = frozenset(kinds)
        self._lease = timedelta(seconds=lease_seconds)

    def detach(self) -> None:
        """The dispatcher's run loop ended: queue everything again."""
        self._take = None

    def lease(self, jobs: Sequence[Job], now: datetime) -> list[Job] | None:
        """``jobs`` as they are stored to be handed over (due when a lease taken now would
        end, first attempt counted), or None to queue them as they are: no dispatcher
        here, none or too many jobs, or one that is not urgent or of a kind the dispatcher
        does not handle (it would end such a job as unknown: lost)."""
        if self._take is None or not jobs or len(jobs) > self.limit:
            return None
        if not all(job.urgent and job.kind in self._kinds for job in jobs):
            return None
        due = now + self._lease
        # Due when the lease ends, not before (no rank moves it earlier: lanes.order_at).
        leased = {"due_at": due, "attempts": 1, "rank": None}
        return [job.model_copy(update=leased) for job in jobs]

    def hand(self, jobs: Sequence[Job], deliveries: Iterable[Delivery] = ()) -> bool:
        """Give leased jobs, stored now, to the dispatcher; False if it stopped meanwhile
        (they run when their lease ends, like a stopped worker's)."""
        if self._take is None:
            return False
        # Only the deliveries a handed job sends: an in-app delivery or a suppression
        # record has no send job, and nothing would ever take it out of the dispatcher.
        refs = {job.ref for job in jobs}
        self._take(list(jobs), {d.id: d for d in deliveries if d.id in refs})
        return True
