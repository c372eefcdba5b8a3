"""Sign-in links and session cookies (gateway/sessions.py): what the store's checks
need from them, and how links and cookies made before those checks are read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import LinkInvalid
from gateway.sessions import (
    STAFF_LINK_SALT,
    STAFF_SESSION_SALT,
    new_session,
    open_session,
    open_staff_link,
    seal,
    staff_link,
)

SECRET = b"s" * 32
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
TEN_MINUTES = timedelta(minutes=10)


def test_each_signin_link_has_an_id_of_its_own_and_its_expiry() -> None:
    one, expires_at = staff_link(SECRET, "a", "t1", "m1", T0, TEN_MINUTES)
    two, _ = staff_link(SECRET, "a", "t1", "m1", T0, TEN_MINUTES)
    first, second = open_staff_link(SECRET, one, T0), open_staff_link(SECRET, two, T0)
    assert (first.tenant_id, first.staff_id, first.message_id) == ("a", "t1", "m1")
    assert first.link_id and first.link_id != second.link_id
    assert first.expires_at == expires_at == T0 + TEN_MINUTES


def test_a_link_without_an_id_cannot_be_used_once_so_it_is_refused() -> None:
    old, _ = seal(SECRET, STAFF_LINK_SALT, {"t": "a", "s": "t1", "m": ""}, T0, TEN_MINUTES)
    with pytest.raises(LinkInvalid):
        open_staff_link(SECRET, old, T0)


def test_a_session_carries_its_generation_and_an_older_cookie_has_none() -> None:
    value, _ = new_session(SECRET, STAFF_SESSION_SALT, ("a", "t1", "g-2"), T0, TEN_MINUTES)
    assert open_session(SECRET, STAFF_SESSION_SALT, value, T0).generation == "g-2"
    # made before sessions had a generation: valid until the staff member signs out
    old, _ = seal(SECRET, STAFF_SESSION_SALT, {"t": "a", "p": "t1", "n": "nonce"}, T0, TEN_MINUTES)
    assert open_session(SECRET, STAFF_SESSION_SALT, old, T0).generation == ""
    malformed, _ = seal(
        SECRET, STAFF_SESSION_SALT, {"t": "a", "p": "t1", "n": "x", "g": 5}, T0, TEN_MINUTES
    )
    with pytest.raises(LinkInvalid):
        open_session(SECRET, STAFF_SESSION_SALT, malformed, T0)
