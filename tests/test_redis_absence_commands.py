"""How many Redis commands one absence alert costs from intake to hand-over, counted by a
redis-server of the test's own (``INFO commandstats``, scripts' inner calls included), so
the absence path's per-alert work (issue 18: ≈ 170 commands per alert in the bench's mixed
scenario) cannot creep back unseen."""

from __future__ import annotations

import pytest

from gateway.bench.redis_stats import snapshot
from gateway.clock import ManualClock
from gateway.models import DeliveryStatus, Device
from gateway.settings import Settings
from tests.harness import new_tenant, running
from tests.peers.twilio import TwilioPeer
from tests.test_absence import configured, directory, recorded, twilio  # noqa: F401
from tests.test_redis_commands import url  # noqa: F401

# One alert for c1 (guardians p1 and p2 with parental responsibility, p3 without, p4
# blocked), everything the gateway asks Redis: the API key, the intake's read of the child,
# the record, the message and its plan job, the plan (deliveries, send jobs, alert phones,
# the follow-up jobs, the end of its job), the sends and their outcomes, and the test
# dispatcher's claims (each asks all job kinds' waiting sets: ≈ 120 of these commands).
# Measured 2026-12-07: 316 commands and 15 script calls before the empty audience fields
# stopped costing a lookup each and the two follow-up jobs went into one call; 309 and 14;
# 308 without the intake's read of a message its new record says is not there yet; 306
# and 16 with an alert phone's key written by a script (was MULTI ... EXEC) per number;
# 287 when a read of eight persons or more takes the devices' owners from the tenant's
# token and FID indexes (redis/guardians.py, contacts_from: here the children read
# have no device, so their HGETALLs went).
MOST = 287
MOST_SCRIPTS = 16


@pytest.fixture
async def redis_settings(
    configured: Settings,  # noqa: F811
    url: str,  # noqa: F811
) -> Settings:
    return configured.model_copy(update={"store_url": f"{url}?prefix=bbabs"})


async def test_one_absence_alert_costs_a_bounded_number_of_commands(
    redis_settings: Settings,
    clock: ManualClock,
    url: str,  # noqa: F811
    twilio: TwilioPeer,  # noqa: F811
) -> None:
    async with running(redis_settings, clock) as gw:
        tenant, key = await new_tenant(gw.service, clock, directory())
        store = gw.service.store
        await store.set_relation_flag(
            tenant.id, "c1", "p4", "blocked", True, "court order", "rektor", clock.now()
        )
        await store.upsert_device(
            tenant.id, "p1", Device(id="dev-p1", token="token-p1", platform="android")
        )
        before = await snapshot(url)
        message_id = await gw.post_event(key, recorded("abs-1"))
        await gw.run()
        used = await snapshot(url) - before
        deliveries = await gw.deliveries(tenant.id, message_id)

    handed = [d for d in deliveries if d.status is DeliveryStatus.sent]
    assert {d.recipient_id for d in handed} >= {"p1", "p2"}, deliveries
    print(f"one alert: {used.total} commands, {used.scripts} scripts", used.calls)
    assert used.scripts <= MOST_SCRIPTS, used.calls
    assert used.total <= MOST, used.calls
