"""Which day is today on the staff absence page: the day where the child's unit is, and
any alert or report for that day, however long ago it was reported and however much
was sent since (the store finds records by day, tests/contract/test_absence.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.clock import ManualClock
from gateway.models import DirectoryBatch
from gateway.settings import Settings
from tests.conftest import SECRET_KEY
from tests.harness import Gateway, new_tenant, running

pytestmark = pytest.mark.asyncio(loop_scope="module")

# 12:00 UTC: 13:00 on Friday 27 November in Oslo, already 01:00 on Saturday the 28th
# in Auckland.
NOON_UTC = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _person(pid: str, role: str, given: str, **extra: Any) -> dict[str, Any]:
    return {"id": pid, "role": role, "given_name": given, "family_name": "Test", **extra}


def _directory(time_zone: str) -> DirectoryBatch:
    child = {"birth_date": "2015-03-01", "unit_ids": ["u1"], "group_ids": ["g1"]}
    return DirectoryBatch.model_validate(
        {
            "units": [{"id": "u1", "kind": "school", "name": "Skolen", "time_zone": time_zone}],
            "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
            "persons": [
                _person("t1", "staff", "Tone", unit_ids=["u1"], group_ids=["g1"]),
                _person("c1", "child", "Kari", **child),
                _person("c2", "child", "Per", **child),
                _person("c3", "child", "Lise", **child),
                _person("p1", "guardian", "Anne", email="p1@familie.no"),
            ],
            "relations": [
                {"child_id": c, "guardian_id": "p1", "parental_responsibility": True}
                for c in ("c1", "c2", "c3")
            ],
        }
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("absence-days")
    settings = Settings(
        store_url=f"sqlite:///{tmp / 'budbringer.db'}",
        outbox_dir=tmp / "outbox",
        secret_key=SECRET_KEY,
        public_url="http://127.0.0.1:1",
    )
    async with running(settings, ManualClock(NOON_UTC)) as gw:
        gw.service.ctx.settings = settings.model_copy(update={"public_url": gw.url})
        yield gw


async def _absence_page(gw: Gateway, api_key: str) -> str:
    async with gw.session.post(
        f"{gw.url}/v1/staff/t1/tokens", json={}, headers=gw.headers(api_key)
    ) as resp:
        assert resp.status == 201, await resp.text()
        link = (await resp.json())["link"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as staff:
        async with staff.get(link) as resp:
            assert resp.status == 200
        async with staff.get(f"{gw.url}/staff/absence") as resp:
            assert resp.status == 200
            return await resp.text()


async def _report(gw: Gateway, api_key: str, event_id: str, child: str, day: str) -> None:
    await gw.post_event(
        api_key,
        {
            "id": event_id,
            "type": "absence.reported",
            "data": {"child_id": child, "guardian_id": "p1", "date": day, "text": event_id},
        },
    )


async def test_today_is_the_day_where_the_childs_unit_is(gateway: Gateway) -> None:
    """A school in Auckland: at 13:00 in Oslo it is already Saturday there. A mark
    without a date is for Saturday and shows; a report for Friday (Oslo's today) does
    not."""
    gw = gateway
    _, api_key = await new_tenant(gw.service, gw.clock, _directory("Pacific/Auckland"))
    await gw.post_event(
        api_key,
        {"id": "mark-kari", "type": "absence.recorded", "data": {"child_id": "c1"}},
    )
    await _report(gw, api_key, "fredag-per", "c2", "2026-11-27")
    await _report(gw, api_key, "lordag-lise", "c3", "2026-11-28")
    await gw.run()
    page = await _absence_page(gw, api_key)
    assert "Kari Test" in page
    assert "lordag-lise" in page
    assert "fredag-per" not in page and "Per Test" not in page


async def test_a_report_made_weeks_ahead_shows_on_its_day_after_many_messages(
    gateway: Gateway,
) -> None:
    """Reported three weeks ahead, with 2,100 other events after it: the page still
    finds it on the day (it used to look through the newest 2,000 messages only)."""
    gw = gateway
    _, api_key = await new_tenant(gw.service, gw.clock, _directory("Europe/Oslo"))
    await _report(gw, api_key, "leirskole", "c1", "2026-12-18")
    for i in range(2100):
        await gw.post_event(
            api_key,
            {
                "id": f"note-{i}",
                "type": "message.created",
                "data": {
                    "sender_id": "t1",
                    "audience": {"staff": ["t1"]},
                    "subject": f"Notat {i}",
                    "body": "Til orientering.",
                },
            },
        )
        gw.clock.advance(1)
    assert "leirskole" not in await _absence_page(gw, api_key)
    gw.clock.set(datetime(2026, 12, 18, 8, 0, tzinfo=UTC))
    assert "leirskole" in await _absence_page(gw, api_key)
