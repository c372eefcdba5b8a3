"""Job handlers and the one registry that wires them.

Each feature says which kinds of durable job it does with a ``handlers()`` mapping
(kind -> handler): the dispatcher its ``plan`` and ``send``, webhooks their fan-out
and sends, escalation its steps, absence its planning and staff notices, retention
its purge, the tracker's parked callbacks theirs. The service joins them with
:func:`registry` and hands the result to the dispatcher at construction; a kind that
two features claim is a wiring error at start, never a handler silently replaced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from gateway.errors import ConfigError
from gateway.models import Job

# A handler finishes or retries its job itself; an exception it raises is logged and
# the job retried with backoff by the dispatcher.
JobHandler = Callable[[Job], Awaitable[None]]


def registry(*parts: Mapping[str, JobHandler]) -> dict[str, JobHandler]:
    """Every part's handlers in one mapping; ConfigError naming the kind that two parts
    both handle."""
    merged: dict[str, JobHandler] = {}
    for part in parts:
        for kind, handler in part.items():
            if kind in merged:
                raise ConfigError(f"two handlers for the job kind {kind!r}")
            merged[kind] = handler
    return merged
