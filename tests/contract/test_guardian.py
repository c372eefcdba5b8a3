"""Store contract: preferences and devices (port GuardianStore).

These tests speak only the ports: nothing here may know which backend runs.
"""

from __future__ import annotations

from gateway.models import (
    Category,
    ChannelName,
    Device,
    DirectoryBatch,
    Preferences,
)
from gateway.store import Store

from .builders import T0, A, B, at


async def test_guardian_preferences_survive_import(school: Store) -> None:
    mine = Preferences(
        language="en",
        channels={Category.general: [ChannelName.push], Category.emergency: [ChannelName.sms]},
        quiet_start="21:00",
        quiet_end="07:00",
    )
    await school.set_preferences(A, "p1", mine)
    imported = {"p1": Preferences(language="nn"), "p2": Preferences(language="nn")}
    counts = await school.apply_directory(A, DirectoryBatch(preferences=imported))
    assert counts["preferences"] == 1
    assert await school.get_preferences(A, "p1") == mine
    assert await school.get_preferences(A, "p2") == Preferences(language="nn")
    # a later import replaces an imported row, never a guardian's
    await school.apply_directory(A, DirectoryBatch(preferences={"p2": Preferences(language="en")}))
    assert await school.get_preferences(A, "p2") == Preferences(language="en")
    # and the guardian may take over an imported row
    await school.set_preferences(A, "p2", mine)
    await school.apply_directory(A, DirectoryBatch(preferences={"p2": Preferences(language="nn")}))
    assert await school.get_preferences(A, "p2") == mine
    assert await school.get_preferences(B, "p2") is None


async def test_devices(school: Store) -> None:
    phone = Device(id="d1", token="tok-1", platform="android", app_version="1.2", last_seen=T0)
    tablet = Device(id="d2", fid="fid-2", platform="ios")
    await school.upsert_device(A, "p1", phone)
    await school.upsert_device(A, "p1", tablet)
    assert await school.list_devices(A, "p1") == [phone, tablet]
    newer = phone.model_copy(update={"token": "tok-1b", "last_seen": at(60)})
    await school.upsert_device(A, "p1", newer)
    assert await school.list_devices(A, "p1") == [newer, tablet]
    assert await school.list_devices(B, "p1") == []
    assert await school.remove_device(B, "p1", "d1") is False
    assert await school.remove_device(A, "p1", "d1") is True
    assert await school.remove_device(A, "p1", "d1") is False
    assert await school.list_devices(A, "p1") == [tablet]


async def test_a_token_belongs_to_one_device(school: Store) -> None:
    await school.upsert_device(A, "p1", Device(id="d1", token="shared", platform="android"))
    handed_on = Device(id="d9", token="shared", platform="android")
    await school.upsert_device(A, "p2", handed_on)
    assert await school.list_devices(A, "p1") == []
    assert await school.list_devices(A, "p2") == [handed_on]
