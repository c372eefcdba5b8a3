"""The two lanes of the work queue, and how one claim splits between them.

Urgent work (emergency and absence: planning, sending, escalation) is claimed before
normal work (general, reminder, digest, housekeeping), on every backend. So that a
stream of urgent work cannot starve the normal lane, each claim of ``limit`` jobs keeps
``limit * share`` slots for normal jobs (when there are any): the integer part always,
the fraction with that probability. An urgent job therefore waits behind at most one
claim's worth of normal work, and normal work gets at least ``share`` of every claim.

Inside the urgent lane, work is ordered per message, not only by arrival: an absence
alert (one to three sends) posted while an emergency of tens of thousands of sends is
being sent must not wait for that emergency's backlog. Each job due when queued may
carry its ``rank`` in its message's work (0 for the first send, 1 for the next, …);
:func:`order_at` orders it as if queued ``rank`` seconds later (up to :data:`RANKS`),
and, so that it is never held back, shifts it all ``RANKS`` seconds earlier. A small
message's sends therefore come before a big message's later ones: the ``j``-th send of
a message queued during another waits behind at most ``j`` plus one send for each
second that one's pending sends have waited (while that message goes faster than one
send a second), a round robin between messages. Work that was not due when queued (a
retry, an escalation, a lease that ran out, work handed over in its process) keeps its
due time: it waits behind at most :data:`RANKS` first sends of each message queued
after it. The key is the backends' visibility time (SQLite's ``visible_at``, the
Redis waiting set's score), so a claim reads it in the same index order as before, and
it is never later than the job's due time.

Both backends take the split from :func:`split` and the order from :func:`order_at`,
so the rules live here only.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

from gateway.models import Job
from gateway.settings import DEFAULT_NORMAL_SHARE
from gateway.store.encoding import us

__all__ = ["DEFAULT_NORMAL_SHARE", "RANKS", "RANK_STEP_US", "Split", "order_at", "split", "take"]

# A send's rank in its message is worth this much waiting (µs), for the first RANKS sends.
RANK_STEP_US = 1_000_000
RANKS = 1000


class Split(NamedTuple):
    limit: int  # jobs to claim in all
    normal_reserved: int  # of which at least this many go to the normal lane if it has them


def split(limit: int, normal_share: float, rand: float | None = None) -> Split:
    """How a claim of ``limit`` jobs splits; ``rand`` in [0, 1) (drawn when None)."""
    if limit <= 0:
        return Split(0, 0)
    share = min(max(normal_share, 0.0), 1.0)
    draw = random.random() if rand is None else rand
    return Split(limit, min(limit, math.floor(limit * share + draw)))


def take(split_: Split, urgent_due: int, normal_due: int) -> tuple[int, int]:
    """(urgent, normal) jobs to take when this many of each lane are due."""
    normal = min(normal_due, max(split_.normal_reserved, split_.limit - urgent_due))
    urgent = min(urgent_due, split_.limit - normal)
    return urgent, normal


def order_at(job: Job) -> int:
    """When (µs) a claim may take ``job``, and its place in its lane: its due time, or
    for urgent work due when queued (a ``rank``, no attempt yet) that time moved by its
    rank (see the module). Never later than the due time."""
    due = us(job.due_at)
    if not job.urgent or job.rank is None or job.attempts:
        return due
    return due - RANK_STEP_US * (RANKS - min(max(job.rank, 0), RANKS))
