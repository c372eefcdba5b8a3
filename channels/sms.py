"""SMS over Twilio's Messages API, with twilio's own async client.

The client (``AsyncTwilioHttpClient`` + ``twilio.rest.Client``) is created in
``start()`` inside the running loop and closed in ``aclose()``. A new message is one
bare form POST built from that client's headers and host, whose errors are twilio's
own exceptions (``channels/twilio_form.py``: twilio's ``create_async`` stack cost
about 15 % of the CPU per delivery), sent over our own keep-alive HTTP/1.1 client
(``channels/http1.py``). Every message
asks Twilio to post status callbacks to ``/v1/providers/twilio/status`` under
the public URL; ``gateway/api/providers.py`` verifies and applies them.

A retry after a retryable failure (5xx, timeout, connection error) may follow an
attempt Twilio did accept with only its answer lost; before sending again, the channel
lists the account's most recent messages to the number (Read-multiple-Messages) and,
finding one with the same body, records it instead of sending a second SMS. Each
message's StatusCallback URL names its delivery (``?d=``), so a status callback that
overtakes the commit of the send's outcome still finds it (gateway/sms_status.py).

Two gaps in twilio 9.13 are closed here, in :class:`_TwilioHttp`:

* ``TwilioRestException`` carries no response headers, so a 429's
  ``Retry-After`` would be lost. The HTTP client keeps the header of the last
  error response in a context variable that :meth:`SmsChannel.send` reads
  (each send runs in its own task context, so concurrent sends never mix them).
* ``AsyncTwilioHttpClient`` ignores the timeout it is constructed with (it
  passes ``None`` to aiohttp, meaning no timeout at all); the subclass passes it.
* It hands Basic auth to aiohttp's ``auth=`` argument, deprecated in aiohttp
  3.14; the subclass sends the ``Authorization`` header itself.
"""

from __future__ import annotations

import base64
import logging
import re
from contextvars import ContextVar
from typing import Any, ClassVar, Literal

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from channels.gsm import count_segments
from channels.http1 import TransportError
from channels.twilio_form import MessageCreate, form_quote
from gateway.errors import (
    ChannelUnavailable,
    ConfigError,
    DeadAddress,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.lease_left import room_for
from gateway.models import Delivery, DeliveryStatus, Receipt, Rendered, normalise_phone
from gateway.settings import TWILIO_MAX_SEGMENTS, TwilioSettings

log = logging.getLogger(__name__)
# twilio's HTTP client logs every request and response at INFO (no bodies, but about
# eight lines per SMS); quiet by default so a broadcast does not flood the logs.
http_log = logging.getLogger(f"{__name__}.http")
http_log.setLevel(logging.WARNING)

STATUS_CALLBACK_PATH = "/v1/providers/twilio/status"
# The query parameter of the StatusCallback URL that names our delivery: Twilio posts
# to the URL as given and signs it whole, so a callback names its delivery itself and
# applies even when it overtakes the commit of the send's outcome (and its SID).
DELIVERY_PARAM = "d"
INBOUND_PATH = "/v1/providers/twilio/inbound"

# Twilio error codes that say the number itself is dead: the contact point is
# marked failing and the delivery is never retried. 21211 invalid To, 21214 To
# cannot be reached, 21408 region not enabled, 21610 recipient replied STOP,
# 21612 no route to the number, 21614 not a mobile number; in status callbacks
# 30005 unknown handset and 30006 landline or unreachable carrier.
DEAD_NUMBER_CODES = frozenset({21211, 21214, 21408, 21610, 21612, 21614, 30005, 30006})
AUTH_FAILED_CODE = 20003
# How many of the number's most recent messages a retry looks at for an earlier
# attempt Twilio accepted (one page of Read-multiple-Messages).
LOOKBACK_MESSAGES = 50

SenderKind = Literal["alphanumeric", "phone", "messaging_service"]

_MESSAGING_SERVICE = re.compile(r"^MG[0-9a-fA-F]{32}$")
_ALPHANUMERIC = re.compile(r"^[A-Za-z0-9 ]{1,11}$")
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")

# Retry-After of the last error response seen by the HTTP client in this task.
_retry_after: ContextVar[str | None] = ContextVar("twilio_retry_after", default=None)


def parse_sender(value: str) -> tuple[SenderKind, str]:
    """Classify and validate an SMS sender; raise ValueError if it is none of the three.

    An alphanumeric sender id is 1-11 characters of ``[A-Za-z0-9 ]`` with at
    least one letter; a phone number must be E.164; a Messaging Service SID is
    ``MG`` + 32 hex digits. Usable as a pydantic validator (``AfterValidator``).
    """
    candidate = value.strip()
    if _MESSAGING_SERVICE.fullmatch(candidate):
        return "messaging_service", candidate
    if _E164.fullmatch(candidate):
        return "phone", normalise_phone(candidate)
    if _ALPHANUMERIC.fullmatch(candidate) and any(char.isalpha() for char in candidate):
        return "alphanumeric", candidate
    raise ValueError(
        "an SMS sender must be an alphanumeric id (1-11 letters, digits or spaces, at least"
        " one letter), an E.164 phone number or a Messaging Service SID (MG...)"
    )


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (Twilio sends delta-seconds); None when absent or unusable."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def map_error(status: int, code: int | None, retry_after: float | None = None) -> DeliveryError:
    """Translate a Twilio REST error (HTTP status, Twilio error code) into our error tree."""
    # twilio puts the HTTP status in ``code`` when the body had no Twilio code.
    label = f"twilio_{code}" if code is not None and code != status else f"http_{status}"
    if status == 429 or status >= 500:
        return TransientDeliveryError(
            f"twilio answered {status}", code=label, retry_after=retry_after
        )
    if status in (401, 403) or code == AUTH_FAILED_CODE:
        return ChannelUnavailable(f"twilio rejected the credentials ({status})", code=label)
    if code in DEAD_NUMBER_CODES:
        return DeadAddress(f"twilio rejected the number ({label})", code=label)
    return PermanentDeliveryError(f"twilio rejected the message ({status})", code=label)


def choose_text(content: Rendered, max_segments: int) -> tuple[str, int]:
    """The text an SMS goes out with and its segment count: the short text past
    ``max_segments`` (the SMS channel's, and the development outbox's standing in for
    it). PermanentDeliveryError when even that is too long, unless the content is
    urgent: an absence alert in Arabic or Ukrainian (UCS-2, 67 characters a segment)
    goes over the budget, up to Twilio's own limit, rather than leave a guardian
    without word that their child is missing."""
    text = content.text
    segments = count_segments(text)
    if segments > max_segments:
        if content.short is None:
            raise PermanentDeliveryError(
                f"the SMS is {segments} segments and has no short text", code="sms_too_long"
            )
        text = content.short
        segments = count_segments(text)
        limit = TWILIO_MAX_SEGMENTS if content.urgent else max_segments
        if segments > limit:
            raise PermanentDeliveryError(
                f"the short SMS is still {segments} segments", code="sms_too_long"
            )
    return text, segments


class _TwilioHttp(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio ships no types
    """Twilio's aiohttp client, with the three fixes in the module docstring."""

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Any:
        if auth is not None:
            # aiohttp 3.14 deprecates its ``auth=`` argument, which twilio still passes.
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {credentials}"}
        response = await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout if timeout is not None else self.timeout,
            allow_redirects=allow_redirects,
        )
        if response.status_code >= 400 and response.headers is not None:
            _retry_after.set(response.headers.get("Retry-After"))
        return response


def open_client(settings: TwilioSettings) -> tuple[_TwilioHttp, Any]:
    """Twilio's REST client on our HTTP client (also the voice channel's, channels/voice)."""
    username, password = _credentials(settings)
    http = _TwilioHttp(timeout=settings.timeout, logger=http_log)
    client = Client(username, password, account_sid=settings.account_sid, http_client=http)
    if settings.base_url:
        # Client reads TWILIO_EDGE/TWILIO_REGION from the environment and would
        # rewrite the host of any URL into "<prefix>.<edge>.<region>.<suffix>".
        client.edge = None
        client.region = None
        client.api.base_url = settings.base_url.rstrip("/")
    return http, client


def _credentials(settings: TwilioSettings) -> tuple[str, str]:
    """An API key when one is set, else the account SID and auth token."""
    if settings.api_key_sid and settings.api_key_secret:
        return settings.api_key_sid, settings.api_key_secret.get_secret_value()
    return settings.account_sid, settings.auth_token.get_secret_value()


def _basic_auth(settings: TwilioSettings) -> str:
    """The Authorization header of a bare Twilio request: the same credentials as the client."""
    username, password = _credentials(settings)
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {credentials}"


def forget_retry_after() -> None:
    """Start a Twilio request with no Retry-After of an earlier one: a dispatch task
    goes on from job to job in one context (gateway/dispatcher.py)."""
    _retry_after.set(None)


def last_retry_after() -> float | None:
    """The Retry-After of the last Twilio error answer in this task (see _TwilioHttp)."""
    return _parse_retry_after(_retry_after.get())


class SmsChannel:
    """SMS through Twilio. One delivery = one message to one number."""

    name: ClassVar[str] = "sms"
    max_body: ClassVar[int | None] = 1600  # Twilio's limit for a message body
    rate_per_second: ClassVar[float | None] = None  # Twilio queues and paces per sender

    def __init__(
        self, settings: TwilioSettings, public_url: str, *, default_sender: str | None = None
    ) -> None:
        self._settings = settings
        self._status_callback = public_url.rstrip("/") + STATUS_CALLBACK_PATH
        fallback = settings.messaging_service_sid or default_sender or settings.default_sender
        if fallback is None:
            raise ConfigError(
                "twilio needs messaging_service_sid or default_sender as the fallback sender"
            )
        try:
            self._fallback_sender = parse_sender(fallback)
        except ValueError as exc:
            raise ConfigError(f"twilio default sender: {exc}") from exc
        self._http: _TwilioHttp | None = None
        self._client: Any = None
        self._create: MessageCreate | None = None

    async def start(self) -> None:
        """Create twilio's aiohttp-based client inside the running loop."""
        if self._client is not None:
            return
        http, client = open_client(self._settings)
        try:
            create = MessageCreate(
                client, _basic_auth(self._settings), self._settings.timeout, _retry_after
            )
        except ValueError as exc:  # channels/http1.py could not make a request of it
            await http.close()
            raise ConfigError("the Twilio base_url is not a usable http(s) URL") from exc
        self._http, self._client, self._create = http, client, create

    async def aclose(self) -> None:
        """Close the HTTP session."""
        try:
            if self._http is not None:
                await self._http.close()
        finally:
            if self._create is not None:
                await self._create.aclose()
        self._http = None
        self._client = None
        self._create = None

    async def _accepted_earlier(self, delivery: Delivery, text: str) -> Any | None:
        """The message Twilio accepted for this delivery in an earlier attempt, if any: the
        account's most recent messages to the number (Twilio's Read-multiple-Messages,
        newest first) with exactly this body. The body carries the delivery's own read
        link, so another message to the number does not match. A failed lookup is a
        transient error: the send waits rather than risk a second SMS."""
        try:
            recent = await self._client.messages.list_async(
                to=delivery.address, limit=LOOKBACK_MESSAGES
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            raise TransientDeliveryError(
                f"twilio answered {exc.status} to the lookup of an earlier attempt",
                code="twilio_lookup",
            ) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientDeliveryError(
                "twilio could not be reached for the lookup of an earlier attempt",
                code="twilio_lookup",
            ) from exc
        for message in recent:
            if message.body == text and message.direction == "outbound-api":
                return message
        return None

    def status_callback_for(self, delivery: Delivery) -> str:
        """The StatusCallback URL of one delivery: the public callback path naming it."""
        return f"{self._status_callback}?{DELIVERY_PARAM}={form_quote(delivery.id)}"

    def sender_for(self, delivery: Delivery) -> tuple[SenderKind, str]:
        """The unit's own sender (``context["sms_sender"]``) if valid, else the fallback."""
        unit_sender = delivery.context.get("sms_sender")
        if isinstance(unit_sender, str) and unit_sender:
            try:
                return parse_sender(unit_sender)
            except ValueError:
                log.warning(
                    "invalid unit SMS sender; using the default sender",
                    extra={"tenant_id": delivery.tenant_id, "delivery_id": delivery.id},
                )
        return self._fallback_sender

    async def send(self, delivery: Delivery, content: Rendered) -> Receipt:
        """Hand one SMS to Twilio; the Receipt carries the message SID and our segment count."""
        if self._client is None or self._create is None:
            raise ChannelUnavailable("the SMS channel is not started", code="not_started")
        if not delivery.address:
            raise DeadAddress("the delivery has no phone number", code="no_address")
        text, segments = choose_text(content, self._settings.max_segments)
        kind, sender = self.sender_for(delivery)
        # The form of Twilio's Create-a-Message (channels/twilio_form.py).
        form = {
            "To": delivery.address,
            "StatusCallback": self.status_callback_for(delivery),
            "MessagingServiceSid" if kind == "messaging_service" else "From": sender,
            "Body": text,
        }
        forget_retry_after()
        timeout = self._settings.timeout
        if delivery.status is DeliveryStatus.sending:
            # An earlier attempt failed as a retryable error (a 5xx, a timeout): Twilio may
            # have taken that message and lost only its answer. Never send it twice.
            room_for(timeout)  # each request within the job's lease (gateway/lease_left.py)
            earlier = await self._accepted_earlier(delivery, text)
            if earlier is not None:
                log.info(
                    "twilio had accepted an earlier attempt; not sent again",
                    extra={"delivery_id": delivery.id, "provider_id": earlier.sid},
                )
                return Receipt(
                    status=DeliveryStatus.sent,
                    provider_id=earlier.sid,
                    segments=segments,
                    detail="accepted by an earlier attempt",
                )
        room_for(timeout)
        try:
            sid = await self._create.create(form)
        except (TwilioRestException, TwilioServiceException) as exc:
            status = int(exc.status)
            code = int(exc.code) if exc.code is not None else None
            raise map_error(status, code, _parse_retry_after(_retry_after.get())) from exc
        except TransportError as exc:  # no complete answer (a timeout included)
            raise TransientDeliveryError(
                "twilio could not be reached", code="twilio_connection"
            ) from exc
        return Receipt(status=DeliveryStatus.sent, provider_id=sid, segments=segments)
