"""Schemathesis hooks for scripts/fuzz.py (loaded through SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.serializer("application/zip")
def zip_body(ctx: Any, value: Any) -> bytes:
    """A OneRoster upload: whatever bytes were generated (rarely a valid zip, on purpose)."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()
