"""Reading a very large JSON body (a 100,000-person directory batch) without holding
the event loop.

One C call over the whole body holds the GIL for as long as it runs, whatever thread
it runs in: ``json.loads`` of 12 MB, the depth check's regular expressions and a
pydantic validation of 100,000 persons each stalled ``/healthz`` for 0.3-0.6 s. So
the body is taken in small pieces in a thread, which lets the loop in between pieces
(:mod:`gateway.pacing`):

* :func:`parse_in_pieces` parses a top-level object member by member and each array
  or object member element by element (``raw_decode``), checking the depth of each
  element; what it returns, and every error, is what ``parse_json`` gives.
* :func:`validate_in_slices` validates the model's list and dict fields a hundred
  items at a time and the rest of the body in one go; the errors are the rows one
  validation of the whole body would give (``["persons", 12, "phone"]``), in the
  model's field order.
* :func:`free_in_pieces` drops what was parsed a slice at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from functools import cache
from typing import Annotated, Any, TypeVar, get_origin

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from gateway.api.body import (
    DECODER,
    MAX_DEPTH,
    check_controls,
    check_depth,
    decode_utf8,
    duplicate_key,
    json_invalid,
    parse_json,
    read_raw,
    to_model,
    too_deep,
    validation_errors,
)
from gateway.errors import ValidationFailed
from gateway.pacing import EVERY, let_loop_in

M = TypeVar("M", bound=BaseModel)

SLICE = 100  # items validated (or freed) between two hand-overs to the loop
# Smaller bodies are parsed and validated in one go (a few milliseconds).
PIECES_FROM_BYTES = 256 * 1024

_SPACE = re.compile(r"[ \t\n\r]*")


def _skip(text: str, pos: int) -> int:
    found = _SPACE.match(text, pos)
    assert found is not None  # the pattern matches the empty string
    return found.end()


def _element(text: str, pos: int, depth: int) -> tuple[Any, int]:
    """One JSON value at ``pos`` (nested ``depth`` levels deep in the body) and the
    position after it."""
    value, end = DECODER.raw_decode(text, pos)
    piece = text[pos:end]
    if text[pos] in "[{":
        check_depth(piece, MAX_DEPTH - depth)
    check_controls(piece, pos)  # element by element: the loop gets in between
    return value, end


def _expect(text: str, pos: int, char: str, what: str) -> int:
    """The position after ``char`` (and the space after it) at ``pos``."""
    if not text.startswith(char, pos):
        raise json.JSONDecodeError(f"Expecting {what}", text, pos)
    return _skip(text, pos + 1)


def _members(text: str, pos: int, depth: int, keyed: bool) -> tuple[Any, int]:
    """The array (or object, ``keyed``) at ``pos``, element by element."""
    close = "}" if keyed else "]"
    items: list[Any] = []
    pairs: dict[str, Any] = {}
    pos = _skip(text, pos + 1)
    if text.startswith(close, pos):
        return (pairs if keyed else items), pos + 1
    for count in itertools.count(1):
        if count % EVERY == 0:
            let_loop_in()
        if keyed:
            if not text.startswith('"', pos):
                raise json.JSONDecodeError("Expecting property name", text, pos)
            key, end = DECODER.raw_decode(text, pos)
            check_controls(text[pos:end], pos)
            pos = end
            if key in pairs:
                raise duplicate_key(key)
            pos = _expect(text, _skip(text, pos), ":", "':' delimiter")
            pairs[key], pos = _value(text, pos, depth)
        else:
            value, pos = _element(text, pos, depth)
            items.append(value)
        pos = _skip(text, pos)
        if text.startswith(close, pos):
            break
        pos = _expect(text, pos, ",", "',' delimiter")
    return (pairs if keyed else items), pos + 1


def _value(text: str, pos: int, depth: int) -> tuple[Any, int]:
    """The value at ``pos`` of a member of the top-level object (``depth`` 1): its
    arrays and objects are taken element by element."""
    if depth == 1 and text.startswith(("[", "{"), pos):
        return _members(text, pos, depth + 1, keyed=text[pos] == "{")
    return _element(text, pos, depth)


def parse_in_pieces(raw: bytes) -> Any:
    """``parse_json(raw)``, in pieces (blocking: run it in a thread)."""
    text = decode_utf8(raw)
    pos = _skip(text, 0)
    try:
        if not text.startswith("{", pos):
            return parse_json(raw)
        value, pos = _members(text, pos, 1, keyed=True)
        pos = _skip(text, pos)
        if pos != len(text):
            raise json.JSONDecodeError("Extra data", text, pos)
        return value
    except json.JSONDecodeError as exc:
        raise json_invalid(exc) from exc
    except RecursionError as exc:
        raise too_deep() from exc


@cache
def _slice_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """The field's type without its length bounds, to validate a slice of it."""
    annotation: Any = model.model_fields[name].annotation
    return TypeAdapter(annotation, config=model.model_config)


@cache
def _bounds(model: type[BaseModel], name: str) -> TypeAdapter[Any] | None:
    """The field's length bounds on a container of unchecked items (None: no bounds)."""
    field = model.model_fields[name]
    if not field.metadata:
        return None
    container = list[Any] if get_origin(field.annotation) is list else dict[Any, Any]
    bounded: Any = Annotated[(container, *field.metadata)]
    return TypeAdapter(bounded)


def _sliced_fields(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """The list and dict fields of ``model`` that ``data`` gives as such."""
    found: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        origin = get_origin(field.annotation)
        value = data.get(name)
        if (origin is list and isinstance(value, list)) or (
            origin is dict and isinstance(value, dict)
        ):
            found[name] = value
    return found


def _at(errors: list[dict[str, Any]], name: str, offset: int | None) -> list[dict[str, Any]]:
    """Rows of a slice's errors as rows of the whole body's: the field's name first,
    a list index moved by the slice's ``offset``."""
    for error in errors:
        loc = error["loc"]
        if offset is not None and loc:
            loc = [offset + loc[0], *loc[1:]]
        error["loc"] = [name, *loc]
    return errors


def _validate_field(model: type[BaseModel], name: str, value: Any) -> tuple[Any, list[Any]]:
    """The field's items validated a slice at a time, and their errors."""
    bounds = _bounds(model, name)
    if bounds is not None:
        try:
            bounds.validate_python(value)
        except ValidationError as exc:
            return value, _at(validation_errors(exc), name, None)
    adapter = _slice_adapter(model, name)
    keyed = isinstance(value, dict)
    items = list(value.items()) if keyed else value
    parts: list[Any] = []
    errors: list[dict[str, Any]] = []
    for start in range(0, len(items), SLICE):
        let_loop_in()
        piece = dict(items[start : start + SLICE]) if keyed else items[start : start + SLICE]
        try:
            parts.append(adapter.validate_json(json.dumps(piece), strict=True))
        except ValidationError as exc:
            errors.extend(_at(validation_errors(exc), name, None if keyed else start))
    if keyed:
        return {k: v for part in parts for k, v in part.items()}, errors
    return [item for part in parts for item in part], errors


def _field_order(model: type[BaseModel]) -> Any:
    order = {name: i for i, name in enumerate(model.model_fields)}
    return lambda error: order.get(error["loc"][0] if error["loc"] else "", len(order))


def validate_in_slices(model: type[M], data: Any) -> M:
    """``to_model(model, data)``, its list and dict fields a slice at a time (blocking:
    run it in a thread)."""
    if not isinstance(data, dict):
        return to_model(model, data)
    big = _sliced_fields(model, data)
    rest = {**data, **{name: type(value)() for name, value in big.items()}}
    errors: list[dict[str, Any]] = []
    base: M | None = None
    try:
        base = model.model_validate_json(json.dumps(rest), strict=True)
    except ValidationError as exc:
        errors = [e for e in validation_errors(exc) if not e["loc"] or e["loc"][0] not in big]
    values: dict[str, Any] = {}
    for name, value in big.items():
        values[name], field_errors = _validate_field(model, name, value)
        errors.extend(field_errors)
    if errors or base is None:
        raise ValidationFailed(
            "the body is not valid", errors=sorted(errors, key=_field_order(model))
        )
    return base.model_copy(update=values)


def free_in_pieces(held: list[Any]) -> None:
    """Empty these lists and dicts a slice at a time, so that no single deallocation of
    100,000s of objects holds the GIL (blocking: run it in a thread)."""
    for container in held:
        if isinstance(container, list):
            while container:
                del container[-SLICE:]
                let_loop_in()
        elif isinstance(container, dict):
            while container:
                for _ in range(min(SLICE, len(container))):
                    container.popitem()
                let_loop_in()


def big_parts(value: Any) -> list[Any]:
    """The lists and dicts a parsed body or a model holds at its top level."""
    fields = value.__dict__ if isinstance(value, BaseModel) else value
    if not isinstance(fields, dict):
        return []
    return [v for v in fields.values() if isinstance(v, list | dict)]


async def read_big_model(request: web.Request, model: type[M], limit: int) -> M:
    """``read_model`` for bodies of up to 100,000s of rows: parsed, validated and the
    parsed JSON dropped in pieces, in a thread that lets the loop in between them."""
    raw = await read_raw(request, limit)
    if len(raw) <= PIECES_FROM_BYTES:
        return to_model(model, parse_json(raw))
    return await asyncio.to_thread(_parse_and_validate, model, raw)


def _parse_and_validate(model: type[M], raw: bytes) -> M:
    data = parse_in_pieces(raw)
    try:
        return validate_in_slices(model, data)
    finally:
        free_in_pieces(big_parts(data))
