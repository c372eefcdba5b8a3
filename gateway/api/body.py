"""Reading and validating JSON bodies, with errors that say what and where.

A body is UTF-8 JSON (RFC 8259) and nothing else: another charset is 415 (the media
type is not checked: ``curl -d`` says form-urlencoded, a raw POST octet-stream, and
the body is read as JSON whatever its label), a byte order mark, bytes that are not
UTF-8, nesting deeper than ``MAX_DEPTH`` or a number longer than ``MAX_NUMBER_CHARS``
are 400, before the parser could recurse or convert without bound. So are a key given
twice in one object (which value was meant?) and a control character other than tab,
a line or a page break in a string (a NUL in a subject would go on into every email
and SMS).
Input is validated strictly, as JSON: ``0`` is no date, ``true`` no integer.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy
from pydantic import BaseModel, ValidationError

from gateway.errors import (
    MalformedBody,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    plain_message,
)

M = TypeVar("M", bound=BaseModel)

MAX_DEPTH = 32  # our deepest schema nests 5 levels
MAX_NUMBER_CHARS = 40  # an int64 has 19 digits; a float's shortest repr fits in 24

# A JSON string (escapes included), and the brackets left once strings are gone.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
# A control character in a JSON string: DEL as it is (the parser refuses the others
# unescaped), or escaped: \u0000-\u001f but tab, line feed, vertical tab, form feed
# and carriage return (text pasted from a word processor has the middle two), and
# \u007f; not when its backslash is itself escaped (an even run of backslashes).
_CONTROL = re.compile(r"\x7f|(?<!\\)(?:\\\\)*\\u00(?:0[0-8ef]|1[0-9a-f]|7f)", re.IGNORECASE)


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as JSON rows: loc, message, type. Input values are left out
    on purpose: they may be personal data."""
    return [
        {"loc": list(err["loc"]), "message": plain_message(err), "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _malformed(message: str, kind: str) -> MalformedBody:
    return MalformedBody(message, errors=[{"loc": ["body"], "message": message, "type": kind}])


async def read_raw(request: web.Request, limit: int) -> bytes:
    charset = request.charset
    if charset is not None and charset.lower() not in _UTF8:
        raise UnsupportedMediaType(
            "bodies are UTF-8 only",
            errors=[{"loc": ["header", "Content-Type"], "message": "charset must be utf-8",
                     "type": "charset"}],
        )  # fmt: skip
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    # StreamReader.read(n) returns what is buffered, not n bytes: read to the end.
    raw = bytearray()
    async for chunk in request.content.iter_any():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
    return bytes(raw)


def decode_utf8(raw: bytes) -> str:
    """The body as text: UTF-8 without a byte order mark, else 400."""
    if raw.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _malformed("the body starts with a byte order mark; send UTF-8 without one", "bom")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"the body is not UTF-8 (byte {exc.start})", "not_utf8") from exc


def check_controls(text: str, offset: int = 0) -> None:
    """400 if a string of the JSON ``text`` holds a control character other than tab,
    line feed, vertical tab, form feed and carriage return (``offset``: where ``text``
    starts in the body, for the position the error names)."""
    found = _CONTROL.search(text)
    if found is not None:
        raw = found.group(0) == "\x7f"
        code = "007F" if raw else found.group(0)[-4:].upper()
        raise _malformed(
            f"a string holds the control character U+{code} (character "
            f"{offset + found.end() - (1 if raw else 6)}); only tab, line and page breaks "
            "are allowed",
            "control_character",
        )


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members as a dict; 400 if a key is given twice."""
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise duplicate_key(key)
            seen.add(key)
    return members


def duplicate_key(key: str) -> MalformedBody:
    return _malformed(f"the key {key!r} is given twice in one object", "duplicate_key")


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """400 if the JSON ``text`` nests deeper than ``limit`` (``MAX_DEPTH`` for a body)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if len(brackets) <= 2 * limit:
        return
    depth = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > limit:
                raise too_deep()
        else:
            depth -= 1


def _number(kind: type[int] | type[float]) -> Any:
    def convert(text: str) -> int | float:
        if len(text) > MAX_NUMBER_CHARS:
            raise _malformed(f"a number longer than {MAX_NUMBER_CHARS} characters", "json_number")
        return kind(text)

    return convert


def _constant(name: str) -> Any:
    raise _malformed(f"{name} is not JSON", "json_invalid")


# The stdlib decoder with our bounds on numbers and no NaN or Infinity.
DECODER = json.JSONDecoder(
    parse_int=_number(int),
    parse_float=_number(float),
    parse_constant=_constant,
    object_pairs_hook=unique_keys,
)


def json_invalid(exc: json.JSONDecodeError) -> ValidationFailed:
    """The 422 of a body that is not JSON: where, never what."""
    return ValidationFailed(
        "malformed JSON",
        errors=[
            {
                "loc": ["body"],
                "message": f"{exc.__class__.__name__} at line {exc.lineno} column {exc.colno}",
                "type": "json_invalid",
            }
        ],
    )


def too_deep() -> MalformedBody:
    return _malformed(f"JSON nested deeper than {MAX_DEPTH} levels", "json_too_deep")


def parse_json(raw: bytes) -> Any:
    text = decode_utf8(raw)
    check_depth(text)
    check_controls(text)
    try:
        return DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise json_invalid(exc) from exc
    except RecursionError as exc:  # the depth check above should make this unreachable
        raise too_deep() from exc


def to_model(model: type[M], data: Any) -> M:
    """``data`` (parsed JSON) validated strictly, with JSON's types: no string or number
    becomes a date unless it is an ISO date string, no boolean an integer."""
    try:
        return model.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        raise ValidationFailed("the body is not valid", errors=validation_errors(exc)) from exc


async def read_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The form fields of a urlencoded or multipart body; a body aiohttp cannot parse
    (no boundary, an unknown charset or transfer encoding, broken headers, bytes that
    are not UTF-8) is 400."""
    try:
        return await request.post()
    except web.HTTPException:
        raise  # 413 from aiohttp's own size limit
    except (ValueError, LookupError, RuntimeError, AssertionError, HttpProcessingError) as exc:
        raise _malformed("the form body cannot be read", "form_invalid") from exc


# Bodies larger than this are parsed and validated in a thread: a directory batch of
# 100,000 persons takes seconds (phone numbers, emails), and the event loop must keep
# answering /healthz and events meanwhile.
OFFLOAD_BYTES = 256 * 1024


def _parse_model(model: type[M], raw: bytes) -> M:
    return to_model(model, parse_json(raw))


async def read_model(request: web.Request, model: type[M], limit: int) -> M:
    raw = await read_raw(request, limit)
    if len(raw) > OFFLOAD_BYTES:
        return await asyncio.to_thread(_parse_model, model, raw)
    return _parse_model(model, raw)
