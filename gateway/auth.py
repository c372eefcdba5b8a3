"""Tenant credentials: API keys, Standard Webhooks signatures, and creating tenants.

A tenant (a municipality, a platform) authenticates in one of two ways:

* ``Authorization: Bearer bbk_...`` — one of the tenant's API keys. Only its sha256 is
  stored. Each key has its own scopes and an optional expiry, and can be revoked; a
  route names the scope it needs. The key's id (never the key) is put on the request
  as ``request[KEY_ID]`` (a ``web.RequestKey`` named ``key_id``) for the access log.
* Standard Webhooks signing (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``) with the tenant's ``whsec_`` secret, for ``POST /v1/events``
  only. A signed request also names its tenant in ``X-Budbringer-Tenant``, because
  the signature itself does not say whose secret made it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aiohttp import web
from standardwebhooks.webhooks import Webhook

from gateway.constants import API_KEY_PREFIX, WEBHOOK_SECRET_PREFIX, WEBHOOK_TOLERANCE_SECONDS
from gateway.errors import Forbidden, Unauthorized
from gateway.models import ApiKey, Scope, Tenant, first_api_key
from gateway.store.ports import KeyStore, TenantStore

TENANT_HEADER = "X-Budbringer-Tenant"
# Set on the request by authentication, for the routes and the access log:
# ``request[KEY_ID]`` is the id of the API key used (None when an event came signed;
# absent before authentication), ``request[KEY_SCOPES]`` that key's scopes.
KEY_ID: web.RequestKey[str | None] = web.RequestKey("key_id")
KEY_SCOPES: web.RequestKey[frozenset[Scope]] = web.RequestKey("key_scopes")
WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


# The authenticated tenant of a request, for the access log.
TENANT_ID = web.RequestKey("tenant_id", str)


class AuthStore(KeyStore, TenantStore, Protocol):
    """What authenticating a request needs: the key by its hash and its tenant."""


def new_api_key() -> str:
    """A fresh tenant API key, shown once to whoever creates the tenant."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The stored form of an API key.

    A plain sha256 is right here, unlike for passwords: the key carries 256 random
    bits, so there is nothing for a slow hash to protect against guessing, and a
    fast hash lets the store look the tenant up by an indexed column.
    """
    return hashlib.sha256(key.encode()).hexdigest()


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _slug(name: str) -> str:
    folded = name.lower().replace("æ", "ae").replace("ø", "o").replace("å", "aa")
    folded = unicodedata.normalize("NFKD", folded).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[:40].strip("-") or "tenant"


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


async def create_tenant(
    store: TenantStore, name: str, now: datetime, *, protected: bool = False
) -> tuple[Tenant, str, str]:
    """Create a tenant; return (tenant, api_key, webhook_secret).

    The first API key has every scope but ``protected`` (unless ``protected``). It is
    returned in clear only here; the store keeps its hash. The webhook secret is stored
    in clear because verifying an HMAC needs it.
    """
    api_key = new_api_key()
    whsec = new_webhook_secret()
    tenant = Tenant(
        id=f"{_slug(name)}-{secrets.token_hex(3)}",
        name=name,
        api_key_hash=hash_api_key(api_key),
        webhook_secret=whsec,
        created_at=now,
    )
    await store.create_tenant(tenant, first_api_key(tenant, protected=protected))
    return tenant, api_key, whsec


# A key's expiry is at most this far ahead (no expiry at all is allowed): a date past
# year 9999 in UTC could be stored but never read back, and listing keys broke.
KEY_LIFETIME_MAX_DAYS = 3660


def key_expiry_problem(expires_at: datetime | None, now: datetime) -> str | None:
    """Why a key may not expire at ``expires_at`` (None: it may)."""
    if expires_at is None:
        return None
    if expires_at <= now:
        return "must be in the future"
    if expires_at - now > timedelta(days=KEY_LIFETIME_MAX_DAYS):
        return f"must be at most {KEY_LIFETIME_MAX_DAYS} days ahead (leave it out for no expiry)"
    return None


async def create_api_key(
    store: KeyStore,
    tenant_id: str,
    scopes: list[Scope],
    now: datetime,
    *,
    name: str = "",
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Another key for the tenant; return (its record, the key shown this once)."""
    api_key = new_api_key()
    record = ApiKey(
        id=new_key_id(),
        tenant_id=tenant_id,
        key_hash=hash_api_key(api_key),
        name=name,
        scopes=sorted(set(scopes)),
        created_at=now,
        expires_at=expires_at,
    )
    await store.add_api_key(record)
    return record, api_key


def _bearer_key(request: web.Request) -> str | None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


async def authenticate_bearer(
    request: web.Request, store: AuthStore, now: datetime, scope: Scope
) -> Tenant:
    """The tenant whose API key is in ``Authorization: Bearer``, if the key has ``scope``.

    Unauthorized (401) for a missing, unknown, revoked or expired key — an unknown key
    never says whether the header, the scheme or the key was wrong; Forbidden (403) for
    a valid key without ``scope``. Sets ``request[KEY_ID]`` and ``request[KEY_SCOPES]``.
    """
    key = _bearer_key(request)
    # Looking up by hash leaks at most timing about a hash, which says nothing about a key.
    record = await store.api_key_by_hash(hash_api_key(key)) if key else None
    tenant = await store.get_tenant(record.tenant_id) if record is not None else None
    if record is None or tenant is None:
        raise Unauthorized("missing or invalid credentials")
    request[TENANT_ID] = tenant.id  # for the access log (gateway/api/access.py)
    if record.revoked_at is not None:
        raise Unauthorized("this API key has been revoked")
    if not record.usable(now):
        raise Unauthorized("this API key has expired")
    request[KEY_ID] = record.id
    request[KEY_SCOPES] = frozenset(record.scopes)
    if scope not in record.scopes:
        raise Forbidden(f"this API key lacks the {scope.value} scope")
    return tenant


def key_has(request: web.Request, scope: Scope) -> bool:
    """Whether the API key that authenticated this request has ``scope``."""
    return scope in request.get(KEY_SCOPES, frozenset())


def _failed(check: str, message: str, header: str) -> Unauthorized:
    error: dict[str, Any] = {"loc": ["header", header], "message": message, "type": check}
    return Unauthorized(f"signature verification failed: {message}", errors=[error])


def _timestamp(value: str, now: datetime) -> datetime:
    if not value.isdigit():
        raise _failed("invalid_timestamp", "not integer Unix seconds", "webhook-timestamp")
    try:
        timestamp = datetime.fromtimestamp(int(value), tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise _failed("invalid_timestamp", "out of range", "webhook-timestamp") from exc
    tolerance = timedelta(seconds=WEBHOOK_TOLERANCE_SECONDS)
    if timestamp < now - tolerance:
        raise _failed("timestamp_too_old", "older than the 5 minute tolerance", "webhook-timestamp")
    if timestamp > now + tolerance:
        raise _failed("timestamp_too_new", "newer than the 5 minute tolerance", "webhook-timestamp")
    return timestamp


def _signature_matches(
    secret: str, msg_id: str, timestamp: datetime, raw: bytes, header: str
) -> bool:
    # The library's own verify() checks the timestamp against wall time; we check it
    # against our Clock above and use the library only to compute the signature.
    try:
        expected = Webhook(secret).sign(msg_id=msg_id, timestamp=timestamp, data=raw.decode())
    except UnicodeDecodeError:
        return False
    expected_bytes = base64.b64decode(expected.partition(",")[2])
    for versioned in header.split():
        version, _, signature = versioned.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(signature, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected_bytes, given):
            return True
    return False


async def authenticate_event(
    request: web.Request, raw: bytes, store: AuthStore, now: datetime
) -> Tenant:
    """The tenant that sent this event: by API key, or by a Standard Webhooks signature.

    A request with an ``Authorization`` header is checked as Bearer. Otherwise it
    must carry ``webhook-id``, ``webhook-timestamp`` (within 5 minutes of ``now``),
    ``webhook-signature`` and ``X-Budbringer-Tenant``. A failure raises Unauthorized
    whose ``errors`` name the check that failed (never a secret).
    """
    if "Authorization" in request.headers:
        return await authenticate_bearer(request, store, now, Scope.events)
    request[KEY_ID] = None
    headers = request.headers
    if not any(name in headers for name in (*WEBHOOK_HEADERS, TENANT_HEADER)):
        raise Unauthorized(
            "missing credentials: send Authorization: Bearer or Standard Webhooks headers"
        )
    missing = [name for name in (*WEBHOOK_HEADERS, TENANT_HEADER) if not headers.get(name)]
    if missing:
        raise Unauthorized(
            "signature verification failed: missing headers",
            errors=[
                {"loc": ["header", name], "message": "missing", "type": "missing_header"}
                for name in missing
            ],
        )
    timestamp = _timestamp(headers["webhook-timestamp"], now)
    tenant = await store.get_tenant(headers[TENANT_HEADER])
    # An unknown tenant fails like a wrong signature, so tenant ids cannot be probed.
    if tenant is None or not _signature_matches(
        tenant.webhook_secret, headers["webhook-id"], timestamp, raw, headers["webhook-signature"]
    ):
        raise _failed(
            "signature_mismatch", "no matching v1 signature for this tenant", "webhook-signature"
        )
    return tenant
