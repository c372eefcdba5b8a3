"""Sign-in links and browser sessions of the staff and parent pages.

Staff are never given a password: the platform asks for a short-lived sign-in
link (``POST /v1/staff/{id}/tokens``, with the tenant key) and opens it for the
staff member; opening it sets a session cookie. Parents arrive by the personal
read link of a message (gateway/readlinks.py) under ``/p/``, which likewise
sets a short session.

Links and cookies are itsdangerous-signed JSON (HMAC-SHA256), one salt per
purpose so one can never be used as another, each with its expiry inside,
checked against the caller's clock. Their payloads hold only opaque ids (tenant,
person, message) and a random nonce, never a name, number or address. The
session's nonce also keys the CSRF field of the page forms, so a form posted
from another site (or from an older session) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadData, URLSafeSerializer

from gateway.errors import ConfigError, LinkExpired, LinkInvalid
from gateway.models import Person

STAFF_LINK_SALT = "budbringer.staff-link.v1"
STAFF_SESSION_SALT = "budbringer.staff-session.v1"
PARENT_SESSION_SALT = "budbringer.parent-session.v1"
_CSRF_LABEL = b"budbringer/page-session/csrf/v1"


def _serializer(secret: bytes, salt: str) -> URLSafeSerializer:
    if not secret:
        raise ConfigError("no signing secret configured")
    return URLSafeSerializer(secret, salt=salt, signer_kwargs={"digest_method": hashlib.sha256})


def seal(
    secret: bytes, salt: str, payload: dict[str, str], now: datetime, ttl: timedelta
) -> tuple[str, datetime]:
    """A signed token of ``payload`` valid for ``ttl`` from ``now`` (rounded up to a second)."""
    exp = math.ceil((now + ttl).timestamp())
    token = _serializer(secret, salt).dumps({**payload, "exp": exp})
    return str(token), datetime.fromtimestamp(exp, tz=UTC)


def unseal(
    secret: bytes, salt: str, token: str, now: datetime, keys: tuple[str, ...]
) -> dict[str, str]:
    """The payload of a :func:`seal` token with these string ``keys``.

    Raises :class:`LinkInvalid` for anything forged, changed or of another purpose,
    :class:`LinkExpired` for a genuine token past its expiry."""
    try:
        payload: Any = _serializer(secret, salt).loads(token)
    except BadData as exc:
        raise LinkInvalid("unknown link") from exc
    if not isinstance(payload, dict):
        raise LinkInvalid("unknown link")
    exp = payload.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise LinkInvalid("unknown link")
    values = {key: payload.get(key) for key in keys}
    if not all(isinstance(value, str) for value in values.values()):
        raise LinkInvalid("unknown link")
    if now.timestamp() >= exp:
        raise LinkExpired("the link has expired")
    return {key: str(value) for key, value in values.items()}


@dataclass(frozen=True)
class PageSession:
    """Who is signed in to the pages: a staff member or a guardian of one tenant."""

    tenant_id: str
    person_id: str
    nonce: str

    def csrf(self, secret: bytes) -> str:
        """The value every form of this session must send back."""
        key = hmac.new(secret, _CSRF_LABEL, hashlib.sha256).digest()
        return hmac.new(key, self.nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, secret: bytes, value: object) -> bool:
        return (
            isinstance(value, str)
            and value.isascii()
            and hmac.compare_digest(self.csrf(secret), value)
        )


def staff_link(
    secret: bytes, tenant_id: str, staff_id: str, message_id: str, now: datetime, ttl: timedelta
) -> tuple[str, datetime]:
    """The token of a staff sign-in link (``message_id`` "" lands on the message list)."""
    return seal(secret, STAFF_LINK_SALT, {"t": tenant_id, "s": staff_id, "m": message_id}, now, ttl)


def open_staff_link(secret: bytes, token: str, now: datetime) -> tuple[str, str, str]:
    """``(tenant_id, staff_id, message_id)`` of a sign-in link token."""
    found = unseal(secret, STAFF_LINK_SALT, token, now, ("t", "s", "m"))
    return found["t"], found["s"], found["m"]


def new_session(
    secret: bytes, salt: str, tenant_id: str, person_id: str, now: datetime, ttl: timedelta
) -> tuple[str, datetime]:
    """A session cookie value for this person, with a fresh nonce."""
    payload = {"t": tenant_id, "p": person_id, "n": secrets.token_urlsafe(16)}
    return seal(secret, salt, payload, now, ttl)


def open_session(secret: bytes, salt: str, value: str, now: datetime) -> PageSession:
    found = unseal(secret, salt, value, now, ("t", "p", "n"))
    return PageSession(found["t"], found["p"], found["n"])


@dataclass(frozen=True)
class PageUser:
    """Who a page is for: the session, the person record and the texts in their language."""

    session: PageSession
    person: Person
    lang: str
    texts: dict[str, Any]
