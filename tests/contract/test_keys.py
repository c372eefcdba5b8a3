"""Contract of tenant API keys: several per tenant, scopes, expiry, revocation, and the
migration of tenants whose single key predates key rows. Speaks only the Protocol,
except where a test takes the key rows away to make data as an older version left it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import Conflict
from gateway.models import FIRST_KEY_SCOPES, ApiKey, Scope, Tenant, first_key_id
from gateway.store import Store

from .builders import tenant as tenant_at
from .conftest import Backend, take_away

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def tenant(tenant_id: str) -> Tenant:
    return tenant_at(tenant_id, T0)


def key(key_id: str, tenant_id: str, *scopes: Scope, expires: datetime | None = None) -> ApiKey:
    return ApiKey(
        id=key_id,
        tenant_id=tenant_id,
        key_hash="h-" + key_id,
        name="teacher app",
        scopes=list(scopes),
        created_at=T0 + timedelta(minutes=1),
        expires_at=expires,
    )


async def test_a_tenant_starts_with_one_key_of_every_scope_but_protected(store: Store) -> None:
    await store.create_tenant(tenant("a"))
    (first,) = await store.list_api_keys("a")
    assert first.id == first_key_id("h-first-a")
    assert first.key_hash == "h-first-a" and first.tenant_id == "a"
    assert set(first.scopes) == set(FIRST_KEY_SCOPES) and Scope.protected not in first.scopes
    assert await store.api_key_by_hash("h-first-a") == first
    assert await store.list_api_keys("b") == []


async def test_several_keys_with_their_own_scopes_and_expiry(store: Store) -> None:
    await store.create_tenant(tenant("a"))
    await store.create_tenant(tenant("b"))
    expires = T0 + timedelta(days=30)
    teacher = key("k-teacher", "a", Scope.events, Scope.status, expires=expires)
    await store.add_api_key(teacher)
    await store.add_api_key(key("k-b", "b", Scope.directory))
    assert await store.api_key_by_hash("h-k-teacher") == teacher
    assert [k.id for k in await store.list_api_keys("a")] == [
        first_key_id("h-first-a"),
        "k-teacher",
    ]
    assert [k.id for k in await store.list_api_keys("b")] == [first_key_id("h-first-b"), "k-b"]
    found = await store.api_key_by_hash("h-k-teacher")
    assert found is not None and found.expires_at == expires
    assert not found.usable(expires) and found.usable(expires - timedelta(seconds=1))
    assert await store.api_key_by_hash("h-unknown") is None
    with pytest.raises(Conflict):
        await store.add_api_key(teacher)  # the same id and hash
    with pytest.raises(Conflict):
        await store.add_api_key(teacher.model_copy(update={"id": "k-other"}))  # same hash


async def test_a_revoked_key_stays_revoked_and_only_its_tenant_revokes_it(store: Store) -> None:
    await store.create_tenant(tenant("a"))
    await store.create_tenant(tenant("b"))
    await store.add_api_key(key("k1", "a", Scope.events))
    assert await store.revoke_api_key("b", "k1", T0) is None  # another tenant's key
    assert await store.revoke_api_key("a", "nope", T0) is None
    unchanged = await store.api_key_by_hash("h-k1")
    assert unchanged is not None and unchanged.revoked_at is None
    revoked = await store.revoke_api_key("a", "k1", T0 + timedelta(hours=1))
    assert revoked is not None and revoked.revoked_at == T0 + timedelta(hours=1)
    again = await store.revoke_api_key("a", "k1", T0 + timedelta(hours=2))
    assert again is not None and again.revoked_at == T0 + timedelta(hours=1)
    found = await store.api_key_by_hash("h-k1")
    assert found is not None and not found.usable(T0)
    (first, listed) = await store.list_api_keys("a")
    assert listed.revoked_at == T0 + timedelta(hours=1) and first.revoked_at is None


def forget_key_rows(backend: Backend) -> None:
    """Take every key row away, as data written before keys had rows looked."""
    take_away(backend, "DELETE FROM api_keys", ("{tenants}:apikey*", "{tenants}:tkeys:*"))


async def test_old_single_keys_get_their_rows_when_the_store_opens(backend: Backend) -> None:
    async with backend.open() as store:
        await store.create_tenant(tenant("a"))
        await store.create_tenant(tenant("b"))
        await store.set_tenant_scopes("a", ["staff", "protected"])  # the old tenant scopes
    forget_key_rows(backend)
    async with backend.open() as store:
        assert await store.list_api_keys("a") != []
        (a,) = await store.list_api_keys("a")
        assert a.id == first_key_id("h-first-a") and a.key_hash == "h-first-a"
        assert set(a.scopes) == {*FIRST_KEY_SCOPES, Scope.protected}
        b = await store.api_key_by_hash("h-first-b")
        assert b is not None and set(b.scopes) == set(FIRST_KEY_SCOPES)
        await store.revoke_api_key("a", a.id, T0)
    async with backend.open() as store:  # opening again neither duplicates nor revives
        (a,) = await store.list_api_keys("a")
        assert a.revoked_at == T0
        assert len(await store.list_api_keys("b")) == 1
