"""How both store backends write times and JSON: times as integer microseconds since
the epoch (exact, ordered, cheap to compare; SQLite columns and Redis fields and
scores alike), JSON compact and unescaped. One definition, so a value written by one
backend's code reads back the same in the other's."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def us(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _US


def us_opt(value: datetime | None) -> int | None:
    return None if value is None else us(value)


def from_us(value: int | str) -> datetime:
    """The datetime (UTC) of a stored microsecond count (Redis hands it back as text)."""
    return _EPOCH + timedelta(microseconds=int(value))


def from_us_opt(value: int | str | None) -> datetime | None:
    """None for a missing value (NULL in SQLite, "" or absent in Redis)."""
    return None if value is None or value == "" else from_us(value)


# One encoder: json.dumps with options builds a new one per call (per delivery row).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)
