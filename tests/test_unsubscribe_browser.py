"""The unsubscribe page (``/u/{token}``) in a real browser, like the read page: Debian's
headless Chromium driven by Playwright, checked with axe-core (WCAG 2.1 A/AA and best
practices) at 1024 and 320 px, with the page's Content-Security-Policy in force."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import NamedTuple

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser

from gateway.api.app import create_app
from gateway.api.context import AppContext
from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.models import Category, DirectoryBatch
from gateway.readlinks import make_read_token
from gateway.settings import Settings
from gateway.store import Store
from tests.conftest import DIRECTORY, SECRET_KEY
from tests.peers.npm import ensure_node_modules
from tests.test_read_page_browser import (
    AXE,
    axe_violations,
    browser,  # noqa: F401  (the module's Chromium, a fixture)
    no_horizontal_scroll,
    open_page,
)
from tests.test_unsubscribe import seed

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


class Live(NamedTuple):
    url: str
    store: Store
    tenant_id: str
    links: dict[str, str]  # name -> /u/ link


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    from gateway.store.sqlite import SqliteStore

    tmp = tmp_path_factory.mktemp("unsubscribe-page")
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
    ctx = AppContext(settings=settings, store=store, clock=clock, secret=SECRET_KEY.encode())
    runner = web.AppRunner(create_app(ctx))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    links = {}
    for name, category, language in (
        ("nb", Category.general, "nb"),
        ("en", Category.reminder, "en"),
        ("absence", Category.absence, "nn"),
    ):
        seeded = await seed(
            store, clock, tenant.id, category=category, language=language, event_id=f"e-{name}"
        )
        token = make_read_token(
            SECRET_KEY.encode(), seeded.email_id, clock.now() + timedelta(days=30)
        )
        links[name] = f"{url}/u/{token}"
    try:
        yield Live(url, store, tenant.id, links)
    finally:
        await runner.cleanup()
        await store.close()


async def test_the_form_works_in_a_browser_and_every_page_is_accessible(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    ensure_node_modules(AXE)
    ctx = await browser.new_context(viewport={"width": 320, "height": 640})
    try:
        page, status, blocked = await open_page(ctx, live.links["nb"])
        assert (status, blocked) == (200, [])
        assert await no_horizontal_scroll(page)
        await page.get_by_role("button", name="Meld meg av e-post").click()
        await page.get_by_role("status").wait_for()
        assert (
            "Du får ikke lenger meldinger på e-post"
            in await page.get_by_role("status").inner_text()
        )
        assert await page.evaluate("document.documentElement.lang") == "nb"
    finally:
        await ctx.close()
    prefs = await live.store.get_preferences(live.tenant_id, "p1")
    assert prefs is not None and "email" not in prefs.channels[Category.general]

    found = {}
    for name, url, width in (
        ("question (en)", live.links["en"], 1024),
        ("question at 320 px", live.links["en"], 320),
        ("done", live.links["nb"], 1024),
        ("cannot be switched off", live.links["absence"], 1024),
        ("forged", f"{live.url}/u/forged", 1024),
    ):
        found[name] = await axe_violations(browser, url, width)
    assert found == {name: [] for name in found}
