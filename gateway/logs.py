"""JSON logs with personal data masked.

Log calls should never carry personal data in the first place; the masking
here is the safety net for what slips through (an exception text quoting an
address, a library's own message).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_PHONE = re.compile(r"(?<![\w])\+?\d[\d \-]{6,}\d(?![\w])")
_BEARER = re.compile(r"(?i)(bearer\s+|whsec_|bbk_)[A-Za-z0-9._~+/=-]+")
# A link's token in a path or URL (e.g. in a library's exception text): a read or
# unsubscribe link, a parent's page link and a staff sign-in link. Tokens are long; the
# pages beside them (/p/inbox, /p/preferences) are short words and stay readable.
_LINK_TOKEN = re.compile(r"(/(?:r|u|p|staff/signin)/)[A-Za-z0-9_~.+=-]{16,}")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def mask(text: str) -> str:
    """Mask emails, phone numbers, credentials and link tokens in free text."""
    text = _BEARER.sub(lambda m: m.group(1) + "***", text)
    text = _LINK_TOKEN.sub(lambda m: m.group(1) + "***", text)
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE.sub(lambda m: "***" + m.group(0)[-2:], text)


def _masked(value: Any) -> Any:
    """``value`` with every string in it masked; other objects become masked text."""
    if isinstance(value, str):
        return mask(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {mask(str(k)): _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(v) for v in value]
    return mask(str(value))


UNMATCHED = "(unmatched)"  # a request no route took (404, 405)


def route_of(request: web.Request) -> str:
    """The route template a request matched (``/r/{token}``), for every log line that
    names a request. Never the raw path or query: those carry read-link tokens and keys."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None or isinstance(request.match_info.http_exception, web.HTTPException):
        return UNMATCHED
    return resource.canonical


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = _masked(value)  # lists, dicts and objects too, not only str
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries whose debug output carries personal data (aiosqlite logs SQL parameters).
    for name in ("aiohttp.access", "aiosqlite", "twilio", "urllib3", "google"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
