"""Python's cyclic garbage collector in a gateway process.

A directory batch of 100,000 persons makes millions of objects while it is parsed,
validated and written. Each full collection walks all of them with the GIL held,
stalling every thread, the event loop included, for up to a second. Those objects
are freed by reference counting anyway, so :func:`gc_paused` switches the cyclic
collector off for as long as any such batch is in hand (nested and concurrent uses
counted) and back on after.

A broadcast is the same in small: every send makes and drops dozens of containers
(its task, request, rows), nearly all freed by reference counting, while the
audience snapshot and everything made at start-up live on. With CPython's default
threshold the collector ran every few deliveries, and its full collections walked
every long-lived object: about 12 % of the gateway's CPU during a 3,000-child
emergency (issue 18). :func:`settle` is called once a process has started.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Container allocations (net of frees) between two young collections; CPython's is 700.
YOUNG_THRESHOLD = 20_000

_lock = threading.Lock()
_holders = 0
_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()


def settle() -> None:
    """Once a long-running process has started: keep what start-up made (modules,
    schemas, templates: never garbage) out of every later collection, and collect the
    young generation less often (cyclic garbage waits a little longer, no more).
    Start-up's own cyclic garbage is collected first: frozen, it would stay for good."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
