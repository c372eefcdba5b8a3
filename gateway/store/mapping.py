"""Error mapping of the store backends, one rule for both: every public coroutine
method of a backend class raises only the project's error tree
(:mod:`gateway.errors`). A backend names its native failures and what to say; the
mapping is installed by the backend's base class in ``__init_subclass__``, so a
feature class cannot forget it."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from gateway.errors import BudbringerError, StoreError

_P = ParamSpec("_P")
_R = TypeVar("_R")

Wrap = Callable[[Callable[..., Coroutine[Any, Any, Any]]], Callable[..., Coroutine[Any, Any, Any]]]


def mapping(
    native: tuple[type[BaseException], ...], message: str
) -> Callable[[Callable[_P, Coroutine[Any, Any, _R]]], Callable[_P, Coroutine[Any, Any, _R]]]:
    """A decorator raising ``StoreError(message)`` from any ``native`` error (our own
    errors pass through unchanged)."""

    def decorate(
        fn: Callable[_P, Coroutine[Any, Any, _R]],
    ) -> Callable[_P, Coroutine[Any, Any, _R]]:
        @functools.wraps(fn)
        async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return await fn(*args, **kwargs)
            except BudbringerError:
                raise
            except native as exc:
                raise StoreError(message) from exc

        return wrapper

    return decorate


def map_public(cls: type, wrap: Wrap) -> None:
    """Wrap every public coroutine method defined on ``cls`` itself."""
    for name, value in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(value):
            setattr(cls, name, wrap(value))
