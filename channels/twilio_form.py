"""Create-a-Message as one bare form POST, with twilio's own error types.

``client.messages.create_async`` costs about 15 % of the gateway's CPU in the broadcast
benchmark (building a ``MessageInstance`` and twilio's request plumbing per send). The
request itself is simple and fixed by Twilio's OpenAPI document (``POST
/2010-04-01/Accounts/{AccountSid}/Messages.json``, form fields ``To``, ``Body``,
``StatusCallback``, and ``From`` or ``MessagingServiceSid``; tests/test_twilio_openapi.py
checks it against the document). Everything around it stays twilio's: the headers come
from ``Client.get_headers``, the host from ``Client.get_hostname`` (TWILIO_EDGE /
TWILIO_REGION), and an error answer becomes the exception ``create_async`` would raise
(``Version.exception``: ``TwilioRestException`` or ``TwilioServiceException``).
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Any

import aiohttp
from multidict import CIMultiDict
from twilio.http.response import Response
from yarl import URL

CONNECTIONS = 100  # the pool twilio's AsyncTwilioHttpClient gets from aiohttp's default
CREATE_FAILED = "Unable to create record"  # twilio's message for a failed create

# What urlencode (quote_plus) makes of each UTF-8 byte: unreserved as is, space as +.
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
_FORM_BYTE = [chr(b) if b in _UNRESERVED else "+" if b == 0x20 else f"%{b:02X}" for b in range(256)]


def form_quote(text: str) -> str:
    """``quote_plus(text)``, byte for byte (one form or query value)."""
    return "".join(map(_FORM_BYTE.__getitem__, text.encode("utf-8")))


def form_body(form: dict[str, str]) -> bytes:
    """``urlencode(form).encode("ascii")``, byte for byte, without urllib's per-byte
    Python loop (an SMS body is a few hundred bytes, most of them escaped in Norwegian)."""
    return "&".join(f"{form_quote(key)}={form_quote(value)}" for key, value in form.items()).encode(
        "ascii"
    )


class MessageCreate:
    """POSTs new messages for one account; :meth:`create` returns the message SID."""

    def __init__(
        self, client: Any, authorization: str, timeout: float, retry_after: ContextVar[str | None]
    ) -> None:
        """``client``: the started ``twilio.rest.Client``; ``retry_after``: where a
        failed answer's Retry-After header goes (as the SMS channel's HTTP client does)."""
        self._version = client.api.v2010
        self._uri = f"/Accounts/{client.account_sid}/Messages.json"
        absolute = self._version.domain.absolute_url(self._version.relative_uri(self._uri))
        # Built once: aiohttp would parse a str URL and convert a dict on every send.
        self._url = URL(client.get_hostname(absolute), encoded=True)
        self._headers = CIMultiDict(client.get_headers("POST", None), Authorization=authorization)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry_after = retry_after
        self._session: aiohttp.ClientSession | None = None

    async def create(self, form: dict[str, str]) -> str:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=CONNECTIONS)
            # Twilio's API keeps no state in cookies: no jar to look up on every send.
            cookies = aiohttp.DummyCookieJar()
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=cookies)
        body = form_body(form)
        async with self._session.post(
            self._url, data=body, headers=self._headers, timeout=self._timeout
        ) as response:
            # Bytes: Twilio answers JSON, which is UTF-8; text() would look for a charset.
            raw = await response.read()
            status = response.status
            headers = response.headers
        if status < 200 or status >= 300:
            self._retry_after.set(headers.get("Retry-After"))
            answer = Response(status, raw.decode("utf-8", "replace"), dict(headers))
            raise self._version.exception("POST", self._uri, answer, CREATE_FAILED)
        sid = json.loads(raw).get("sid") if raw else None
        if not isinstance(sid, str) or not sid:
            raise aiohttp.ClientPayloadError("twilio's answer names no message SID")
        return sid

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None
