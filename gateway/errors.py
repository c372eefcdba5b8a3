"""The one exception tree of Budbringer.

BudbringerError
├── InputError                 bad input from a caller; maps to an HTTP 4xx with a JSON body
│   ├── MalformedBody          400: not UTF-8, nested too deep, a number too long, a broken form
│   ├── UnsupportedMediaType   415: a body in a charset other than UTF-8
│   ├── ValidationFailed       one or more fields are wrong (each named with its location)
│   ├── Unauthorized           401: no or wrong credentials
│   ├── Forbidden              403: credentials valid, but not for this
│   ├── NotFound               404
│   ├── Conflict               409: e.g. an event id reused with a different body
│   ├── PayloadTooLarge        413
│   └── LinkInvalid            404: a read link that is forged, changed or unknown
│       └── LinkExpired        410: a genuine read link past its expiry
├── DeliveryError              a channel could not hand a delivery over
│   ├── TransientDeliveryError retry later (timeouts, 429, 5xx, SMTP 4xx); carries retry_after
│   │   └── LeaseShort         stopped before a request that could outlast the job's lease
│   ├── PermanentDeliveryError never retried (invalid number, SMTP 5xx, dead push token)
│   │   └── DeadAddress        the address itself is dead: prune/mark the contact point
│   └── ChannelUnavailable     the channel as a whole is down (bad credentials): stop it, alert
├── TranslationError           a translation provider could not translate (the original goes out)
│   ├── TranslationUnavailable try later: timeouts, 429, 5xx; carries retry_after
│   └── TranslationRejected    never retried: bad key, quota used up, language unsupported
├── StoreError                 the store failed
└── ConfigError                settings are missing or wrong

Channel adapters translate their provider's errors into this tree with
``raise Mapped(...) from exc``. Messages never contain personal data.
"""

from __future__ import annotations

from typing import Any


class BudbringerError(Exception):
    """Base of every error Budbringer raises on purpose."""


class InputError(BudbringerError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body


class MalformedBody(InputError):
    status = 400
    code = "malformed_body"


class UnsupportedMediaType(InputError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(InputError):
    status = 422
    code = "validation_failed"


class Unauthorized(InputError):
    status = 401
    code = "unauthorized"


class Forbidden(InputError):
    status = 403
    code = "forbidden"


class NotFound(InputError):
    status = 404
    code = "not_found"


class Conflict(InputError):
    status = 409
    code = "conflict"


class PayloadTooLarge(InputError):
    status = 413
    code = "payload_too_large"


class LinkInvalid(InputError):
    """A read link that was not made with our secret, or was changed."""

    status = 404
    code = "link_invalid"


class LinkExpired(LinkInvalid):
    """A genuine read link past its expiry; ``delivery_id``: the delivery it was made for
    (a genuine token says so), whose language the page can then be in."""

    status = 410
    code = "link_expired"

    def __init__(self, message: str, *, delivery_id: str | None = None) -> None:
        super().__init__(message)
        self.delivery_id = delivery_id


class DeliveryError(BudbringerError):
    """A channel could not hand over a delivery. ``code`` is the provider's error code."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class TransientDeliveryError(DeliveryError):
    """Try again later; ``retry_after`` (seconds) is the provider's hint, if any.

    ``per_recipient``: only this recipient was deferred (an SMTP 4xx to RCPT); the
    provider itself works, so the channel's circuit breaker does not count it.
    ``maybe_sent``: the whole message was handed over and no answer came (a cut or a
    timeout after SMTP's final dot, RFC 1047): the provider may have taken it, so every
    try again may be a copy (the dispatcher sends it once more at most)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        per_recipient: bool = False,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.per_recipient = per_recipient
        self.maybe_sent = maybe_sent


class LeaseShort(TransientDeliveryError):
    """The send stopped before a request that could end after its job's lease, when
    another worker may take the job over (gateway/lease_left.py). Nothing is learnt
    about the provider: the channel's breaker does not count it."""


class PermanentDeliveryError(DeliveryError):
    """Never retried; recorded on the delivery as ``failed``."""


class DeadAddress(PermanentDeliveryError):
    """The address (phone number, push token, mailbox) is dead and should be pruned."""


class ChannelUnavailable(DeliveryError):
    """The channel cannot send anything (e.g. rejected credentials); stop it and alert."""


class TranslationError(BudbringerError):
    """A translation provider did not translate. ``code`` is a short reason for the status
    (never personal data); the message goes out in its original language."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class TranslationUnavailable(TranslationError):
    """Try again later (timeouts, 429, 5xx); ``retry_after`` is the provider's hint."""

    def __init__(self, message: str, *, code: str, retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class TranslationRejected(TranslationError):
    """Never retried: rejected credentials, quota used up, an unsupported language."""


class StoreError(BudbringerError):
    """The store failed."""


class ConfigError(BudbringerError):
    """Settings are missing or wrong."""


class RequestTimeout(InputError):
    """The request body did not arrive within ``http.body_timeout``."""

    status = 408
    code = "request_timeout"


def plain_message(error: Any) -> str:
    """A pydantic error row's message for a person: without the "Value error, " that
    pydantic puts before a validator's own words, and in plain words where pydantic's
    are a library's ("Field required", "String should have at least 1 character").
    For API rows, settings and imports."""
    kind, context = error.get("type"), error.get("ctx") or {}
    if kind == "missing":
        return "missing"
    if kind == "string_too_short" and context.get("min_length") == 1:
        return "must not be empty"
    message: str = error["msg"]
    return message.removeprefix("Value error, ")
