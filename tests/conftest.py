"""Shared fixtures: a manual clock, settings in tmp_path, a real SQLite store, a tenant,
and an aiohttp test client around the full app (no workers)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

# Lets the suite import the packages without installing them first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import create_app
from gateway.api.context import AppContext
from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.models import DirectoryBatch, Tenant
from gateway.settings import AttachmentSettings, Settings
from gateway.store import Store

SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"

# The smallest useful directory: one school, one class, a child and a guardian with
# parental responsibility. Test files extend it as they need.
DIRECTORY: dict[str, Any] = {
    "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
    "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
    "persons": [
        {
            "id": "c1",
            "role": "child",
            "given_name": "Kari",
            "birth_date": "2015-03-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        },
        {
            "id": "p1",
            "role": "guardian",
            "given_name": "Ola",
            "phone": "90012345",
            "email": "ola@example.no",
        },
    ],
    "relations": [{"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True}],
}


class TenantCreds(NamedTuple):
    tenant: Tenant
    api_key: str
    whsec: str


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        store_url=f"sqlite:///{tmp_path / 'budbringer.db'}",
        outbox_dir=tmp_path / "outbox",
        secret_key=SECRET_KEY,
        attachments=AttachmentSettings(folder=tmp_path / "attachments"),
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    from gateway.store.sqlite import SqliteStore

    opened = SqliteStore(str(settings.sqlite_path))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def tenant(store: Store, clock: ManualClock) -> TenantCreds:
    created, api_key, whsec = await create_tenant(store, "Asker kommune", clock.now())
    return TenantCreds(created, api_key, whsec)


@pytest.fixture
async def app_client(
    settings: Settings, store: Store, clock: ManualClock
) -> AsyncIterator[TestClient]:
    """The full app on an ephemeral port; its AppContext is ``app_client.app[CTX]``."""
    ctx = AppContext(settings=settings, store=store, clock=clock, secret=SECRET_KEY.encode())
    client = TestClient(TestServer(create_app(ctx)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def directory(store: Store, tenant: TenantCreds) -> DirectoryBatch:
    """DIRECTORY loaded for ``tenant``."""
    batch = DirectoryBatch.model_validate(DIRECTORY)
    await store.apply_directory(tenant.tenant.id, batch)
    return batch


def _message_created(event_id: str = "evt-1", **data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "message.created",
        "data": {
            "audience": {"groups": ["g1"]},
            "subject": "Tur",
            "body": "Vi går på tur.",
            **data,
        },
    }


@pytest.fixture
def make_event() -> Callable[..., dict[str, Any]]:
    """``make_event(event_id="evt-1", **data)``: a message.created body for DIRECTORY."""
    return _message_created
