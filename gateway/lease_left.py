"""How much of the running job's lease is left, for a send of several requests.

A send starts only while half its job's lease is left, and each provider request is
bounded by its channel's timeout, at most half the lease (gateway/settings.py). So a
send of one request ends before the lease does, and no other worker takes the job over
and sends it again meanwhile. A send of several requests (an SMS retry that first looks
up an earlier attempt, a push whose access token is fetched or refused first) could
still outlast the lease. The dispatcher says when each job's lease ends
(:func:`lease_ends_in`, in the job's task); a channel asks :func:`room_for` before each
request whether a whole timeout still fits, and when it does not the send stops there
(:class:`~gateway.errors.LeaseShort`, ``lease_short``): its job is put off, due at once
and no attempt used up, to start again from the beginning with a fresh lease. Outside a
dispatcher's job (a channel driven by hand, ``budbringer doctor``) nothing is bounded.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from gateway.errors import LeaseShort

LEASE_SHORT = "lease_short"

_ENDS: ContextVar[float | None] = ContextVar("lease_ends", default=None)


def lease_ends_in(seconds: float) -> None:
    """The running task's job's lease ends ``seconds`` from now."""
    _ENDS.set(time.monotonic() + seconds)


def room_for(seconds: float) -> None:
    """Raise :class:`LeaseShort` (``lease_short``, a transient error) when less than
    ``seconds`` of the running job's lease are left: a request that long could end after
    another worker took the job over."""
    ends = _ENDS.get()
    if ends is not None and ends - time.monotonic() < seconds:
        raise LeaseShort(
            "too little of the job's lease is left for another request", code=LEASE_SHORT
        )
