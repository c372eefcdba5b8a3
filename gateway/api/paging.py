"""Keyset paging of lists, shared by the routes that page.

A list ordered newest first pages by (``created_at``, ``id``): many rows share one
``created_at`` (a batch's messages, a broadcast's webhooks), so a page boundary by time
alone skips or repeats them. A full page answers ``next_before`` (the last row's time)
and ``next_before_id`` (its id); the client passes them back as ``before`` and
``before_id``. ``before`` alone still works as before (rows created earlier).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.api import spec

MAX_ID_LENGTH = 128


def before_time(raw: str) -> datetime:
    """``before`` of a paged list, in UTC: an ISO 8601 date-time with an offset (an
    unencoded "+01:00" arrives as " 01:00", and a space is never valid here).
    ValueError when it is not one, or lies past what a date holds once in UTC
    ("9999-12-31T23:59:59-14:00")."""
    at = datetime.fromisoformat(raw.replace(" ", "+"))
    if at.tzinfo is None:
        raise ValueError("no time zone offset")
    try:
        return at.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("out of range") from exc


def page_after_id(query: Mapping[str, str], errors: list[dict[str, Any]]) -> str | None:
    """``before_id`` from the query (appending an error to ``errors`` if it is unusable)."""
    raw = query.get("before_id")
    if raw is None:
        return None
    if "before" not in query:
        errors.append(
            {
                "loc": ["query", "before_id"],
                "message": "before_id needs before (pass next_before and next_before_id)",
                "type": "missing",
            }
        )
        return None
    if not raw or len(raw) > MAX_ID_LENGTH or not raw.isascii() or not raw.isprintable():
        errors.append(
            {
                "loc": ["query", "before_id"],
                "message": f"an id of 1 to {MAX_ID_LENGTH} printable ASCII characters",
                "type": "string_type",
            }
        )
        return None
    return raw


BEFORE_ID = spec.query(
    "before_id",
    "Page: the `next_before_id` of the previous page, with `before`. Rows sharing one"
    " `created_at` are paged by id, so none is skipped; `before` alone lists only rows"
    " created earlier",
    type="string",
    maxLength=MAX_ID_LENGTH,
)
"""The ``before_id`` query parameter, for the OpenAPI description of each paged route."""
