"""A whole gateway (Service: store, channels, dispatcher, HTTP API on an ephemeral port)
driven by a ManualClock: tests post over HTTP and run the workers with ``run()``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.models import Delivery, DirectoryBatch, Tenant
from gateway.service import Service
from gateway.settings import Settings


@dataclass
class Gateway:
    service: Service
    session: aiohttp.ClientSession
    url: str
    clock: ManualClock

    async def run(self) -> None:
        """Do every job that is due now (and what those jobs queue)."""
        await self.service.dispatcher.run_until_idle()

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def post_event(self, key: str, event: dict[str, Any]) -> str:
        async with self.session.post(
            f"{self.url}/v1/events", json=event, headers=self.headers(key)
        ) as resp:
            assert resp.status == 202, await resp.text()
            message_id: str = (await resp.json())["message_id"]
        return message_id

    async def status(self, key: str, message_id: str) -> dict[str, Any]:
        async with self.session.get(
            f"{self.url}/v1/messages/{message_id}", headers=self.headers(key)
        ) as resp:
            assert resp.status == 200, await resp.text()
            data: dict[str, Any] = await resp.json()
        return data

    async def deliveries(self, tenant_id: str, message_id: str) -> list[Delivery]:
        return await self.service.store.list_deliveries(tenant_id, message_id)


@contextlib.asynccontextmanager
async def running(settings: Settings, clock: ManualClock) -> AsyncIterator[Gateway]:
    """Start a Service (API on port 0, workers driven by the test) and stop it after."""
    service = Service(settings.model_copy(update={"port": 0}), clock=clock, workers=False)
    await service.start()
    for channel in service.channels.values():
        await channel.start()
    await service.webhooks.start()
    session = aiohttp.ClientSession()
    try:
        yield Gateway(service, session, f"http://127.0.0.1:{service.port}", clock)
    finally:
        await session.close()
        for channel in service.channels.values():
            await channel.aclose()
        await service.webhooks.aclose()
        await service.stop()


async def new_tenant(
    service: Service, clock: ManualClock, batch: DirectoryBatch
) -> tuple[Tenant, str]:
    """A tenant with this directory; returns it and its API key."""
    tenant, api_key, _ = await create_tenant(service.store, "Asker kommune", clock.now())
    await service.store.apply_directory(tenant.id, batch)
    return tenant, api_key
