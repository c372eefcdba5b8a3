"""Long CPU work in a thread that lets the event loop go first.

A thread that holds the GIL makes the event loop wait up to the switch interval (5 ms)
each time the loop wants it back, and one C call (``json.loads`` of a 12 MB body, a
pydantic validation of 100,000 persons, freeing a million objects) holds it from start
to end. An event is a few dozen such hand-overs (every store call crosses threads), so
it took up to a second while a big directory batch was handled in a thread.

Work in a thread is therefore done in small pieces, and between pieces
:func:`let_loop_in` releases the GIL for a moment: a loop waiting for it takes it and
runs until it is idle, so the thread gets the time the loop leaves over.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

EVERY = 256  # items of a paced loop between two hand-overs


def let_loop_in() -> None:
    """Release the GIL for a moment (in a thread: the loop runs first if it waits)."""
    time.sleep(0)


def paced(items: Iterable[T], every: int = EVERY) -> Iterator[T]:
    """``items``, letting the loop in after every ``every`` of them."""
    for i, item in enumerate(items, 1):
        yield item
        if i % every == 0:
            let_loop_in()
