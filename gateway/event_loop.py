"""The event loop the gateway's processes run on: uvloop by default, asyncio's own on
request (``event_loop`` setting) and on Windows, where uvloop does not exist."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from gateway.errors import ConfigError

EventLoopKind = Literal["uvloop", "asyncio"]
T = TypeVar("T")


def loop_factory(kind: EventLoopKind) -> Callable[[], asyncio.AbstractEventLoop]:
    """A new-loop factory for ``kind``; a missing uvloop is a configuration error."""
    if kind == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        raise ConfigError(
            "event_loop is uvloop but uvloop is not installed: install it or set "
            "BUDBRINGER_EVENT_LOOP=asyncio"
        ) from exc
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], kind: EventLoopKind) -> T:
    """``asyncio.run`` on a loop of ``kind``."""
    try:
        factory = loop_factory(kind)
    except ConfigError:
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
