"""Signed, expiring tokens: guardian tokens for the parent app (read links later).

Signing is itsdangerous (HMAC-SHA256 over a JSON payload), with one salt per
purpose so a token made for one purpose never verifies as another. The payload
is signed, not encrypted: anyone holding a token can base64-decode it and see
the tenant id, the guardian id and the expiry. Those ids are opaque (they come
from the platform and carry no name, phone number or email), which is why this
is acceptable; never put personal data in a payload.

Expiry is written into the payload from the caller's ``now`` and checked
against the caller's ``now`` (a :class:`gateway.clock.Clock`), never against
wall time, so tests drive it with a ManualClock.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadData, URLSafeSerializer

from gateway.errors import ConfigError, Unauthorized

GUARDIAN_TOKEN_SALT = "budbringer.guardian-token.v1"


def _serializer(secret: bytes, salt: str) -> URLSafeSerializer:
    if not secret:
        raise ConfigError("no signing secret configured")
    return URLSafeSerializer(secret, salt=salt, signer_kwargs={"digest_method": hashlib.sha256})


def issue_guardian_token(
    secret: bytes, tenant_id: str, guardian_id: str, now: datetime, ttl: int
) -> tuple[str, datetime]:
    """A token that lets the parent app act as this guardian until the returned expiry.

    The expiry is rounded up to a whole second (it travels as a Unix timestamp).
    """
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    exp = math.ceil((now + timedelta(seconds=ttl)).timestamp())
    payload = {"t": tenant_id, "g": guardian_id, "exp": exp}
    token = _serializer(secret, GUARDIAN_TOKEN_SALT).dumps(payload)
    return str(token), datetime.fromtimestamp(exp, tz=UTC)


def verify_guardian_token(secret: bytes, token: str, now: datetime) -> tuple[str, str]:
    """Return ``(tenant_id, guardian_id)``; raise Unauthorized if forged, malformed or expired."""
    try:
        payload: Any = _serializer(secret, GUARDIAN_TOKEN_SALT).loads(token)
    except BadData as exc:
        raise Unauthorized("invalid guardian token") from exc
    if not isinstance(payload, dict):
        raise Unauthorized("invalid guardian token")
    tenant_id, guardian_id, exp = payload.get("t"), payload.get("g"), payload.get("exp")
    if not (isinstance(tenant_id, str) and isinstance(guardian_id, str)):
        raise Unauthorized("invalid guardian token")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise Unauthorized("invalid guardian token")
    if now.timestamp() >= exp:
        raise Unauthorized("guardian token expired")
    return tenant_id, guardian_id
