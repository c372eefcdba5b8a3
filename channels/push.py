"""Push over Firebase Cloud Messaging (HTTP v1).

firebase-admin provides the credentials, the message model and its encoder, and the
error classification, so the wire format and the error handling are exactly the SDK's.
The transport is our own: one keep-alive HTTP/1.1 client (channels/http1.py) POSTing
``messages:send``, because ``messaging.send_each_async`` manages only some 700
messages/s (httpx pool scanning), far below what an emergency broadcast needs, and
aiohttp's general client cost more CPU per send than the rest of the channel.

google-auth refreshes access tokens synchronously; the refresh runs in a thread
(``asyncio.to_thread``) at start-up and again ahead of expiry, in the background, so a
slow token endpoint never stalls the event loop or the deliveries in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import firebase_admin
import google.auth.exceptions
import google.auth.transport.requests
import requests
from firebase_admin import _utils as firebase_utils
from firebase_admin import credentials, exceptions, messaging

from channels.http1 import HttpClient, Target, TransportError
from gateway import __version__
from gateway.constants import URGENT_CATEGORIES
from gateway.errors import (
    ChannelUnavailable,
    ConfigError,
    DeadAddress,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.lease_left import room_for
from gateway.models import Delivery, DeliveryStatus, Receipt, Rendered
from gateway.settings import FcmSettings

log = logging.getLogger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# Refresh this long before the token expires, in the background, using the old token meanwhile.
REFRESH_AHEAD = timedelta(minutes=5)
# Closer to expiry than this, a send waits for a fresh token rather than risk a 401.
MIN_VALIDITY = timedelta(seconds=30)
# After a failed background refresh, wait this long before trying again in the background.
REFRESH_RETRY = timedelta(seconds=30)
URGENT_TTL = timedelta(minutes=15)
BODY_CHARS = 240  # notification body when the rendering has no short text
SHORT_CHARS = 1000
COLLAPSE_BYTES = 64  # apns-collapse-id limit
SKELETONS = 256  # kinds of push whose encoded skeleton is kept (see request_body)
# Random per process, so no title or body can spell a stand-in.
_STAND_IN = f"bb-{secrets.token_hex(8)}-"
_STAND_INS = re.compile(f'"{_STAND_IN}([a-z_]+)"')  # as JSON has it, the value's name kept
# json.dumps of a str (ensure_ascii, the default) is this function, in C: the same bytes.
_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii
_FCM_HEADERS = {
    # What firebase-admin's _MessagingService sends with every messages:send.
    "X-GOOG-API-FORMAT-VERSION": "2",
    "X-FIREBASE-CLIENT": f"fire-admin-python/{firebase_admin.__version__}",
    "x-goog-api-client": firebase_utils.get_metrics_header(),
    "Content-Type": "application/json; charset=UTF-8",
    # Who is calling, for Google's side of a support case (firebase-admin's requests
    # session said python-requests; our own client said nothing).
    "User-Agent": f"Budbringer/{__version__}",
}


class PushChannel:
    """Deliver one push to one device (FCM registration token or Firebase installation id).

    ``delivery.address`` is the token or fid; ``delivery.context["address_kind"]`` says
    which (``"token"`` by default, or ``"fid"``); ``delivery.context["category"]`` (and
    optionally ``"urgency"``) decide priority and TTL. ``now`` is injectable for tests.
    """

    name: ClassVar[str] = "push"
    max_body: ClassVar[int | None] = 4096
    rate_per_second: ClassVar[float | None] = None

    def __init__(
        self,
        settings: FcmSettings,
        public_url: str,
        *,
        http: HttpClient | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._settings = settings
        self._public_url = public_url.rstrip("/")
        self._http = http
        self._own_http = http is None
        self._now = now or (lambda: datetime.now(UTC))
        self._skeletons: dict[tuple[str, str, bool, bool], tuple[str, ...]] = {}  # request_body
        self._credentials: Any = None  # google.oauth2.service_account.Credentials
        self._auth_request: google.auth.transport.requests.Request | None = None
        self._url = ""
        self._target: tuple[str, Target] | None = None  # see _target_for
        self._token: str | None = None
        self._expiry: datetime | None = None
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._background_not_before: datetime | None = None
        self.token_refreshes = 0  # how many times a token was fetched (for tests and metrics)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the service account, make the HTTP client and fetch the first access token.

        Raises ConfigError for an unusable service-account file and ChannelUnavailable
        when the token endpoint rejects the credentials. A token endpoint that is merely
        unreachable is logged; sends then fetch the token on demand.
        """
        self._credentials, project_id = await asyncio.to_thread(self._load_credentials)
        self._url = f"{self._settings.base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self._auth_request = google.auth.transport.requests.Request(session=requests.Session())
        if self._http is None:
            self._http = HttpClient(
                connections=self._settings.connections, timeout=self._settings.timeout
            )
        self._target = None
        try:
            self._http.target(self._url, _FCM_HEADERS)  # refused here, not at the first send
        except ValueError as exc:
            raise ConfigError("the FCM base_url is not a usable http(s) URL") from exc
        try:
            await self._refresh(stale=None)
        except TransientDeliveryError:
            log.warning("fcm token endpoint unreachable at start; will retry on demand")

    def _load_credentials(self) -> tuple[Any, str]:
        path = self._settings.service_account_file
        try:
            certificate = credentials.Certificate(str(path))
        except (OSError, ValueError) as exc:
            raise ConfigError("the FCM service-account file is missing or invalid") from exc
        creds = certificate.get_credential().with_scopes([FCM_SCOPE])
        if self._settings.token_url:
            creds = creds.with_token_uri(self._settings.token_url)
        project_id = self._settings.project_id or certificate.project_id
        if not project_id:
            raise ConfigError("no FCM project id in settings or the service-account file")
        return creds, str(project_id)

    async def aclose(self) -> None:
        """Stop the background refresh and close what this channel opened."""
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
            self._background = None
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._auth_request is not None:
            self._auth_request.session.close()
            self._auth_request = None

    # ------------------------------------------------------------------ access token

    def _fetch_token(self) -> tuple[str, timedelta]:
        """Run google-auth's synchronous refresh (in a worker thread)."""
        creds = self._credentials
        creds.refresh(self._auth_request)
        if creds.expiry is None:
            return str(creds.token), timedelta(hours=1)
        # google-auth keeps a naive UTC expiry on the wall clock; keep only the lifetime,
        # so the channel's own (possibly manual) clock decides when to refresh.
        lifetime = creds.expiry - datetime.now(UTC).replace(tzinfo=None)
        return str(creds.token), lifetime

    async def _refresh(self, stale: str | None) -> str:
        """Fetch a new token unless another task already replaced ``stale``."""
        async with self._lock:
            if self._token is not None and self._token != stale and self._fresh_enough():
                return self._token
            try:
                token, lifetime = await asyncio.to_thread(self._fetch_token)
            except google.auth.exceptions.TransportError as exc:
                raise TransientDeliveryError(
                    "FCM token endpoint unreachable", code="fcm_token_transport"
                ) from exc
            except google.auth.exceptions.RefreshError as exc:
                if exc.retryable:
                    raise TransientDeliveryError(
                        "FCM token endpoint failed", code="fcm_token_unavailable"
                    ) from exc
                raise ChannelUnavailable(
                    "FCM token endpoint rejected the service account", code="fcm_token_rejected"
                ) from exc
            self._token, self._expiry = token, self._now() + lifetime
            self.token_refreshes += 1
            return token

    async def verify(self) -> None:
        """Fetch an access token now, and have FCM validate a message to a topic without
        sending it (``validate_only``): a project id the key may not send for is
        refused there (403/404), not at the first real push (``budbringer doctor``).
        Raises like a send would."""
        token = await self._refresh(stale=None)
        body = json.dumps({"message": {"topic": "budbringer-doctor"}, "validate_only": True})
        status, raw, retry_after = await self._post(body.encode(), token)
        if not 200 <= status < 300:
            error = map_fcm_error(status, raw, retry_after)
            raise error from error.__cause__

    def _fresh_enough(self) -> bool:
        return self._expiry is not None and self._expiry - self._now() > MIN_VALIDITY

    async def _access_token(self) -> str:
        token, expiry = self._token, self._expiry
        if token is not None and expiry is not None:
            left = expiry - self._now()
            if left > REFRESH_AHEAD:
                return token
            if left > MIN_VALIDITY:
                self._refresh_in_background()
                return token
        return await self._refresh(stale=token)

    def _refresh_in_background(self) -> None:
        if self._background is not None and not self._background.done():
            return
        if self._background_not_before is not None and self._now() < self._background_not_before:
            return
        self._background = asyncio.create_task(self._background_refresh())

    async def _background_refresh(self) -> None:
        try:
            await self._refresh(stale=self._token)
        except DeliveryError as exc:
            self._background_not_before = self._now() + REFRESH_RETRY
            log.warning("fcm background token refresh failed", extra={"code": exc.code})
        else:
            self._background_not_before = None

    # ------------------------------------------------------------------ sending

    async def send(self, delivery: Delivery, content: Rendered) -> Receipt:
        """Hand one push to FCM; raise from gateway.errors when FCM will not take it."""
        if self._http is None or self._credentials is None:
            raise ChannelUnavailable("the push channel is not started", code="not_started")
        body = self.request_body(delivery, content)
        token = await self._access_token()
        status, raw, retry_after = await self._post(body, token)
        if status == 401 and not _fcm_error_code(raw):
            # Our access token was refused (revoked or expired early): one fresh try,
            # as google-auth's AuthorizedSession does.
            token = await self._refresh(stale=token)
            status, raw, retry_after = await self._post(body, token)
        if 200 <= status < 300:
            try:
                name = json.loads(raw).get("name")
            except (ValueError, AttributeError):
                name = None
            return Receipt(
                status=DeliveryStatus.sent, provider_id=name if isinstance(name, str) else None
            )
        error = map_fcm_error(status, raw, retry_after)
        raise error from error.__cause__

    def _target_for(self, token: str) -> Target:
        """The request line and headers, built once per access token."""
        assert self._http is not None
        if self._target is None or self._target[0] != token:
            headers = {**_FCM_HEADERS, "Authorization": f"Bearer {token}"}
            self._target = (token, self._http.target(self._url, headers))
        return self._target[1]

    async def _post(self, body: bytes, token: str) -> tuple[int, bytes, str | None]:
        assert self._http is not None
        # Each request within the job's lease: the token fetched first, or refused and
        # fetched again, may have taken much of it (gateway/lease_left.py).
        room_for(self._settings.timeout)
        try:
            answer = await self._http.post(self._target_for(token), body)
        except TransportError as exc:
            raise TransientDeliveryError("FCM request failed", code="fcm_transport") from exc
        return answer.status, answer.body, answer.headers.get("Retry-After")

    def request_body(self, delivery: Delivery, content: Rendered) -> bytes:
        """The JSON of messages:send: ``{"message": <encode()>}``, byte for byte.

        firebase-admin builds and encodes one skeleton per kind of push (message,
        category, urgency, address kind), with stand-ins for what differs per send (the
        address, the delivery id, the title and body, the APNs expiry), kept cut at its
        stand-ins; each send's own values, JSON-encoded, are joined into it. ``encode``
        stays the reference (tests/test_push.py compares the two)."""
        if not delivery.address:
            raise PermanentDeliveryError(
                "push delivery without a device address", code="no_address"
            )
        context = delivery.context
        values = self._values(delivery, content)
        key = (
            delivery.message_id,
            str(context.get("category") or "general"),
            context.get("urgency") == "high",
            context.get("address_kind", "token") == "fid",
        )
        pieces = self._skeletons.get(key)
        if pieces is None:
            pieces = self._skeleton(delivery, content)
            if len(self._skeletons) >= SKELETONS:
                del self._skeletons[next(iter(self._skeletons))]
            self._skeletons[key] = pieces
        joined = [pieces[0]]
        for at in range(1, len(pieces), 2):
            joined.append(_json_string(values[pieces[at]]))
            joined.append(pieces[at + 1])
        return "".join(joined).encode()

    def _skeleton(self, delivery: Delivery, content: Rendered) -> tuple[str, ...]:
        """The kind's JSON cut at its stand-ins: literal, value name, literal, ..."""
        stand_ins = {name: f"{_STAND_IN}{name}" for name in self._values(delivery, content)}
        encoded = self._encode(self.build(delivery, content, stand_ins))
        return tuple(_STAND_INS.split(json.dumps({"message": encoded})))

    def _values(self, delivery: Delivery, content: Rendered) -> dict[str, str]:
        """What differs between two sends of one kind of push."""
        urgent = _urgent(delivery)
        # FCM and APNs cap the payload at 4 KB: keep even a rendered short text well inside.
        body = _shorten(content.short, SHORT_CHARS) if content.short else None
        values = {
            "address": delivery.address or "",
            "delivery_id": delivery.id,
            "title": content.subject,
            "body": body or _shorten(content.text, BODY_CHARS),
        }
        if urgent:
            expires = self._now() + URGENT_TTL
            values["expiration"] = str(int(expires.timestamp()))
        return values

    def encode(self, delivery: Delivery, content: Rendered) -> dict[str, Any]:
        """The ``message`` object of messages:send, built and encoded by firebase-admin."""
        if not delivery.address:
            raise PermanentDeliveryError(
                "push delivery without a device address", code="no_address"
            )
        return self._encode(self.build(delivery, content))

    @staticmethod
    def _encode(message: messaging.Message) -> dict[str, Any]:
        try:
            encoded: dict[str, Any] = messaging._MessagingService.encode_message(message)
        except ValueError as exc:
            raise PermanentDeliveryError(
                "firebase-admin rejected the push message", code="fcm_invalid_message"
            ) from exc
        return encoded

    def build(
        self, delivery: Delivery, content: Rendered, stand_ins: dict[str, str] | None = None
    ) -> messaging.Message:
        """The firebase-admin ``Message`` for one delivery (with ``stand_ins``: its
        skeleton, see :meth:`request_body`)."""
        context = delivery.context
        category = str(context.get("category") or "general")
        urgent = _urgent(delivery)
        collapse = _truncate_bytes(delivery.message_id, COLLAPSE_BYTES)
        link = f"{self._public_url}/app/messages/{delivery.message_id}"
        values = stand_ins or self._values(delivery, content)
        title, body = values["title"], values["body"]
        apns_headers = {
            "apns-push-type": "alert",
            "apns-priority": "10" if urgent else "5",
            "apns-collapse-id": collapse,
        }
        if urgent:
            apns_headers["apns-expiration"] = values["expiration"]
        kwargs: dict[str, Any] = {
            "notification": messaging.Notification(title=title, body=body),
            "data": {
                "message_id": delivery.message_id,
                "delivery_id": values["delivery_id"],
                "link": link,
                "category": category,
            },
            "android": messaging.AndroidConfig(
                collapse_key=collapse,
                priority="high" if urgent else "normal",
                ttl=URGENT_TTL if urgent else None,
                notification=messaging.AndroidNotification(
                    channel_id=category,  # the app creates one notification channel per category
                    tag=collapse,  # a resend replaces the notification instead of stacking
                    default_sound=True if urgent else None,
                    priority="high" if urgent else None,
                    # emergencies show on the lock screen; everything else only once unlocked
                    visibility="public" if category == "emergency" else "private",
                ),
            ),
            "apns": messaging.APNSConfig(
                headers=apns_headers,
                payload=messaging.APNSPayload(
                    aps=messaging.Aps(
                        alert=messaging.ApsAlert(title=title, body=body),
                        sound="default" if urgent else None,
                        thread_id=collapse,
                        category=category,
                        custom_data={"interruption-level": "time-sensitive"} if urgent else None,
                    )
                ),
            ),
        }
        if self._public_url.startswith("https://"):  # FCM accepts only https web links
            kwargs["webpush"] = messaging.WebpushConfig(
                headers={"Urgency": "high", "TTL": str(int(URGENT_TTL.total_seconds()))}
                if urgent
                else None,
                fcm_options=messaging.WebpushFCMOptions(link=link),
            )
        if context.get("address_kind", "token") == "fid":
            return messaging.Message(fid=values["address"], **kwargs)
        with warnings.catch_warnings():
            # firebase-admin 7 deprecates ``token`` for ``fid``; registration tokens are
            # still what most installed apps report, and FCM v1 still takes them.
            warnings.simplefilter("ignore", DeprecationWarning)
            return messaging.Message(token=values["address"], **kwargs)


def _urgent(delivery: Delivery) -> bool:
    context = delivery.context
    category = str(context.get("category") or "general")
    return category in URGENT_CATEGORIES or context.get("urgency") == "high"


# ---------------------------------------------------------------------- FCM errors


def _fcm_error_code(raw: bytes) -> str | None:
    error, _ = firebase_utils._parse_platform_error(raw.decode("utf-8", "replace"), 0)
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == _FCM_ERROR_TYPE:
            code = detail.get("errorCode")
            return str(code) if code else None
    return None


_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def _invalid_target(error: dict[str, Any]) -> bool:
    """True when an INVALID_ARGUMENT is about the registration token / fid itself."""
    message = str(error.get("message") or "").lower()
    if "registration token" in message:
        return True
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == _BAD_REQUEST_TYPE:
            for violation in detail.get("fieldViolations") or []:
                if isinstance(violation, dict) and violation.get("field") in (
                    "message.token",
                    "message.fid",
                ):
                    return True
    return False


def map_fcm_error(status: int, raw: bytes, retry_after: str | None = None) -> DeliveryError:
    """Classify an FCM v1 error response the way firebase-admin does, into our error tree.

    firebase-admin's own parsing picks the exception class (UnregisteredError,
    QuotaExceededError, ...), which becomes the ``__cause__`` of the error returned.
    """
    error, message = firebase_utils._parse_platform_error(raw.decode("utf-8", "replace"), status)
    exc_type = messaging._MessagingService._build_fcm_error(error)
    if exc_type is None:
        rpc_status = error.get("status") or firebase_utils._http_status_to_error_code(status)
        exc_type = firebase_utils._error_code_to_exception_type(rpc_status)
    cause: exceptions.FirebaseError = exc_type(message)
    reason = _fcm_error_code(raw) or cause.code
    code = f"fcm_{reason}"
    text = f"FCM answered {status} {reason}"
    mapped: DeliveryError
    if isinstance(cause, messaging.UnregisteredError | messaging.SenderIdMismatchError) or (
        isinstance(cause, exceptions.InvalidArgumentError) and _invalid_target(error)
    ):
        mapped = DeadAddress(text, code=code)
    elif isinstance(
        cause,
        messaging.ThirdPartyAuthError
        | exceptions.UnauthenticatedError
        | exceptions.PermissionDeniedError,
    ):
        mapped = ChannelUnavailable(text, code=code)
    elif isinstance(
        cause,
        exceptions.ResourceExhaustedError
        | exceptions.UnavailableError
        | exceptions.InternalError
        | exceptions.DeadlineExceededError
        | exceptions.AbortedError,
    ) or (isinstance(cause, exceptions.UnknownError) and status >= 500):
        mapped = TransientDeliveryError(text, code=code, retry_after=parse_retry_after(retry_after))
    else:
        mapped = PermanentDeliveryError(text, code=code)
    mapped.__cause__ = cause
    return mapped


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:") + "…"


def _truncate_bytes(value: str, limit: int) -> str:
    return value.encode()[:limit].decode("utf-8", "ignore")
