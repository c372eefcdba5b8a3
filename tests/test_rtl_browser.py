"""Issue 17: right to left in a real browser. A guardian who reads Arabic gets a Bokmål
message through a running gateway (SMTP to aiosmtpd); its email, the read page and the
parent pages open in Debian's headless Chromium with ``dir="rtl"``, a mirrored layout
(logical CSS properties), names isolated in ``<bdi>``, no axe-core violations (WCAG 2.1
A/AA and best practices) and screenshots at 390 and 1280 px.

Needs ``/usr/bin/chromium`` and axe-core in tests/peers/node_modules (see
tests/test_read_page_browser.py)."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from gateway.auth import create_tenant
from gateway.demo import DemoClient
from gateway.service import Service
from gateway.settings import load_settings
from tests.conftest import SECRET_KEY
from tests.peers.npm import NODE_MODULES, ensure_node_modules
from tests.peers.smtp import SmtpPeer
from tests.test_e2e_email import texts, wait_final
from tests.test_read_page_browser import (
    AXE,
    AXE_TAGS,
    browser,  # noqa: F401  (the module's Chromium, a fixture)
    no_horizontal_scroll,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

WIDTHS = (390, 1280)
SUBJECT = "Tur til skogen fredag"
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
            "given_name": "Amal",
            "family_name": "Hassan",
            "phone": "41100001",
            "email": "amal@familie.no",
            "language": "ar",
        },
    ],
    "relations": [{"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True}],
}


class Live(NamedTuple):
    url: str
    html: str  # the Arabic email's HTML part
    read: str  # its read link
    settings: str  # its settings link (opens a parent session)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    ensure_node_modules(AXE)
    tmp: Path = tmp_path_factory.mktemp("rtl")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    async with SmtpPeer() as smtp:
        settings = load_settings(
            store_url=f"sqlite:///{tmp / 'budbringer.db'}",
            outbox_dir=tmp / "outbox",
            port=port,
            public_url=url,
            secret_key=SECRET_KEY,
            smtp={"host": smtp.host, "port": smtp.port, "tls": "none", "sender": "s@k.no"},
            dispatch={"poll_interval": 0.05},
        )
        service = Service(settings)
        await service.start()
        tenant, api_key, whsec = await create_tenant(service.store, "Asker", service.clock.now())
        client = DemoClient(url, api_key, whsec, tenant.id)
        try:
            await client.call("POST", "/v1/directory", DIRECTORY)
            accepted = await client.post_signed_event(
                {
                    "id": "evt-rtl",
                    "type": "message.created",
                    "data": {
                        "sender_name": "Kontaktlærer 5A",
                        "audience": {"groups": ["g1"]},
                        "subject": SUBJECT,
                        "body": "Vi går på tur fredag. Ta med matpakke.",
                    },
                }
            )
            await wait_final(client, accepted["message_id"])
            [received] = smtp.received
            part = received.message.get_body(preferencelist=("html",))
            assert part is not None
            found = re.findall(r"https?://[^\s\u2069]+", texts(received.message))
            read = next(u for u in found if "/r/" in u)
            prefs = next(u for u in found if "/p/" in u)
            yield Live(url, str(part.get_content()), read, prefs)
        finally:
            await client.close()
            await service.stop()


async def axe(page: Page) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(NODE_MODULES / AXE))
    result = await page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
    )
    assert result["passes"], "axe ran no rules"
    return [
        {"id": v["id"], "help": v["help"], "nodes": [n["html"] for n in v["nodes"]]}
        for v in result["violations"]
    ]


async def is_rtl(page: Page) -> bool:
    attributes = await page.evaluate(
        "[document.documentElement.lang, document.documentElement.dir,"
        " getComputedStyle(document.body).direction]"
    )
    return bool(attributes == ["ar", "rtl", "rtl"])


async def shoot(page: Page, out: Path, name: str) -> None:
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        assert await no_horizontal_scroll(page), (name, width)
        path = out / f"{name}-ar-{width}.png"
        await page.screenshot(path=str(path), full_page=True)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_the_arabic_email_is_right_to_left_and_accessible(
    live: Live,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    context = await browser.new_context(viewport={"width": 390, "height": 900})
    try:
        page = await context.new_page()
        await page.set_content(live.html)
        assert await is_rtl(page)
        # the Bokmål subject and text keep their own direction inside the RTL email
        assert await page.locator("h1").evaluate("e => getComputedStyle(e).direction") == "ltr"
        header = page.locator("main p").first
        assert await header.locator("bdi").inner_text() == "Kontaktlærer 5A, Solvang skole"
        # mirrored: our Arabic header line starts at the right edge of the column
        main = await page.locator("main").bounding_box()
        box = await header.locator("bdi").bounding_box()
        assert main is not None and box is not None
        assert box["x"] + box["width"] < main["x"] + main["width"] - 16
        assert await axe(page) == []
        await shoot(page, tmp_path, "email")
    finally:
        await context.close()


async def test_the_read_page_in_arabic(
    live: Live,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    context = await browser.new_context(viewport={"width": 390, "height": 900}, bypass_csp=True)
    try:
        page = await context.new_page()
        response = await page.goto(live.read)
        assert response is not None and response.status == 200
        assert await is_rtl(page)
        assert await page.locator(".from bdi").inner_text() == "Kontaktlærer 5A, Solvang skole"
        assert await page.locator(".concerns bdi").inner_text() == "Kari"
        assert await page.locator("h1").evaluate("e => getComputedStyle(e).direction") == "ltr"
        button = page.get_by_role("button", name="لقد قرأت الرسالة")
        assert await button.is_visible()
        # the button sits at the start of the line: the right, in Arabic
        section = await page.locator(".confirm").bounding_box()
        box = await button.bounding_box()
        assert section is not None and box is not None
        assert box["x"] > section["x"] + section["width"] / 3
        await shoot(page, tmp_path, "read")
        assert await axe(page) == []
    finally:
        await context.close()


@pytest.mark.parametrize("name", ["inbox", "preferences", "absence"])
async def test_the_parent_pages_in_arabic(
    live: Live,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
    name: str,
) -> None:
    context = await browser.new_context(viewport={"width": 390, "height": 900}, bypass_csp=True)
    try:
        page = await context.new_page()
        response = await page.goto(live.settings)  # opens the parent session
        assert response is not None and response.status == 200
        response = await page.goto(f"{live.url}/p/{name}")
        assert response is not None and response.status == 200
        assert await is_rtl(page)
        if name == "inbox":
            # the row's accent border is on the inline start: the right, in Arabic
            row = page.locator(".row").first
            widths = await row.evaluate(
                "e => [getComputedStyle(e).borderRightWidth, getComputedStyle(e).borderLeftWidth]"
            )
            assert widths == ["8px", "1px"]
            assert await row.locator("a").evaluate("e => getComputedStyle(e).direction") == "ltr"
            # one unread message, by the Arabic plural rule (Babel): its own form for 1
            assert await page.locator(".summary").inner_text() == "رسالة واحدة غير مقروءة"
        if name == "preferences":
            # every language by its own name, each marked with its language and direction
            arabic = page.locator('span[lang="ar"]')
            assert await arabic.inner_text() == "العربية"
            assert await arabic.get_attribute("dir") == "rtl"
            assert await page.locator('span[lang="se"]').inner_text() == "Davvisámegiella"
        if name == "absence":
            assert await page.locator("label bdi").first.inner_text() == "Kari"
        await shoot(page, tmp_path, f"parent-{name}")
        assert await axe(page) == []
    finally:
        await context.close()


async def test_the_arabic_digest_email_is_right_to_left_and_accessible(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The daily digest in Arabic, as the digest job renders it: right to left like the
    message email (its text started at the left, its list indented on the left), the
    Bokmål subjects and names isolated."""
    from tests.test_sms_budget import delivery, message, renderer

    render = renderer.__wrapped__()  # type: ignore[attr-defined]
    email = delivery("email", "ar")
    items = [(message(subject=s), email) for s in ("Juleavslutning", "Foreldremøte")]
    html = render.render_digest(items, email).html or ""
    context = await browser.new_context(viewport={"width": 390, "height": 900})
    try:
        page = await context.new_page()
        await page.set_content(html)
        assert await is_rtl(page)
        padding = await page.locator("ul").evaluate(
            "e => [getComputedStyle(e).paddingRight, getComputedStyle(e).paddingLeft]"
        )
        assert padding == ["20px", "0px"]
        # the inbox link, alone on its line, starts at the right edge of the column
        main = await page.locator("main").bounding_box()
        link = await page.locator("main > p a").last.bounding_box()
        assert main is not None and link is not None
        assert link["x"] > main["x"] + main["width"] / 2
        first = page.locator("li").first
        assert await first.locator("bdi").first.inner_text() == "Solvang skole"
        assert await first.locator("a").evaluate("e => getComputedStyle(e).direction") == "ltr"
        assert await axe(page) == []
        await shoot(page, tmp_path, "digest")
    finally:
        await context.close()
