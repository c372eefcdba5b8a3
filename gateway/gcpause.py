"""Pausing Python's cyclic garbage collector while a very large batch is handled.

A directory batch of 100,000 persons makes millions of objects while it is parsed,
validated and written. Each full collection walks all of them with the GIL held,
stalling every thread, the event loop included, for up to a second. Those objects
are freed by reference counting anyway, so :func:`gc_paused` switches the cyclic
collector off for as long as any such batch is in hand (nested and concurrent uses
counted) and back on after.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
