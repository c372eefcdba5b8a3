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

A signature alone cannot be taken back, so two things live in the store
(``StaffSessionStore``, checked by gateway/api/staff_pages.py): a sign-in link's
nonce is its id, used once; and a staff session carries the staff member's session
generation as it was at sign-in, which every sign-out replaces, ending every
session signed in before it.
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


def _opened(secret: bytes, salt: str, token: str, now: datetime) -> tuple[dict[str, Any], int]:
    """The payload of a genuine, unexpired :func:`seal` token, and its expiry."""
    try:
        payload: Any = _serializer(secret, salt).loads(token)
    except BadData as exc:
        raise LinkInvalid("unknown link") from exc
    if not isinstance(payload, dict):
        raise LinkInvalid("unknown link")
    exp = payload.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise LinkInvalid("unknown link")
    if now.timestamp() >= exp:
        raise LinkExpired("the link has expired")
    return payload, exp


def _strings(
    payload: dict[str, Any], keys: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, str]:
    """``keys`` (required) and ``optional`` (absent: "") of a payload, all strings."""
    values = {key: payload.get(key) for key in keys} | {k: payload.get(k, "") for k in optional}
    if not all(isinstance(value, str) for value in values.values()):
        raise LinkInvalid("unknown link")
    return {key: str(value) for key, value in values.items()}


def unseal(
    secret: bytes, salt: str, token: str, now: datetime, keys: tuple[str, ...]
) -> dict[str, str]:
    """The payload of a :func:`seal` token with these string ``keys``.

    Raises :class:`LinkInvalid` for anything forged, changed or of another purpose,
    :class:`LinkExpired` for a genuine token past its expiry."""
    payload, _ = _opened(secret, salt, token, now)
    return _strings(payload, keys)


@dataclass(frozen=True)
class PageSession:
    """Who is signed in to the pages: a staff member or a guardian of one tenant.

    ``generation`` is the staff member's session generation at sign-in ("" for
    parents, and for a staff member who never signed out)."""

    tenant_id: str
    person_id: str
    nonce: str
    generation: str = ""

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


@dataclass(frozen=True)
class SignInLink:
    """An opened sign-in link: for whom, where to, its id (used once) and its expiry."""

    tenant_id: str
    staff_id: str
    message_id: str
    link_id: str
    expires_at: datetime


def staff_link(
    secret: bytes, tenant_id: str, staff_id: str, message_id: str, now: datetime, ttl: timedelta
) -> tuple[str, datetime]:
    """The token of a staff sign-in link (``message_id`` "" lands on the message list),
    with a random id of its own."""
    payload = {"t": tenant_id, "s": staff_id, "m": message_id, "n": secrets.token_urlsafe(16)}
    return seal(secret, STAFF_LINK_SALT, payload, now, ttl)


def open_staff_link(secret: bytes, token: str, now: datetime) -> SignInLink:
    """The sign-in link of a token. A link without an id (made before links were used
    once) is invalid."""
    payload, exp = _opened(secret, STAFF_LINK_SALT, token, now)
    found = _strings(payload, ("t", "s", "m", "n"))
    if not found["n"]:
        raise LinkInvalid("unknown link")
    expires_at = datetime.fromtimestamp(exp, tz=UTC)
    return SignInLink(found["t"], found["s"], found["m"], found["n"], expires_at)


def new_session(
    secret: bytes,
    salt: str,
    session: tuple[str, str, str],
    now: datetime,
    ttl: timedelta,
) -> tuple[str, datetime]:
    """A session cookie value for (tenant, person, session generation), with a fresh
    nonce."""
    tenant_id, person_id, generation = session
    payload = {"t": tenant_id, "p": person_id, "n": secrets.token_urlsafe(16), "g": generation}
    return seal(secret, salt, payload, now, ttl)


def open_session(secret: bytes, salt: str, value: str, now: datetime) -> PageSession:
    """The session of a cookie value; one made before sessions had a generation has ""."""
    payload, _ = _opened(secret, salt, value, now)
    found = _strings(payload, ("t", "p", "n"), optional=("g",))
    return PageSession(found["t"], found["p"], found["n"], found["g"])


@dataclass(frozen=True)
class PageUser:
    """Who a page is for: the session, the person record and the texts in their language."""

    session: PageSession
    person: Person
    lang: str
    texts: dict[str, Any]
