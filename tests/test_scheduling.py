"""Issue 16, scheduled sending: a message.created with send_at is stored at once and
resolved and sent at its time, also after a restart; a cancel before then means it is
never sent; a block in between holds. Through the HTTP API of a whole gateway
(tests/harness.py) with a real SMTP peer, on SQLite and Redis, on a ManualClock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.models import DirectoryBatch
from gateway.settings import Settings
from tests.conftest import DIRECTORY, SECRET_KEY
from tests.contract.conftest import REDIS_URL, forget_keys, require_redis
from tests.harness import Gateway, running
from tests.peers.smtp import SmtpPeer

SENDER = "Asker kommune <varsel@asker.kommune.no>"
HOUR = 3600.0


@dataclass
class Rig:
    settings: Settings
    clock: ManualClock
    smtp: SmtpPeer
    stack: AsyncExitStack
    gw: Gateway
    key: str = ""
    tenant_id: str = ""

    async def restart(self) -> None:
        """Stop the gateway and start a new one on the same store."""
        await self.stack.aclose()
        self.stack = AsyncExitStack()
        self.gw = await self.stack.enter_async_context(running(self.settings, self.clock))

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.gw.session.request(
            method, self.gw.url + path, json=body, headers=self.gw.headers(self.key)
        ) as resp:
            return resp.status, await resp.json()

    async def post(self, event_id: str, send_at: Any) -> tuple[int, Any]:
        event = {
            "id": event_id,
            "type": "message.created",
            "data": {
                "sender_id": "t1",
                "audience": {"groups": ["g1"]},
                "subject": "Tur mandag",
                "body": "Husk matpakke.",
                "send_at": send_at,
            },
        }
        return await self.call("POST", "/v1/events", event)

    def at(self, hours: float) -> str:
        return (self.clock.now() + timedelta(hours=hours)).isoformat()


@pytest.fixture(params=["sqlite", "redis"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    prefix = ""
    if request.param == "redis":
        require_redis()
        prefix = f"bbtest-sched-{uuid.uuid4().hex[:12]}"
        store_url = f"{REDIS_URL}?prefix={prefix}"
    else:
        store_url = f"sqlite:///{tmp_path / 'budbringer.db'}"
    clock = ManualClock()
    try:
        async with SmtpPeer() as smtp:
            settings = Settings(
                store_url=store_url,
                outbox_dir=tmp_path / "outbox",
                secret_key=SECRET_KEY,
                channels=["inapp", "email"],
                smtp={"host": smtp.host, "port": smtp.port, "tls": "none", "sender": SENDER},
            )
            stack = AsyncExitStack()
            gw = await stack.enter_async_context(running(settings, clock))
            built = Rig(settings, clock, smtp, stack, gw)
            try:
                tenant, key, _ = await create_tenant(gw.service.store, "Asker kommune", clock.now())
                built.key, built.tenant_id = key, tenant.id
                teacher = {
                    "id": "t1",
                    "role": "staff",
                    "given_name": "Tone",
                    "unit_ids": ["u1"],
                    "group_ids": ["g1"],
                }
                directory = {**DIRECTORY, "persons": [*DIRECTORY["persons"], teacher]}
                batch = DirectoryBatch.model_validate(directory)
                await gw.service.store.apply_directory(tenant.id, batch)
                yield built
            finally:
                await built.stack.aclose()
    finally:
        if prefix:
            forget_keys(prefix)


async def test_a_scheduled_message_is_sent_at_its_time_after_a_restart(rig: Rig) -> None:
    status, answer = await rig.post("evt-1", rig.at(2))
    assert status == 202, answer
    assert answer["scheduled_for"] == rig.at(2)
    message_id = answer["message_id"]
    await rig.gw.run()
    assert rig.smtp.received == []
    status, view = await rig.call("GET", f"/v1/messages/{message_id}")
    assert view["schedule"] == {"state": "scheduled", "send_at": rig.at(2), "cancelled_at": None}
    assert view["deliveries"] == [] and view["planned_at"] is None

    await rig.restart()
    rig.clock.advance(2 * HOUR - 1)
    await rig.gw.run()
    assert rig.smtp.received == []
    rig.clock.advance(1)
    await rig.gw.run()
    assert [m.rcpt_tos for m in rig.smtp.received] == [["ola@example.no"]]
    status, view = await rig.call("GET", f"/v1/messages/{message_id}")
    assert view["schedule"]["state"] == "started"
    statuses = {d["channel"]: d["status"] for d in view["deliveries"]}
    assert (statuses["inapp"], statuses["email"]) == ("delivered", "sent")
    status, answer = await rig.call("POST", f"/v1/messages/{message_id}/cancel")
    assert status == 409, answer
    assert answer["error"] == "conflict"


async def test_a_cancelled_message_is_never_sent(rig: Rig) -> None:
    status, answer = await rig.post("evt-1", rig.at(1))
    message_id = answer["message_id"]
    status, answer = await rig.call("POST", f"/v1/messages/{message_id}/cancel")
    assert status == 200, answer
    assert answer["schedule"]["state"] == "cancelled"
    assert answer["schedule"]["cancelled_at"] == rig.clock.now().isoformat()
    await rig.restart()
    rig.clock.advance(25 * HOUR)
    await rig.gw.run()
    assert rig.smtp.received == []
    status, view = await rig.call("GET", f"/v1/messages/{message_id}")
    assert view["schedule"]["state"] == "cancelled" and view["deliveries"] == []
    status, again = await rig.call("POST", f"/v1/messages/{message_id}/cancel")
    assert (status, again["schedule"]) == (200, answer["schedule"])  # idempotent
    # A replay of the event is a duplicate, and does not bring the message back.
    status, replay = await rig.post("evt-1", (rig.clock.now() - timedelta(hours=24)).isoformat())
    assert status == 409 or replay["duplicate"] is True
    await rig.gw.run()
    assert rig.smtp.received == []


async def test_a_block_between_scheduling_and_sending_holds(rig: Rig) -> None:
    status, answer = await rig.post("evt-1", rig.at(1))
    assert status == 202, answer
    store = rig.gw.service.store
    now = rig.clock.now()
    await store.set_relation_flag(rig.tenant_id, "c1", "p1", "blocked", True, "vedtak", "x", now)
    rig.clock.advance(HOUR)
    await rig.gw.run()
    assert rig.smtp.received == []
    deliveries = await store.list_deliveries(rig.tenant_id, answer["message_id"])
    assert {d.status.value for d in deliveries} == {"suppressed"}


@pytest.mark.parametrize(
    ("send_at", "problem"),
    [
        (-1.0, "must be in the future"),
        (0.0, "must be in the future"),
        (91 * 24.0, "at most 90 days"),
    ],
)
async def test_send_at_out_of_range_is_422_naming_the_field(
    rig: Rig, send_at: float, problem: str
) -> None:
    status, answer = await rig.post("evt-1", rig.at(send_at))
    assert status == 422, answer
    (error,) = answer["errors"]
    assert error["loc"] == ["data", "send_at"] and problem in error["message"]


async def test_send_at_without_a_time_zone_or_not_a_time_is_422(rig: Rig) -> None:
    for bad in ("2026-12-01T07:30:00", "monday", 5):
        status, answer = await rig.post("evt-1", bad)
        assert status == 422, answer
        assert answer["errors"][0]["loc"][:2] == ["data", "send_at"]


async def test_cancel_of_an_unknown_or_unscheduled_message(rig: Rig) -> None:
    status, answer = await rig.call("POST", "/v1/messages/nope/cancel")
    assert status == 404, answer
    status, answer = await rig.post("evt-2", None)
    assert status == 202, answer
    status, answer = await rig.call("POST", f"/v1/messages/{answer['message_id']}/cancel")
    assert status == 409, answer


async def staff_page(rig: Rig, message_id: str) -> str:
    status, answer = await rig.call("POST", "/v1/staff/t1/tokens", {"message_id": message_id})
    assert status == 201, answer
    path = "/staff/" + answer["link"].split("/staff/", 1)[1]
    jar = aiohttp.CookieJar(unsafe=True)  # the session cookie, on 127.0.0.1
    async with (
        aiohttp.ClientSession(cookie_jar=jar) as browser,
        browser.get(rig.gw.url + path) as resp,
    ):
        assert resp.status == 200
        return await resp.text()


async def test_the_staff_page_says_scheduled_for_and_cancelled(rig: Rig) -> None:
    send_at = rig.clock.now().replace(hour=6, minute=30) + timedelta(days=3)  # 07:30 in Oslo
    status, answer = await rig.post("evt-1", send_at.isoformat())
    assert status == 202, answer
    page = await staff_page(rig, answer["message_id"])
    assert "Planlagt sendt 30. november 2026 07:30" in page
    await rig.call("POST", f"/v1/messages/{answer['message_id']}/cancel")
    page = await staff_page(rig, answer["message_id"])
    assert "Avlyst, skulle vært sendt 30. november 2026 07:30" in page
