"""Issue 12: Twilio's status callbacks arrive within tens of milliseconds of accepting a
message — often before the send's outcome (and so its SID) is committed. The Twilio-like
peer posts them by itself 0-50 ms after accepting, shuffled and partly twice; every SMS
must end as its callbacks say, and ``undelivered`` must fail the recipient over to email.
On SQLite and on Redis; a whole gateway (HTTP API and workers) with real peers."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.clock import ManualClock
from gateway.models import DeliveryStatus, DirectoryBatch, Preferences
from gateway.settings import Settings
from gateway.tracker import ESCALATION_KEY
from tests.harness import new_tenant, running
from tests.peers.twilio import AutoCallbacks, TwilioPeer
from tests.test_sms import ACCOUNT_SID, AUTH_TOKEN, twilio_settings

GUARDIANS = 60
REDIS_URL = "redis://127.0.0.1:6379/0"


def phone(n: int) -> str:
    return f"+47410{n:05d}"


def directory() -> DirectoryBatch:
    persons: list[dict[str, object]] = []
    relations = []
    for n in range(GUARDIANS):
        persons.append(
            {
                "id": f"c{n}",
                "role": "child",
                "given_name": "Barn",
                "birth_date": "2015-03-01",
                "unit_ids": ["u1"],
                "group_ids": ["g1"],
            }
        )
        persons.append(
            {
                "id": f"p{n}",
                "role": "guardian",
                "given_name": "Forelder",
                "phone": phone(n),
                "email": f"p{n}@example.no",
            }
        )
        relations.append({"child_id": f"c{n}", "guardian_id": f"p{n}"})
    for relation in relations:
        relation["parental_responsibility"] = True  # type: ignore[assignment]
    return DirectoryBatch.model_validate(
        {
            "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
            "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
            "persons": persons,
            "relations": relations,
        }
    )


# Every third number ends undelivered (30003: handset off), the others delivered.
def ends_undelivered(to: str) -> bool:
    return int(to[-5:]) % 3 == 0


def outcome(to: str) -> list[tuple[str, int | None]]:
    last: tuple[str, int | None] = (
        ("undelivered", 30003)
        if ends_undelivered(to)
        else (
            "delivered",
            None,
        )
    )
    return [("queued", None), ("sent", None), last]


@pytest.fixture(params=["sqlite", "redis"])
async def backend(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> AsyncIterator[Settings]:
    if request.param == "sqlite":
        yield settings
        return
    prefix = "bbtest-" + hashlib.blake2b(str(tmp_path).encode(), digest_size=8).hexdigest()
    yield settings.model_copy(update={"store_url": f"{REDIS_URL}?prefix={prefix}"})
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_early_shuffled_duplicated_callbacks_all_land(
    backend: Settings, clock: ManualClock
) -> None:
    async with TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        with_sms = backend.model_copy(update={"twilio": twilio_settings(twilio.base_url)})
        async with running(with_sms, clock) as gw:
            tenant, key = await new_tenant(gw.service, clock, directory())
            store = gw.service.store
            sms_only = Preferences.model_validate({"channels": {"general": ["sms"]}})
            for n in range(GUARDIANS):
                await store.set_preferences(tenant.id, f"p{n}", sms_only)
            twilio.auto_callbacks(AutoCallbacks(outcome, via=gw.url))
            event = {
                "id": "evt-early",
                "type": "message.created",
                "data": {"audience": {"groups": ["g1"]}, "subject": "Tur", "body": "Vi går."},
            }
            message_id = await gw.post_event(key, event)
            await gw.run()
            results = await twilio.settle()
            assert results and all(r.status == 200 for r in results)
            clock.advance(5)  # past the grace of follow-ups on Redis
            await gw.run()

            deliveries = await gw.deliveries(tenant.id, message_id)
            sms = {d.recipient_id: d for d in deliveries if d.channel == "sms"}
            assert len(sms) == GUARDIANS == len(twilio.messages)
            wrong = {
                pid: d.status
                for pid, d in sms.items()
                if d.status
                is not (
                    DeliveryStatus.undelivered
                    if ends_undelivered(str(d.address))
                    else DeliveryStatus.delivered
                )
            }
            assert wrong == {}
            assert {d.provider_id for d in sms.values()} == set(twilio.messages)
            # Every undelivered SMS failed over to email, once; no other recipient did.
            failover = {
                d.recipient_id
                for d in deliveries
                if d.channel == "email" and d.context.get(ESCALATION_KEY) == "failover:sms"
            }
            expected = {pid for pid, d in sms.items() if ends_undelivered(str(d.address))}
            assert failover == expected
            assert len(expected) == GUARDIANS // 3
            print(
                f"\n{len(results) + twilio.early_callbacks} callbacks, "
                f"{twilio.early_callbacks} of them answered before Twilio's 201 left: "
                f"{GUARDIANS - len(wrong)} of {GUARDIANS} SMS ended right, "
                f"{len(failover)} failed over to email"
            )
