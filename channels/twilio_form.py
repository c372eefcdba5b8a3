"""Create-a-Message as one bare form POST, with twilio's own error types.

``client.messages.create_async`` costs about 15 % of the gateway's CPU in the broadcast
benchmark (building a ``MessageInstance`` and twilio's request plumbing per send). The
request itself is simple and fixed by Twilio's OpenAPI document (``POST
/2010-04-01/Accounts/{AccountSid}/Messages.json``, form fields ``To``, ``Body``,
``StatusCallback``, and ``From`` or ``MessagingServiceSid``; tests/test_twilio_openapi.py
checks it against the document). Everything around it stays twilio's: the headers come
from ``Client.get_headers``, the host from ``Client.get_hostname`` (TWILIO_EDGE /
TWILIO_REGION), and an error answer becomes the exception ``create_async`` would raise
(``Version.exception``: ``TwilioRestException`` or ``TwilioServiceException``). The
POST goes over our keep-alive HTTP/1.1 client (channels/http1.py); a request that got no
complete answer raises its ``TransportError``, as before aiohttp's ``ClientError``.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Any

from twilio.http.response import Response

from channels.http1 import HttpClient, MalformedAnswer

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
        self._http = HttpClient(connections=CONNECTIONS, timeout=timeout)
        # The request line and headers are built once: only the body differs per send.
        headers = {**client.get_headers("POST", None), "Authorization": authorization}
        self._target = self._http.target(client.get_hostname(absolute), headers)
        self._retry_after = retry_after

    async def create(self, form: dict[str, str]) -> str:
        """The SID of the new message; twilio's exception for an error answer,
        ``channels.http1.TransportError`` when no complete answer came."""
        answer = await self._http.post(self._target, form_body(form))
        status, raw = answer.status, answer.body
        if status < 200 or status >= 300:
            self._retry_after.set(answer.headers.get("Retry-After"))
            response = Response(status, raw.decode("utf-8", "replace"), dict(answer.headers))
            raise self._version.exception("POST", self._uri, response, CREATE_FAILED)
        try:
            created = json.loads(raw) if raw else None
        except ValueError as exc:  # a proxy's or portal's page answering 200, say
            raise MalformedAnswer("twilio's answer is no JSON") from exc
        sid = created.get("sid") if isinstance(created, dict) else None
        if not isinstance(sid, str) or not sid:
            raise MalformedAnswer("twilio's answer names no message SID")
        return sid

    async def aclose(self) -> None:
        await self._http.aclose()
