"""Personal read links: opaque, expiring tokens for ``/r/<token>``.

A token is ``base64url(nonce || AES-GCM(key, delivery id || expiry))`` without
padding: 12 bytes of random nonce, the 16 raw bytes of the delivery id and the
expiry as a big-endian uint32 of minutes since the epoch, plus the 16-byte tag,
64 characters in all. The key is derived from the gateway secret with HKDF and
a purpose label, so a read link can never be confused with a guardian token.
Encryption keeps the delivery id out of sight (links end up in mail logs and
link scanners); the tag makes any change to a token fail as a whole.

:func:`make_read_token` uses a fresh random 96-bit nonce; with one key that stays
safe up to about 2**32 tokens (NIST SP 800-38D), far above what a municipality
sends before the secret is rotated. The links sent in messages
(:func:`read_link_maker`) are made by :func:`delivery_read_token` instead: its nonce
is an HMAC of the sealed content under a third derived key (a synthetic IV, as in
SIV mode, RFC 5297), and the expiry counts from the delivery's planning, so every
attempt of one delivery carries the same link and the same text. That is what lets
the SMS channel recognise a text Twilio took in an attempt that got no answer
(channels/sms.py). Two tokens share a nonce only if they seal the same delivery and
expiry, that is, only if they are the same token; any two deliveries' nonces collide
no more often than random ones.

The confirm form carries :func:`csrf_field`, an HMAC of the token under a
second derived key: a page from another site cannot compute it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import ConfigError, LinkExpired, LinkInvalid
from gateway.models import Delivery

READ_PATH = "/r/"
# The same token under this path is the email's one-click unsubscribe link (RFC 8058).
UNSUBSCRIBE_PATH = "/u/"
# And under this path it opens the recipient's inbox and settings (gateway/api/parent_pages.py).
PARENT_PATH = "/p/"

_TOKEN_KEY_LABEL = b"budbringer/read-link/aes-256-gcm/v1"
_CSRF_KEY_LABEL = b"budbringer/read-link/csrf/v1"
_NONCE_KEY_LABEL = b"budbringer/read-link/synthetic-nonce/v1"
_AAD = b"budbringer read link v1"
_NONCE = 12
_PLAIN = struct.Struct(">16sI")  # delivery id (raw), expiry (minutes since the epoch)
_TAG = 16
TOKEN_BYTES = _NONCE + _PLAIN.size + _TAG
TOKEN_LENGTH = (TOKEN_BYTES * 4 + 2) // 3  # base64url characters, no padding (64)
_DELIVERY_ID = re.compile(r"^[0-9a-f]{32}$")


@functools.lru_cache(maxsize=8)
def _key(secret: bytes, label: bytes) -> bytes:
    if not secret:
        raise ConfigError("no signing secret configured")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)


@functools.lru_cache(maxsize=8)
def _sealer(secret: bytes) -> AESGCM:
    """The read links' cipher; it holds no state between tokens, so one serves every token."""
    return AESGCM(_key(secret, _TOKEN_KEY_LABEL))


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64encode(raw: bytes) -> str:
    """base64url without padding: ``base64.urlsafe_b64encode`` less the "=", in C calls only."""
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def make_read_token(secret: bytes, delivery_id: str, expires_at: datetime) -> str:
    """A read-link token for this delivery, valid until ``expires_at`` (to the minute,
    rounded down), with a fresh random nonce. ``delivery_id`` is 32 hex digits."""
    return _seal(secret, os.urandom(_NONCE), _plain(delivery_id, expires_at))


def delivery_read_token(secret: bytes, delivery_id: str, expires_at: datetime) -> str:
    """As :func:`make_read_token`, but the same token for the same delivery and expiry
    every time (the nonce is an HMAC of the content: module docstring)."""
    return _minter(secret).token(_plain(delivery_id, expires_at))


class _Minter:
    """:func:`delivery_read_token` for one secret, its keys derived once: a broadcast
    mints one token per delivery, so each costs an HMAC copy, one AES-GCM seal and one
    base64 pass, all in C."""

    def __init__(self, secret: bytes) -> None:
        self._mac = hmac.new(_key(secret, _NONCE_KEY_LABEL), digestmod=hashlib.sha256)
        self._seal = _sealer(secret).encrypt

    def token(self, plain: bytes) -> str:
        mac = self._mac.copy()
        mac.update(plain)
        nonce = mac.digest()[:_NONCE]
        return _b64encode(nonce + self._seal(nonce, plain, _AAD))


@functools.lru_cache(maxsize=8)
def _minter(secret: bytes) -> _Minter:
    return _Minter(secret)


def _plain(delivery_id: str, expires_at: datetime) -> bytes:
    try:
        raw_id = bytes.fromhex(delivery_id)
    except ValueError as exc:
        raise ValueError("a delivery id is 32 hex digits") from exc
    if len(raw_id) != 16:
        raise ValueError("a delivery id is 32 hex digits")
    return _PLAIN.pack(raw_id, _minutes(expires_at))


@functools.lru_cache(maxsize=64)  # a broadcast's deliveries share a few planning times
def _minutes(expires_at: datetime) -> int:
    minutes = int(expires_at.astimezone(UTC).timestamp() // 60)
    if not 0 < minutes < 2**32:
        raise ValueError("expiry out of range")
    return minutes


def _seal(secret: bytes, nonce: bytes, plain: bytes) -> str:
    return _b64encode(nonce + _sealer(secret).encrypt(nonce, plain, _AAD))


def open_read_token(secret: bytes, token: str, now: datetime) -> str:
    """The delivery id inside ``token``.

    Raises :class:`LinkInvalid` for anything not made by :func:`make_read_token`
    with this secret (including a changed character), and :class:`LinkExpired`
    for a genuine token past its expiry.
    """
    if len(token) != TOKEN_LENGTH or not token.isascii():
        raise LinkInvalid("unknown read link")
    try:
        raw = _b64decode(token)
    except (binascii.Error, ValueError) as exc:
        raise LinkInvalid("unknown read link") from exc
    # Re-encoding must give the same text: base64 would accept other spellings
    # of the same bytes (non-zero trailing bits), and one link has one spelling.
    if len(raw) != TOKEN_BYTES or _b64encode(raw) != token:
        raise LinkInvalid("unknown read link")
    try:
        plain = _sealer(secret).decrypt(raw[:_NONCE], raw[_NONCE:], _AAD)
    except InvalidTag as exc:
        raise LinkInvalid("unknown read link") from exc
    raw_id, minutes = _PLAIN.unpack(plain)
    if now.timestamp() >= minutes * 60:
        raise LinkExpired("the read link has expired", delivery_id=str(raw_id.hex()))
    return str(raw_id.hex())


def csrf_field(secret: bytes, token: str) -> str:
    """The value the confirm form must send back for ``token``."""
    digest = hmac.new(_key(secret, _CSRF_KEY_LABEL), token.encode("ascii"), hashlib.sha256)
    return _b64encode(digest.digest())


def csrf_valid(secret: bytes, token: str, value: str | None) -> bool:
    """True when ``value`` is :func:`csrf_field` of ``token`` (compared in constant time)."""
    if not value or not value.isascii():
        return False
    return hmac.compare_digest(csrf_field(secret, token), value)


def read_link_maker(
    secret: bytes, public_url: str, ttl: timedelta
) -> Callable[[Delivery], str | None]:
    """``link_for`` for :class:`gateway.render.Renderer`: a delivery's link,
    ``<public_url>/r/<token>``, valid for ``ttl`` from the delivery's planning, the
    same in every attempt (:func:`delivery_read_token`); None for an id that is not a
    delivery id."""
    base = public_url.rstrip("/") + READ_PATH
    minter = _minter(secret)

    def link_for(delivery: Delivery) -> str | None:
        if not _DELIVERY_ID.fullmatch(delivery.id):
            return None
        return base + minter.token(_plain(delivery.id, delivery.created_at + ttl))

    return link_for
