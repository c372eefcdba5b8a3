"""Guardian tokens: signed, expiring against our clock, no personal data inside."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from itsdangerous import URLSafeSerializer

from gateway.errors import ConfigError, Unauthorized
from gateway.tokens import issue_guardian_token, verify_guardian_token

SECRET = b"test-secret-that-is-long-enough-for-hmac"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def test_round_trip_returns_tenant_and_guardian() -> None:
    token, expires_at = issue_guardian_token(SECRET, "asker", "g-1", NOW, 3600)
    assert expires_at == NOW + timedelta(seconds=3600)
    assert verify_guardian_token(SECRET, token, NOW) == ("asker", "g-1")


def test_expiry_is_checked_against_the_given_now() -> None:
    token, expires_at = issue_guardian_token(SECRET, "asker", "g-1", NOW, 60)
    assert verify_guardian_token(SECRET, token, expires_at - timedelta(seconds=1))
    with pytest.raises(Unauthorized, match="expired"):
        verify_guardian_token(SECRET, token, expires_at)
    with pytest.raises(Unauthorized):
        verify_guardian_token(SECRET, token, expires_at + timedelta(days=1))


def test_expiry_rounds_up_to_whole_seconds() -> None:
    now = NOW + timedelta(microseconds=400_000)
    token, expires_at = issue_guardian_token(SECRET, "asker", "g-1", now, 60)
    assert expires_at == NOW + timedelta(seconds=61)
    assert verify_guardian_token(SECRET, token, now + timedelta(seconds=60))


def test_another_secret_does_not_verify() -> None:
    token, _ = issue_guardian_token(SECRET, "asker", "g-1", NOW, 60)
    with pytest.raises(Unauthorized):
        verify_guardian_token(b"another-secret-of-decent-length", token, NOW)


def test_tampered_payload_does_not_verify() -> None:
    token, _ = issue_guardian_token(SECRET, "asker", "g-1", NOW, 60)
    payload, _, signature = token.partition(".")
    forged = json.dumps({"t": "asker", "g": "g-2", "exp": 9_999_999_999}).encode()
    forged_b64 = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    assert forged_b64 != payload
    with pytest.raises(Unauthorized):
        verify_guardian_token(SECRET, f"{forged_b64}.{signature}", NOW)


def test_token_signed_for_another_purpose_does_not_verify() -> None:
    other = URLSafeSerializer(SECRET, salt="budbringer.read-link.v1").dumps(
        {"t": "asker", "g": "g-1", "exp": 9_999_999_999}
    )
    with pytest.raises(Unauthorized):
        verify_guardian_token(SECRET, str(other), NOW)


@pytest.mark.parametrize("garbage", ["", "x", "a.b.c", "bbk_notatoken", "ÆØÅ"])
def test_garbage_is_unauthorized(garbage: str) -> None:
    with pytest.raises(Unauthorized):
        verify_guardian_token(SECRET, garbage, NOW)


def test_payload_holds_only_opaque_ids_and_expiry() -> None:
    token, _ = issue_guardian_token(SECRET, "asker", "g-1", NOW, 60)
    payload_b64 = token.split(".")[0]
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    assert payload == {"t": "asker", "g": "g-1", "exp": int(NOW.timestamp()) + 60}


def test_empty_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        issue_guardian_token(b"", "asker", "g-1", NOW, 60)
