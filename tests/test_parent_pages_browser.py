"""The parent pages in a real browser, on a whole running gateway with a real SMTP
server (aiosmtpd): a guardian opens the read link of a real email, reads, follows
the email's settings link, changes a preference, and the next message follows it.
Then the inbox, the old ``/preferences`` and ``/app/...`` links, CSRF, and axe-core
at phone and desktop width."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext
from yarl import URL

from gateway.api.pages import load_texts
from gateway.api.parent_pages import _days, clock_time, default_day
from gateway.auth import create_tenant
from gateway.demo import DemoClient
from gateway.models import Category, ChannelName, Preferences
from gateway.service import Service
from gateway.settings import load_settings
from tests.conftest import SECRET_KEY
from tests.peers.npm import NODE_MODULES, ensure_node_modules
from tests.peers.smtp import SmtpPeer
from tests.test_e2e_email import texts, wait_final
from tests.test_read_page_browser import (
    AXE,
    AXE_TAGS,
    axe_violations,
    browser,  # noqa: F401  (the module's Chromium, a fixture)
    no_horizontal_scroll,
    open_page,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

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
            "given_name": "Ola",
            "family_name": "Nordmann",
            "phone": "41100001",
            "email": "ola@familie.no",
        },
    ],
    "relations": [{"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True}],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _event(event_id: str, subject: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "message.created",
        "data": {
            "sender_name": "Kontaktlærer 5A",
            "audience": {"groups": ["g1"]},
            "subject": subject,
            "body": "Vi går på tur fredag. Ta med matpakke.",
        },
    }


class Live(NamedTuple):
    url: str
    service: Service
    client: DemoClient
    smtp: SmtpPeer
    tenant_id: str


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("parent-pages")
    port = _free_port()
    async with SmtpPeer() as smtp:
        settings = load_settings(
            store_url=f"sqlite:///{tmp / 'budbringer.db'}",
            outbox_dir=tmp / "outbox",
            port=port,
            public_url=f"http://127.0.0.1:{port}",
            secret_key=SECRET_KEY,
            smtp={"host": smtp.host, "port": smtp.port, "tls": "none", "sender": "s@k.no"},
            dispatch={"poll_interval": 0.05},
        )
        service = Service(settings)
        await service.start()
        tenant, api_key, whsec = await create_tenant(service.store, "Asker", service.clock.now())
        client = DemoClient(f"http://127.0.0.1:{port}", api_key, whsec, tenant.id)
        try:
            await client.call("POST", "/v1/directory", DIRECTORY)
            yield Live(f"http://127.0.0.1:{port}", service, client, smtp, tenant.id)
        finally:
            await client.close()
            await service.stop()


async def _first_message(live: Live) -> Any:
    """The first message, sent once whichever test runs first (the same event id again
    is accepted as the same message), with every delivery final."""
    accepted = await live.client.post_signed_event(_event("evt-1", "Tur fredag"))
    await wait_final(live.client, accepted["message_id"])
    return accepted


def _quiet_hours_later() -> tuple[str, str]:
    """A quiet-hours window that starts two hours from now (Norwegian time)."""
    now = datetime.now(ZoneInfo("Europe/Oslo"))
    start, end = now + timedelta(hours=2), now + timedelta(hours=3)
    return f"{start:%H}:00", f"{end:%H}:00"


def _links(live: Live, index: int) -> dict[str, str]:
    """The links in the text part of the index-th email received."""
    body = texts(live.smtp.received[index].message)
    found = re.findall(r"https?://\S+", body)
    read = next(u for u in found if "/r/" in u)
    settings = next(u for u in found if "/p/" in u)
    return {"read": read, "settings": settings}


async def _deliveries(live: Live, message_id: str) -> set[tuple[str, str]]:
    status = await wait_final(live.client, message_id)
    return {(d["channel"], d["status"]) for d in status["deliveries"]}


async def test_a_parent_reads_changes_a_preference_and_the_next_message_follows_it(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    first = await _first_message(live)
    channels = {c for c, _ in await _deliveries(live, first["message_id"])}
    assert channels == {"inapp", "sms", "email"}
    assert len(live.smtp.received) == 1
    links = _links(live, 0)
    assert links["settings"].endswith("?to=preferences")
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    try:
        # read, from the real email's link
        page, status, problems = await open_page(context, links["read"])
        assert status == 200
        await page.get_by_role("button", name="Jeg har lest meldingen").click()
        await page.wait_for_url("**?done=1")
        status_after = await live.client.call("GET", f"/v1/messages/{first['message_id']}")
        assert status_after["summary"]["guardians_read"] == 1
        # the email's settings link opens the settings in a short session
        response = await page.goto(links["settings"])
        assert response is not None and response.status == 200
        assert page.url == f"{live.url}/p/preferences"
        cookie = next(c for c in await context.cookies() if c["name"] == "budbringer_parent")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        assert await page.locator("h1").inner_text() == "Varslingsinnstillinger"
        assert "Fraværsvarsler kan ikke slås av" in await page.locator("main").inner_text()
        assert "Beredskapsvarsler kan ikke slås av" in await page.locator("main").inner_text()
        messages = page.get_by_role("group", name="Meldinger", exact=True)
        email = messages.get_by_role("checkbox", name="E-post")
        assert await email.is_checked()  # the default routing, as it is today
        # absence cannot be switched off: unticking everything is refused, plainly
        absence = page.get_by_role("group", name="Fraværsvarsler")
        for box in await absence.get_by_role("checkbox").all():
            await box.uncheck()
        await page.get_by_role("button", name="Lagre").click()
        assert (
            "Velg minst én måte å få fraværsvarsler på."
            in await page.get_by_role("alert").inner_text()
        )
        await absence.get_by_role("checkbox", name="SMS").check()
        await email.uncheck()
        await page.get_by_role("radio", name="English").check()
        # quiet hours that do not hold up the next message (it is sent at once)
        start, end = _quiet_hours_later()
        await page.get_by_role("textbox", name="Fra (tt:mm)").fill(start)
        await page.get_by_role("textbox", name="Til (tt:mm)").fill(end)
        await page.get_by_role("button", name="Lagre").click()
        await page.wait_for_url("**/p/preferences?saved=1")
        # the page is now in English, the guardian's choice
        assert await page.evaluate("document.documentElement.lang") == "en"
        assert (
            "The changes apply from the next message"
            in await page.get_by_role("status").inner_text()
        )
        assert problems == []
        await page.close()
    finally:
        await context.close()
    prefs = await live.service.store.get_preferences(live.tenant_id, "p1")
    assert prefs is not None and (prefs.quiet_start, prefs.quiet_end) == (start, end)
    # the next message follows the choice: no email, and in English
    second = await live.client.post_signed_event(_event("evt-2", "Foreldremøte"))
    status = await wait_final(live.client, second["message_id"])
    channels = {d["channel"] for d in status["deliveries"]}
    assert channels == {"inapp", "sms"}
    deliveries = await live.service.store.list_deliveries(live.tenant_id, second["message_id"])
    assert {d.language for d in deliveries} == {"en"}
    assert len(live.smtp.received) == 1


async def _signed_in(browser: Browser, live: Live, **kwargs: Any) -> BrowserContext:  # noqa: F811
    context = await browser.new_context(**kwargs)
    page = await context.new_page()
    await page.goto(_links(live, 0)["settings"].replace("?to=preferences", ""))
    await page.close()
    return context


async def test_inbox_and_the_old_links_land_on_working_pages(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    await _first_message(live)
    context = await _signed_in(browser, live)
    try:
        page, status, problems = await open_page(context, f"{live.url}/app")
        assert status == 200 and page.url == f"{live.url}/p/inbox"
        rows = page.locator("main .row")
        assert await rows.count() >= 1
        assert "Tur fredag" in await page.locator("main").inner_text()
        # a message of the inbox opens on the read page
        await page.get_by_role("link", name="Tur fredag").click()
        assert "/r/" in page.url
        assert await page.locator("h1").inner_text() == "Tur fredag"
        # the old links, with a session
        response = await page.goto(f"{live.url}/preferences")
        assert response is not None and page.url.startswith(f"{live.url}/p/preferences")
        message_id = (await live.service.store.list_inbox(live.tenant_id, "p1"))[0].message_id
        response = await page.goto(f"{live.url}/app/messages/{message_id}")
        assert response is not None and response.status == 200 and "/r/" in page.url
        # another guardian's or an unknown message: not found
        response = await page.goto(f"{live.url}/p/messages/nope")
        assert response is not None and response.status == 404
        # an old push link with path steps for an id: the inbox, not a path built of it
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            cookies={c["name"]: c["value"] for c in await context.cookies()},
        ) as s:
            for odd in ("..%2F..%2F..%2F%2Fevil.example", "%2E", "%2E%2E", "a%20b"):
                url = URL(f"{live.url}/app/messages/{odd}", encoded=True)
                async with s.get(url, allow_redirects=False) as resp:
                    assert resp.status == 303, (odd, resp.status)
                    assert resp.headers["Location"] == "../../p/inbox", odd
        assert problems == []
        await page.close()
    finally:
        await context.close()


async def test_a_problem_inside_a_session_is_in_the_guardians_language(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    """An Arabic-reading guardian got "Meldingen er ikke tilgjengelig" with its English
    below, and no way back to their pages, for a message that was withdrawn or an alert
    already closed. Before a session (a broken link) the language is unknown: nb + en."""
    await _first_message(live)
    store = live.service.store
    before = await store.get_preferences(live.tenant_id, "p1") or Preferences()
    await store.set_preferences(live.tenant_id, "p1", before.model_copy(update={"language": "ar"}))
    ensure_node_modules(AXE)
    context = await _signed_in(
        browser, live, viewport={"width": 390, "height": 844}, bypass_csp=True
    )
    try:
        page, status, _ = await open_page(context, f"{live.url}/p/messages/nope")
        assert status == 404
        html = page.locator("html")
        assert (await html.get_attribute("lang"), await html.get_attribute("dir")) == ("ar", "rtl")
        assert await page.locator("h1").inner_text() == "الرسالة غير متاحة"
        assert "Meldingen" not in await page.locator("main").inner_text()
        await page.get_by_role("link", name="الرسائل").click()  # on to the inbox
        assert page.url == f"{live.url}/p/inbox"
        page, status, _ = await open_page(context, f"{live.url}/p/messages/nope")
        await page.add_script_tag(path=str(NODE_MODULES / AXE))
        result = await page.evaluate(
            "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
        )
        assert result["violations"] == []
        # a form whose session field is stale: "could not save", in Arabic
        cookie = next(c for c in await context.cookies() if c["name"] == "budbringer_parent")
        async with (
            aiohttp.ClientSession(
                cookie_jar=aiohttp.CookieJar(unsafe=True), cookies={cookie["name"]: cookie["value"]}
            ) as s,
            s.post(f"{live.url}/p/preferences", data={"csrf": "stale"}) as resp,
        ):
            assert resp.status == 403
            assert "تعذّر الحفظ" in await resp.text()
            for odd in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "x"):
                async with s.get(f"{live.url}/p/inbox", params={"before": odd}) as page_resp:
                    assert page_resp.status == 200, odd  # makes no sense: the first page
    finally:
        await context.close()
        await store.set_preferences(live.tenant_id, "p1", before)  # the module's guardian
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{live.url}/p/" + "A" * 64) as resp,
    ):
        assert resp.status == 404  # no session: Bokmål and English
        text = await resp.text()
        assert "Åpne lenken i meldingen" in text and "Open the link in your message" in text


async def test_forms_need_the_sessions_csrf_field_and_a_session(live: Live) -> None:
    await _first_message(live)
    # unsafe: the jar keeps cookies of an IP address (127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as anonymous:
        async with anonymous.post(
            f"{live.url}/p/preferences", data={"language": "nn"}, allow_redirects=False
        ) as resp:
            assert resp.status == 401
        async with anonymous.get(_links(live, 0)["settings"]) as resp:
            assert resp.status == 200  # signed in through the link
        async with anonymous.post(
            f"{live.url}/p/preferences", data={"language": "nn", "csrf": "forged"}
        ) as resp:
            assert resp.status == 403
    prefs = await live.service.store.get_preferences(live.tenant_id, "p1")
    assert prefs is None or prefs.language != "nn"
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{live.url}/p/" + "A" * 64) as resp,
    ):
        assert resp.status == 404


@pytest.mark.parametrize("width", [320, 390, 1280])
async def test_axe_finds_no_violations_and_nothing_scrolls_sideways(
    live: Live,
    browser: Browser,  # noqa: F811
    width: int,
) -> None:
    ensure_node_modules(AXE)
    await _first_message(live)
    settings = _links(live, 0)["settings"]
    pages = {
        "inbox": settings.replace("?to=preferences", ""),
        "preferences": settings,
        "no session": f"{live.url}/preferences",
    }
    found = {name: await axe_violations(browser, url, width) for name, url in pages.items()}
    assert found == {name: [] for name in pages}
    context = await browser.new_context(viewport={"width": width, "height": 800})
    try:
        for url in pages.values():
            page, _, _ = await open_page(context, url)
            await page.evaluate("document.documentElement.style.fontSize = '200%'")
            assert await no_horizontal_scroll(page), url
            await page.close()
    finally:
        await context.close()


async def test_a_parent_answers_an_alert_and_reports_tomorrow(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    await _first_message(live)
    alert = await live.client.post_signed_event(
        {
            "id": "evt-absence-1",
            "type": "absence.recorded",
            "data": {"child_id": "c1", "lesson": {"number": 2, "name": "Matte"}},
        }
    )
    await wait_final(live.client, alert["message_id"])
    context = await _signed_in(browser, live, viewport={"width": 390, "height": 844})
    try:
        page, status, problems = await open_page(context, f"{live.url}/p/absence")
        assert status == 200
        alerts = page.locator("section[aria-labelledby=alerts]")
        form = alerts.locator("form")
        assert await form.count() == 1
        await form.get_by_role("radio", name=re.compile("^(Lege|Doctor)")).check()
        await form.get_by_role("textbox").fill("Tannlege <kl. 9>")
        await form.get_by_role("button").click()
        await page.wait_for_url("**/p/absence?done=answered")
        assert await page.get_by_role("status").count() == 1
        assert await alerts.locator("form").count() == 0  # answered: no longer waiting
        status_json = await live.client.call("GET", f"/v1/messages/{alert['message_id']}")
        [explanation] = status_json["absence"]["explanations"]
        assert explanation["kind"] == "appointment"
        assert explanation["text"] == "Tannlege <kl. 9>"
        # report tomorrow as sick (the form has today chosen until 15:00, then tomorrow;
        # no reason: the browser asks for one rather than sending "sick" for a dentist)
        report = page.locator("section[aria-labelledby=report] form")
        await report.get_by_role("radio", name=re.compile("^(I morgen|Tomorrow)")).check()
        assert await report.locator("input[name=kind]:checked").count() == 0
        await report.get_by_role("radio", name=re.compile("^(Syk|Sick)")).check()
        await report.get_by_role("button").click()
        await page.wait_for_url("**/p/absence?done=reported")
        reports = [
            m
            for m in await live.service.store.list_messages(live.tenant_id)
            if m.event_type == "absence.reported"
        ]
        [reported] = reports
        record = await live.service.store.get_absence(live.tenant_id, reported.id)
        assert record is not None and record.child_id == "c1"
        tomorrow = (datetime.now(ZoneInfo("Europe/Oslo")) + timedelta(days=1)).date()
        assert record.data["date"] == tomorrow.isoformat() and record.data["kind"] == "sick"
        assert problems == []
        # a forged day or child is refused with the page, not a 500
        cookie = next(c for c in await context.cookies() if c["name"] == "budbringer_parent")
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(
            cookie_jar=jar, cookies={cookie["name"]: cookie["value"]}
        ) as s:
            for data in (
                {"csrf": csrf, "child": "c1", "day": "2020-01-01", "kind": "sick"},
                {
                    "csrf": csrf,
                    "child": "someone-else",
                    "day": tomorrow.isoformat(),
                    "kind": "sick",
                },
                {"csrf": csrf, "child": "c1", "day": tomorrow.isoformat(), "kind": "bored"},
            ):
                async with s.post(f"{live.url}/p/absence/report", data=data) as resp:
                    assert resp.status == 422, data
            async with s.post(
                f"{live.url}/p/absence/nope/answer", data={"csrf": csrf, "kind": "sick"}
            ) as resp:
                assert resp.status == 404
            async with s.post(
                f"{live.url}/p/absence/report", data={"csrf": "forged", "child": "c1"}
            ) as resp:
                assert resp.status == 403
            # refused (no reason chosen): the page again, at the form's own URL, with its
            # links and actions working from there and what was written kept
            async with s.post(
                f"{live.url}/p/absence/report",
                data={"csrf": csrf, "child": "c1", "day": tomorrow.isoformat(), "text": "Kl. 9"},
            ) as resp:
                assert resp.status == 422
                again = await resp.text()
            assert ">Kl. 9</textarea>" in again
            assert 'action="../../p/absence/report"' in again
            assert 'href="../../p/inbox"' in again
            assert f'value="{tomorrow.isoformat()}" checked' in again
            # a bell and a direction override from the phone's keyboard: left out, not
            # refused (the API refuses them; a form keeps what the parent meant)
            today = datetime.now(ZoneInfo("Europe/Oslo")).date().isoformat()
            typed = {"csrf": csrf, "child": "c1", "day": today, "kind": "sick"}
            async with s.post(
                f"{live.url}/p/absence/report",
                data={**typed, "text": "Feber\x07 \u202eigen\u202c\r\nhjemme"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 303
            texts = [
                (await live.service.store.get_absence(live.tenant_id, m.id)).data.get("text")  # type: ignore[union-attr]
                for m in await live.service.store.list_messages(live.tenant_id)
                if m.event_type == "absence.reported"
            ]
            assert "Feber igen\nhjemme" in texts
        await page.close()
    finally:
        await context.close()
    ensure_node_modules(AXE)
    for width in (390, 1280):
        ctx = await browser.new_context(viewport={"width": width, "height": 800}, bypass_csp=True)
        try:
            page = await ctx.new_page()
            await page.goto(_links(live, 0)["settings"].replace("?to=preferences", ""))
            await page.goto(f"{live.url}/p/absence")
            await page.add_script_tag(path=str(NODE_MODULES / AXE))
            result = await page.evaluate(
                "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
            )
            assert result["violations"] == [], width
            await page.evaluate("document.documentElement.style.fontSize = '200%'")
            assert await no_horizontal_scroll(page)
        finally:
            await ctx.close()


async def test_the_settings_work_by_keyboard_alone_with_a_visible_focus(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    await _first_message(live)
    context = await _signed_in(browser, live)
    try:
        page, _, _ = await open_page(context, f"{live.url}/p/preferences")
        sms = page.locator("input[name=ch_reminder][value=sms]")
        was = await sms.is_checked()

        async def tab_to(selector: str) -> None:
            for _ in range(60):
                await page.keyboard.press("Tab")
                if await page.evaluate(f"document.activeElement.matches({selector!r})"):
                    outline = await page.evaluate(
                        "(() => { const s = getComputedStyle(document.activeElement);"
                        " return [s.outlineStyle, s.outlineWidth]; })()"
                    )
                    assert outline == ["solid", "3px"], selector
                    return
            raise AssertionError(f"Tab never reached {selector}")

        await tab_to("input[name=ch_reminder][value=sms]")
        await page.keyboard.press("Space")
        await tab_to("button[type=submit]")
        await page.keyboard.press("Enter")
        await page.wait_for_url("**/p/preferences?saved=1")
        prefs = await live.service.store.get_preferences(live.tenant_id, "p1")
        assert prefs is not None
        assert (ChannelName.sms in prefs.channels[Category.reminder]) is not was
        await page.close()
    finally:
        await context.close()


@pytest.mark.parametrize(
    ("utc", "chosen"),
    [
        ("2026-12-08T06:30:00+00:00", "2026-12-08"),  # 07:30 in Oslo: a sick child, today
        ("2026-12-08T13:59:00+00:00", "2026-12-08"),  # 14:59
        ("2026-12-08T14:00:00+00:00", "2026-12-09"),  # 15:00: the evening before, tomorrow
        ("2026-12-08T23:30:00+00:00", "2026-12-09"),  # 00:30 on the 9th: the 9th
    ],
)
async def test_the_report_form_chooses_today_in_the_morning_and_tomorrow_after_school(
    utc: str, chosen: str
) -> None:
    """It chose tomorrow always: a parent reporting a sick child at 07:30 sent the wrong day
    unless they noticed."""
    assert default_day(datetime.fromisoformat(utc)) == chosen


@pytest.mark.parametrize(
    ("utc", "chosen"),
    [
        ("2026-12-11T13:59:00+00:00", "2026-12-11"),  # Friday 14:59: today
        ("2026-12-11T15:30:00+00:00", "2026-12-14"),  # Friday 16:30: Monday, not Saturday
        ("2026-12-12T09:00:00+00:00", "2026-12-14"),  # Saturday morning: Monday
        ("2026-12-13T18:00:00+00:00", "2026-12-14"),  # Sunday evening: Monday (tomorrow)
    ],
)
async def test_the_report_form_chooses_the_next_school_day_before_a_weekend(
    utc: str, chosen: str
) -> None:
    """After 15:00 on a Friday it chose Saturday, and Monday was not on the form at all:
    a parent could not report Monday's dentist on Friday evening."""
    now = datetime.fromisoformat(utc)
    assert default_day(now) == chosen
    texts = load_texts(None, "parent.toml", "parent")["nb"]
    offered = dict(_days(now, "nb", texts))
    assert chosen in offered  # the chosen day is one the form offers and accepts
    if now.weekday() in (4, 5):  # tomorrow is a weekend day: Monday is offered, named
        assert offered["2026-12-14"] == "Mandag 14. desember 2026"
    assert len(offered) == (3 if now.weekday() in (4, 5) else 2)


@pytest.mark.parametrize(
    ("typed", "time"),
    [
        ("٢١:٠٠", "21:00"),  # Arabic-Indic digits from an Arabic keyboard
        ("۰۷:۳۰", "07:30"),  # Persian digits
        ("21.00", "21:00"),  # the Norwegian way
        ("7:30", "07:30"),
        (" 07:30 ", "07:30"),
        ("kl 7", "kl 7"),  # not a time: left for the form to refuse with how to write it
    ],
)
async def test_a_time_typed_the_way_a_phone_or_a_norwegian_writes_it_is_read(
    typed: str, time: str
) -> None:
    assert clock_time(typed) == time
