"""Models built from rows the store wrote itself, at a third of ``model_construct``'s cost.

Every row read back was validated on its way in, so the readers skip validation.
``model_construct`` still walks every field of the model for aliases and defaults,
which for a broadcast's deliveries, jobs and audience (tens of thousands of persons
and relations) was a few per cent of the gateway's CPU (issue 18). :func:`builder`
gives a function that takes every field by keyword, in the model's order, and makes
the same object ``model_construct`` would (same values, all fields set); called with
any other set of names, it falls back to ``model_construct``. :func:`assembler` is
the same without that check or fallback, for the hottest reads: there the safety rests
on the callers spelling out every field, which tests/test_store_trusted.py holds them to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__


def _check(cls: type[BaseModel]) -> None:
    fields = cls.model_fields
    if (
        any(f.alias or f.validation_alias for f in fields.values())
        or cls.__private_attributes__
        or cls.__pydantic_post_init__
        or cls.__pydantic_root_model__
        or cls.model_config.get("extra") == "allow"
    ):
        raise TypeError(f"{cls.__name__} needs model_construct")


def builder(cls: type[M]) -> Callable[..., M]:
    """``cls.model_construct`` for rows with every field given (see the module)."""
    assemble = assembler(cls)
    names = frozenset(cls.model_fields)

    def build(**values: Any) -> M:
        if values.keys() != names:
            return cls.model_construct(**values)
        return assemble(values)

    return build


def assembler(cls: type[M]) -> Callable[[dict[str, Any]], M]:
    """Like :func:`builder`, for a store's hottest reads (a broadcast's claimed
    deliveries): the object from a dict that the caller spells out with every field of
    ``cls`` (its tests compare the result with ``model_construct``'s), taken as the
    object's own ``__dict__``; no keyword call and no check of the names."""
    _check(cls)
    names = frozenset(cls.model_fields)
    new = cls.__new__

    def assemble(values: dict[str, Any]) -> M:
        model = new(cls)
        _set(model, "__dict__", values)
        _set(model, "__pydantic_fields_set__", set(names))
        _set(model, "__pydantic_extra__", None)
        _set(model, "__pydantic_private__", None)
        return model

    return assemble
