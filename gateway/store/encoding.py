"""How both store backends write times and JSON: times as integer microseconds since
the epoch (exact, ordered, cheap to compare; SQLite columns and Redis fields and
scores alike), JSON compact and unescaped. One definition, so a value written by one
backend's code reads back the same in the other's."""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_FIRST, _LAST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def us(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _US


def us_opt(value: datetime | None) -> int | None:
    return None if value is None else us(value)


def from_us(value: int | str) -> datetime:
    """The datetime (UTC) of a stored microsecond count (Redis hands it back as text).
    A count past year 9999 (a key's expiry an older version took) reads as the last
    moment a datetime holds, so the row can still be listed and revoked."""
    try:
        return _EPOCH + timedelta(microseconds=int(value))
    except OverflowError:
        return _LAST if int(value) > 0 else _FIRST


def from_us_opt(value: int | str | None) -> datetime | None:
    """None for a missing value (NULL in SQLite, "" or absent in Redis)."""
    return None if value is None or value == "" else from_us(value)


# One encoder: json.dumps with options builds a new one per call (per delivery row).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# Its C core called directly (what JSONEncoder.encode ends in, two Python calls fewer;
# every planned delivery writes two JSON columns). No check for cycles: the store
# writes plain data, never a structure that contains itself.
_C_ENCODE = getattr(json.encoder, "c_make_encoder", None)
_ENCODE = (
    None
    if _C_ENCODE is None
    else _C_ENCODE(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
)
# The decoder's C scanner: what json.loads ends in, three Python calls fewer per value
# (every claimed delivery reads two JSON columns). For JSON the store wrote itself.
# (JSONDecoder keeps it as an instance attribute; the stubs do not name it.)
_SCAN: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]


def dumps(value: Any) -> str:
    if _ENCODE is None:  # pragma: no cover - CPython has the C encoder
        return _ENCODER.encode(value)
    return "".join(_ENCODE(value, 0))


def loads(text: str) -> Any:
    """A JSON value the store wrote (by :func:`dumps`): trusted, so trailing text is not
    looked for as ``json.loads`` does."""
    try:
        return _SCAN(text, 0)[0]
    except StopIteration as exc:  # what the scanner raises for text that is no JSON
        raise json.JSONDecodeError("Expecting value", text, exc.value) from None
