"""The read-link page in a real browser: Debian's headless Chromium driven by Playwright.

The app runs for real on 127.0.0.1 with a SQLite store; the browser opens links,
presses the button and is checked with axe-core (WCAG 2.1 A/AA rules and axe's
best practices), at a 320 px wide viewport and with text at 200 %.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and axe-core, which
``npm ci`` installs into tests/peers/node_modules from the package-lock there.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
)

from gateway.api.app import create_app
from gateway.api.context import AppContext
from gateway.attachments import Attachments
from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.filestore import FolderFiles
from gateway.models import DeliveryStatus, DirectoryBatch
from gateway.readlinks import make_read_token
from gateway.settings import Settings
from gateway.store import Store
from tests.conftest import DIRECTORY, SECRET_KEY
from tests.peers.npm import NODE_MODULES, ensure_node_modules
from tests.test_attachments import minimal_pdf, photo_with_gps
from tests.test_readlinks import Seeded, seed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
AXE = "axe-core/axe.min.js"  # in tests/peers/node_modules
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
BUTTON = {
    "nb": "Jeg har lest meldingen",
    "nn": "Eg har lese meldinga",
    "en": "I have read the message",
}
BODY = (
    "Velkommen til foreldremøte tirsdag kl. 18 i gymsalen.\n\n"
    "Vi snakker om turen til Vestmarka, og om leksehjelp. Se "
    "https://solvang.skole.example.no/foreldremote/2026/informasjon-til-foresatte-om-turen"
    " for mer.\n\nHilsen Rektor Hansen"
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


class Live(NamedTuple):
    url: str
    store: Store
    clock: ManualClock
    deliveries: dict[str, Seeded]  # language -> the message's deliveries to p1

    def link(self, language: str) -> str:
        delivery_id = self.deliveries[language].email_id
        token = make_read_token(
            SECRET_KEY.encode(), delivery_id, self.clock.now() + timedelta(days=30)
        )
        return f"{self.url}/r/{token}"

    async def status(self, delivery_id: str) -> DeliveryStatus:
        delivery = await self.store.get_delivery(delivery_id)
        assert delivery is not None
        return delivery.status


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    from gateway.store.sqlite import SqliteStore

    tmp = tmp_path_factory.mktemp("read-page")
    settings = Settings(
        store_url=f"sqlite:///{tmp / 'budbringer.db'}",
        outbox_dir=tmp / "outbox",
        secret_key=SECRET_KEY,
    )
    clock = ManualClock()
    store = SqliteStore(str(settings.sqlite_path))
    await store.open()
    tenant, _, _ = await create_tenant(store, "Asker kommune", clock.now())
    await store.apply_directory(tenant.id, DirectoryBatch.model_validate(DIRECTORY))
    deliveries = {}
    for language in ("nb", "nn", "en", "nb-keyboard", "nb-axe"):
        deliveries[language] = await seed(
            store,
            clock,
            tenant.id,
            language=language.split("-")[0],
            subject="Foreldremøte for 5A tirsdag 1. desember",
            body=BODY,
            event_id=f"evt-{language}",
        )
    # The axe page's message has two attachments (issue 16): the page lists them.
    files = Attachments(store, FolderFiles(tmp / "files"), settings.attachments, clock)
    uploaded = [
        await files.upload(tenant.id, _chunks(minimal_pdf()), "Lapp til turen.pdf"),
        await files.upload(tenant.id, _chunks(photo_with_gps()), "Bilde fra Vestmarka.jpg"),
    ]
    await store.attachments.claim(tenant.id, [a.id for a in uploaded], "m-evt-nb-axe", clock.now())
    ctx = AppContext(
        settings=settings,
        store=store,
        clock=clock,
        secret=SECRET_KEY.encode(),
        attachments=files,
    )
    runner = web.AppRunner(create_app(ctx))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Live(f"http://{host}:{port}", store, clock, deliveries)
    finally:
        await runner.cleanup()
        await store.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile with the page's CSP in force."""
    opened = await browser.new_context(viewport={"width": 1024, "height": 768})
    try:
        yield opened
    finally:
        await opened.close()


async def open_page(context: BrowserContext, url: str) -> tuple[Page, int, list[str]]:
    """Go to ``url``; return the page, the HTTP status and what the CSP blocked."""
    page = await context.new_page()
    problems: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        # Chromium reports CSP blocks on the console ("Refused to apply ... because it
        # violates the following Content Security Policy directive ...").
        if "Content Security Policy" in msg.text:
            problems.append(msg.text)

    page.on("console", on_console)
    response = await page.goto(url)
    assert response is not None
    return page, response.status, problems


async def no_horizontal_scroll(page: Page) -> bool:
    return bool(
        await page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )


async def axe_violations(browser: Browser, url: str, width: int = 1024) -> list[dict[str, Any]]:
    # axe is injected as a script, which the page's CSP forbids: this profile bypasses it.
    ctx = await browser.new_context(viewport={"width": width, "height": 800}, bypass_csp=True)
    try:
        page = await ctx.new_page()
        await page.goto(url)
        await page.add_script_tag(path=str(NODE_MODULES / AXE))
        result = await page.evaluate(
            "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
        )
    finally:
        await ctx.close()
    assert result["passes"], "axe ran no rules"
    violations: list[dict[str, Any]] = result["violations"]
    return [
        {"id": v["id"], "help": v["help"], "nodes": [n["html"] for n in v["nodes"]]}
        for v in violations
    ]


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("language", ["nb", "nn", "en"])
async def test_page_renders_in_the_guardians_language_and_records_opened(
    live: Live, context: BrowserContext, language: str
) -> None:
    seeded = live.deliveries[language]
    page, status, problems = await open_page(context, live.link(language))
    assert status == 200
    assert await page.evaluate("document.documentElement.lang") == language
    assert await page.locator("h1").count() == 1
    assert await page.locator("main").count() == 1
    assert await page.locator("h1").inner_text() == "Foreldremøte for 5A tirsdag 1. desember"
    assert "Kari" in await page.locator("main").inner_text()
    button = page.get_by_role("button", name=BUTTON[language])
    assert await button.is_visible()
    # the stylesheet loaded under the CSP (no inline style, nothing blocked)
    colour = await button.evaluate("b => getComputedStyle(b).backgroundColor")
    assert colour == "rgb(11, 87, 208)"
    assert problems == []
    # a GET, as a link scanner makes, is at most "opened"
    assert await live.status(seeded.email_id) is DeliveryStatus.opened
    assert await live.status(seeded.inapp_id) is DeliveryStatus.delivered
    await page.close()


async def test_pressing_the_button_records_the_read(
    live: Live, context: BrowserContext, tmp_path: Path
) -> None:
    seeded = live.deliveries["nb"]
    page, _, problems = await open_page(context, live.link("nb"))
    await page.get_by_role("button", name=BUTTON["nb"]).click()
    await page.wait_for_url("**?done=1")
    assert await page.get_by_role("status").inner_text() == "Takk! Meldingen er merket som lest."
    assert await page.get_by_role("button").count() == 0
    assert await live.status(seeded.email_id) is DeliveryStatus.read
    assert await live.status(seeded.inapp_id) is DeliveryStatus.read  # via record_read
    assert problems == []
    shot = tmp_path / "read-page-done.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    await page.close()


async def test_the_page_leads_to_the_guardians_own_pages(
    live: Live, context: BrowserContext
) -> None:
    """Below the message: a link to all of the guardian's messages, absence and settings
    (the same token under /p/ opens their session), in their language."""
    page, _, problems = await open_page(context, live.link("nn"))
    await page.get_by_role("link", name="Alle meldingar, fråvær og varslingsinnstillingar").click()
    await page.wait_for_url("**/p/inbox")
    assert await page.locator("h1").count() == 1
    assert "Foreldremøte for 5A tirsdag 1. desember" in await page.locator("main").inner_text()
    assert problems == []
    await page.close()


async def test_keyboard_only_with_a_visible_focus(live: Live, context: BrowserContext) -> None:
    seeded = live.deliveries["nb-keyboard"]
    page, _, _ = await open_page(context, live.link("nb-keyboard"))
    await page.keyboard.press("Tab")
    focused = await page.evaluate("document.activeElement.tagName")
    assert focused == "BUTTON"
    outline = await page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.outlineWidth]; })()"
    )
    assert outline == ["solid", "3px"]
    await page.keyboard.press("Enter")
    await page.wait_for_url("**?done=1")
    assert await live.status(seeded.email_id) is DeliveryStatus.read
    await page.close()


async def test_forged_link_gets_the_friendly_page(live: Live, context: BrowserContext) -> None:
    good = live.link("en")
    forged = good[:-5] + ("AAAAA" if not good.endswith("AAAAA") else "BBBBB")
    page, status, problems = await open_page(context, forged)
    assert status == 404
    assert await page.evaluate("document.documentElement.lang") == "nb"
    assert await page.locator("h1").inner_text() == "Lenken virker ikke"
    assert await page.locator('[lang="en"] h2').inner_text() == "This link does not work"
    assert problems == []
    await page.close()


@pytest.mark.parametrize("text_size", ["100%", "200%"])
async def test_no_horizontal_scrolling_at_320_px(
    live: Live, browser: Browser, text_size: str
) -> None:
    ctx = await browser.new_context(viewport={"width": 320, "height": 640})
    try:
        for url in (live.link("en"), f"{live.url}/r/forged"):
            page = await ctx.new_page()
            await page.goto(url)
            # text-only zoom (WCAG 1.4.4) on top of the narrow viewport (1.4.10)
            await page.evaluate(f"document.documentElement.style.fontSize = '{text_size}'")
            assert await no_horizontal_scroll(page), url
            if "forged" not in url:
                box = await page.get_by_role("button").bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 320
            await page.close()
    finally:
        await ctx.close()


async def test_the_page_lists_the_attachments_and_downloads_them(
    live: Live, context: BrowserContext
) -> None:
    page, status, blocked = await open_page(context, live.link("nb-axe"))
    assert status == 200 and blocked == []
    section = page.get_by_role("region", name="Vedlegg")
    links = section.get_by_role("link")
    pdf, photo = await links.all_inner_texts()
    assert pdf == "Last ned Lapp til turen.pdf (1 kB)"
    assert re.fullmatch(
        r"Last ned Bilde fra Vestmarka\.jpg \(\d+ kB\)", photo
    )  # noise: size varies
    async with page.expect_download() as waiting:
        await links.first.click()
    download = await waiting.value
    assert download.suggested_filename == "Lapp til turen.pdf"
    assert Path(await download.path()).read_bytes() == minimal_pdf()
    await page.close()


async def test_axe_finds_no_violations(live: Live, browser: Browser) -> None:
    ensure_node_modules(AXE)
    link = live.link("nb-axe")
    pages = {
        "message": link,
        "message at 320 px": link,
        "error": f"{live.url}/r/forged",
    }
    found = {}
    for name, url in pages.items():
        found[name] = await axe_violations(browser, url, 320 if "320" in name else 1024)
    # the thank-you page, after a real confirmation
    ctx = await browser.new_context()
    try:
        page = await ctx.new_page()
        await page.goto(link)
        await page.get_by_role("button").click()
        await page.wait_for_url("**?done=1")
        found["thank you"] = await axe_violations(browser, page.url)
    finally:
        await ctx.close()
    assert found == {name: [] for name in found}
