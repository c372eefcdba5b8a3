"""Staff sessions end on the server, and a sign-in link works once (no browser: aiohttp
clients with cookie jars of their own, on a whole gateway).

A session cookie is signed, so deleting it in one browser alone would leave any copy
valid for its whole lifetime, with the guardians' numbers in the CSV; a sign-in link
would open any number of sessions until it expires."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest

from gateway.clock import ManualClock
from gateway.models import DirectoryBatch
from gateway.settings import Settings
from tests.conftest import SECRET_KEY
from tests.harness import Gateway, new_tenant, running

STAFF_COOKIE = "budbringer_staff"
DIRECTORY: dict[str, Any] = {
    "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
    "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
    "persons": [
        {
            "id": "t1",
            "role": "staff",
            "given_name": "Tone",
            "family_name": "Lærer",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        },
        {
            "id": "c1",
            "role": "child",
            "given_name": "Kari",
            "family_name": "Elev",
            "birth_date": "2015-03-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        },
        {
            "id": "p1",
            "role": "guardian",
            "given_name": "Anne",
            "family_name": "Berg",
            "phone": "41100001",
        },
    ],
    "relations": [{"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True}],
}


class Live(NamedTuple):
    gateway: Gateway
    api_key: str
    message_id: str

    async def link(self) -> str:
        gw = self.gateway
        async with gw.session.post(
            f"{gw.url}/v1/staff/t1/tokens",
            json={"message_id": self.message_id},
            headers=gw.headers(self.api_key),
        ) as resp:
            assert resp.status == 201, await resp.text()
            link: str = (await resp.json())["link"]
        return link

    @property
    def pages(self) -> list[str]:
        """The staff pages a session opens, the guardians' numbers among them."""
        message = f"{self.gateway.url}/staff/messages/{self.message_id}"
        return [f"{self.gateway.url}/staff/messages", message, message + "/not-reached.csv"]


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    clock = ManualClock()
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'budbringer.db'}",
        outbox_dir=tmp_path / "outbox",
        secret_key=SECRET_KEY,
        public_url="http://127.0.0.1:1",  # replaced below: links name the real port
    )
    async with running(settings, clock) as gw:
        gw.service.ctx.settings = settings.model_copy(update={"public_url": gw.url})
        _, api_key = await new_tenant(gw.service, clock, DirectoryBatch.model_validate(DIRECTORY))
        event = {
            "id": "evt-1",
            "type": "message.created",
            "data": {
                "sender_id": "t1",
                "audience": {"groups": ["g1"]},
                "category": "general",
                "subject": "Tur fredag",
                "body": "Vi går på tur fredag.",
            },
        }
        message_id = await gw.post_event(api_key, event)
        await gw.run()
        yield Live(gw, api_key, message_id)


def browser() -> aiohttp.ClientSession:
    # unsafe: the jar keeps cookies of an IP address (127.0.0.1)
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(session: aiohttp.ClientSession, link: str) -> str:
    """Open a sign-in link; the CSRF field of the page it lands on."""
    async with session.get(link) as resp:
        assert resp.status == 200, await resp.text()
        found = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
    assert found is not None
    return found.group(1)


async def statuses(session: aiohttp.ClientSession, urls: list[str]) -> list[int]:
    codes = []
    for url in urls:
        async with session.get(url) as resp:
            codes.append(resp.status)
            if resp.status == 401:
                assert "Logg inn på nytt" in await resp.text()
    return codes


async def test_sign_out_ends_every_copy_and_every_session_of_the_staff_member(
    live: Live,
) -> None:
    url = live.gateway.url
    async with browser() as shared_pc, browser() as copy, browser() as phone:
        csrf = await sign_in(shared_pc, await live.link())
        cookie = next(c for c in shared_pc.cookie_jar if c.key == STAFF_COOKIE)
        copy.cookie_jar.update_cookies({STAFF_COOKIE: cookie.value})
        await sign_in(phone, await live.link())
        for session in (shared_pc, copy, phone):
            assert await statuses(session, live.pages) == [200, 200, 200]

        async with shared_pc.post(url + "/staff/signout", data={"csrf": csrf}) as resp:
            assert resp.status == 200
            assert "i alle nettlesere" in await resp.text()

        for session in (shared_pc, copy, phone):
            assert await statuses(session, live.pages) == [401, 401, 401]
        # a new sign-in is a new session, which works
        await sign_in(phone, await live.link())
        assert await statuses(phone, live.pages) == [200, 200, 200]
        assert await statuses(copy, live.pages) == [401, 401, 401]


async def test_a_signin_link_works_once(live: Live) -> None:
    link = await live.link()
    async with browser() as first, browser() as second:
        await sign_in(first, link)
        async with second.get(link) as resp:
            assert resp.status == 410
            assert "Innloggingslenken er allerede brukt" in await resp.text()
            assert STAFF_COOKIE not in resp.cookies
        assert await statuses(second, live.pages) == [401, 401, 401]
        assert await statuses(first, live.pages) == [200, 200, 200]


async def test_of_two_simultaneous_uses_of_a_link_one_signs_in(live: Live) -> None:
    link = await live.link()
    async with browser() as one, browser() as two:
        responses = await asyncio.gather(
            *(session.get(link, allow_redirects=False) for session in (one, two))
        )
        codes = sorted(resp.status for resp in responses)
        cookies = [STAFF_COOKIE in resp.cookies for resp in responses]
        for resp in responses:
            resp.release()
    assert codes == [303, 410]
    assert sorted(cookies) == [False, True]
