"""The two lanes of the work queue, and how one claim splits between them.

Urgent work (emergency and absence: planning, sending, escalation) is claimed before
normal work (general, reminder, digest, housekeeping), on every backend. So that a
stream of urgent work cannot starve the normal lane, each claim of ``limit`` jobs keeps
``limit * share`` slots for normal jobs (when there are any): the integer part always,
the fraction with that probability. An urgent job therefore waits behind at most one
claim's worth of normal work, and normal work gets at least ``share`` of every claim.

Both backends take the split from :func:`split`, so the rule lives here only.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

from gateway.settings import DEFAULT_NORMAL_SHARE

__all__ = ["DEFAULT_NORMAL_SHARE", "Split", "split", "take"]


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
