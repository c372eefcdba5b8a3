"""Contract of the staff sessions' store (``StaffSessionStore``): a sign-in link is used
once, by one of any number of simultaneous uses in any process, and forgotten after its
expiry; a sign-out gives the staff member a new session generation, which every process
sees at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from gateway.store import Store

from .conftest import Backend

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
TEN_MINUTES = T0 + timedelta(minutes=10)


async def test_a_signin_link_is_used_once_until_it_expires(store: Store) -> None:
    assert await store.use_signin_link("a", "link-1", T0, TEN_MINUTES) is True
    assert await store.use_signin_link("a", "link-1", T0, TEN_MINUTES) is False
    later = T0 + timedelta(minutes=9, seconds=59)
    assert await store.use_signin_link("a", "link-1", later, TEN_MINUTES) is False
    # another link, and the same id in another tenant, are apart
    assert await store.use_signin_link("a", "link-2", T0, TEN_MINUTES) is True
    assert await store.use_signin_link("b", "link-1", T0, TEN_MINUTES) is True


async def test_of_simultaneous_uses_in_two_processes_one_wins(backend: Backend) -> None:
    async with backend.open() as one, backend.open() as two:
        uses = [
            store.use_signin_link("a", "link-1", T0, TEN_MINUTES)
            for _ in range(8)
            for store in (one, two)
        ]
        assert sorted(await asyncio.gather(*uses)) == [False] * 15 + [True]


async def test_a_used_link_is_forgotten_after_its_expiry(store: Store) -> None:
    # Redis lets the key expire in real time (the seconds left by the caller's clock)
    assert await store.use_signin_link("a", "link-1", T0, T0 + timedelta(seconds=1)) is True
    await asyncio.sleep(1.2)
    after = T0 + timedelta(seconds=2)
    assert await store.use_signin_link("a", "link-1", after, after + timedelta(minutes=10))


async def test_a_sign_out_gives_a_new_session_generation(store: Store) -> None:
    assert await store.staff_session_generation("a", "t1") == ""
    first = await store.end_staff_sessions("a", "t1")
    assert first != ""
    assert await store.staff_session_generation("a", "t1") == first
    second = await store.end_staff_sessions("a", "t1")
    assert second not in ("", first)
    assert await store.staff_session_generation("a", "t1") == second
    # other staff members and other tenants keep theirs
    assert await store.staff_session_generation("a", "t2") == ""
    assert await store.staff_session_generation("b", "t1") == ""


async def test_every_process_sees_a_sign_out_and_it_lasts(backend: Backend) -> None:
    async with backend.open() as one, backend.open() as two:
        generation = await one.end_staff_sessions("a", "t1")
        assert await two.staff_session_generation("a", "t1") == generation
    async with backend.open() as reopened:
        assert await reopened.staff_session_generation("a", "t1") == generation
