"""Contract of the alert phones: which alerts of which tenants went to a phone number
(SMS answers are matched against them). Speaks only the Protocol."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.models import AlertPhone
from gateway.store import Store

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
PHONE = "+4741100001"


def row(tenant: str, message: str, person: str, hours: float, phone: str = PHONE) -> AlertPhone:
    return AlertPhone(
        phone=phone,
        tenant_id=tenant,
        message_id=message,
        person_id=person,
        at=T0 + timedelta(hours=hours),
    )


async def test_alerts_of_every_tenant_for_one_number(store: Store) -> None:
    await store.add_alert_phones([row("asker", "m1", "p1", 0), row("asker", "m1", "p2", 0, "+47")])
    await store.add_alert_phones([row("baerum", "m9", "g7", 1), row("asker", "m1", "p1", 2)])
    found = await store.alert_phones(PHONE, T0 - timedelta(hours=1))
    assert found == [row("asker", "m1", "p1", 0), row("baerum", "m9", "g7", 1)]  # kept once
    assert await store.alert_phones(PHONE, T0 + timedelta(minutes=30)) == [
        row("baerum", "m9", "g7", 1)
    ]
    assert await store.alert_phones("+4799999999", T0 - timedelta(days=9)) == []
    await store.add_alert_phones([])


async def test_old_rows_are_dropped(store: Store) -> None:
    await store.add_alert_phones([row("asker", "m1", "p1", 0)])
    await store.add_alert_phones([row("asker", "m2", "p1", 72)])
    assert await store.alert_phones(PHONE, T0 - timedelta(days=9)) == [row("asker", "m2", "p1", 72)]
