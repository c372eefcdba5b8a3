"""The staff pages in a real browser (headless Chromium, axe-core), on a whole gateway:
a teacher signs in through a staff sign-in link and sees which children a class
message has not reached, and why; another unit's staff get 403; a tenant key alone
opens nothing; an expired session asks to sign in again; the CSV lists the
children not reached."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser

from gateway.api.pages import load_texts
from gateway.api.staff_pages import _guardian_line, _phone_note
from gateway.auth import create_api_key
from gateway.clock import ManualClock
from gateway.models import DeliveryStatus, DirectoryBatch, Role, Scope
from gateway.notreached import failure_kind
from gateway.settings import Settings
from gateway.tracker import RecipientReach, record_read
from tests.conftest import SECRET_KEY
from tests.harness import Gateway, new_tenant, running
from tests.peers.npm import NODE_MODULES, ensure_node_modules
from tests.test_read_page_browser import (
    AXE,
    AXE_TAGS,
    axe_violations,
    browser,  # noqa: F401  (the module's Chromium, a fixture)
    no_horizontal_scroll,
    open_page,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


def _person(pid: str, role: str, given: str, family: str, **extra: Any) -> dict[str, Any]:
    return {"id": pid, "role": role, "given_name": given, "family_name": family, **extra}


def _child(pid: str, given: str, group: str, **extra: Any) -> dict[str, Any]:
    unit = "u2" if group == "g9" else "u1"
    return _person(
        pid,
        "child",
        given,
        "Elev",
        birth_date="2015-03-01",
        unit_ids=[unit],
        group_ids=[group],
        **extra,
    )


DIRECTORY: dict[str, Any] = {
    "units": [
        {"id": "u1", "kind": "school", "name": "Solvang skole"},
        {"id": "u2", "kind": "school", "name": "Haugen skole"},
    ],
    "groups": [
        {"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"},
        {"id": "g2", "unit_id": "u1", "kind": "class", "name": "5B"},
        {"id": "g9", "unit_id": "u2", "kind": "class", "name": "7C"},
    ],
    "persons": [
        _person("t1", "staff", "Tone", "Lærer", unit_ids=["u1"], group_ids=["g1"]),
        _person("t2", "staff", "Kontor", "Ansatt", unit_ids=["u1"]),  # the office: all u1
        _person("t3", "staff", "Annen", "Skole", unit_ids=["u2"], group_ids=["g9"]),
        _person("t4", "staff", "Bente", "Lærer", unit_ids=["u1"], group_ids=["g2"]),
        _child("c1", "Kari", "g1"),
        _child("c2", "Per", "g1"),
        _child("c3", "Lise", "g1"),
        _child("c4", "Nils", "g2"),
        _child("c5", "Sol", "g1", protection="strictly_confidential"),
        _child("c9", "Vilde", "g9"),
        _person("p1", "guardian", "Anne", "Berg", email="p1@familie.no", phone="41100001"),
        _person("p2", "guardian", "Bjørn", "Berg", email="p2@familie.no"),
        _person("p3", "guardian", "Siri", "Dale", email="p3@familie.no"),
        _person("p4", "guardian", "Jon", "Lund", email="p4@familie.no", phone="41100004"),
        _person("p5", "guardian", "Geir", "Vik", email="p5@familie.no"),
        _person("p9", "guardian", "Nina", "Haug", email="p9@familie.no"),
        _person(
            "p6",
            "guardian",
            "Hemmelig",
            "Skjult",
            email="p6@familie.no",
            phone="41100006",
            protection="strictly_confidential",
        ),
    ],
    "relations": [
        {"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True},
        {"child_id": "c1", "guardian_id": "p2", "parental_responsibility": False},
        {"child_id": "c2", "guardian_id": "p3", "parental_responsibility": True},
        {"child_id": "c3", "guardian_id": "p4", "parental_responsibility": True},
        {"child_id": "c4", "guardian_id": "p5", "parental_responsibility": True},
        {"child_id": "c5", "guardian_id": "p6", "parental_responsibility": True},
        {"child_id": "c9", "guardian_id": "p9", "parental_responsibility": True},
    ],
}


class Live(NamedTuple):
    gateway: Gateway
    api_key: str
    tenant_id: str
    message_id: str
    clock: ManualClock

    async def link(self, staff_id: str, message: bool = True) -> str:
        body = {"message_id": self.message_id} if message else {}
        async with self.gateway.session.post(
            f"{self.gateway.url}/v1/staff/{staff_id}/tokens",
            json=body,
            headers=self.gateway.headers(self.api_key),
        ) as resp:
            assert resp.status == 201, await resp.text()
            link: str = (await resp.json())["link"]
        return link

    @property
    def page(self) -> str:
        return f"{self.gateway.url}/staff/messages/{self.message_id}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("staff-pages")
    clock = ManualClock()
    settings = Settings(
        store_url=f"sqlite:///{tmp / 'budbringer.db'}",
        outbox_dir=tmp / "outbox",
        secret_key=SECRET_KEY,
        public_url="http://127.0.0.1:1",  # replaced below: links name the real port
    )
    async with running(settings, clock) as gw:
        gw.service.ctx.settings = settings.model_copy(update={"public_url": gw.url})
        tenant, api_key = await new_tenant(
            gw.service, clock, DirectoryBatch.model_validate(DIRECTORY)
        )
        await gw.service.store.set_relation_flag(
            tenant.id, "c4", "p5", "blocked", True, "Court order", "rektor", clock.now()
        )
        message_id = await gw.post_event(
            api_key,
            {
                "id": "evt-tur",
                "type": "message.created",
                "data": {
                    "sender_id": "t1",
                    "audience": {"groups": ["g1", "g2"]},
                    "category": "emergency",
                    "subject": "Tur <i>fredag</i>",
                    "body": "Vi går på tur fredag.",
                },
            },
        )
        await gw.run()
        store = gw.service.store
        # p1 reads through the link; p3's only contact point bounces for good.
        await record_read(store, tenant.id, "p1", message_id, clock.now(), via="link")
        for d in await store.list_deliveries(tenant.id, message_id):
            if d.recipient_id == "p3" and d.channel == "email":
                await store.transition(d.id, DeliveryStatus.bounced, clock.now(), reason="x")
        yield Live(gw, api_key, tenant.id, message_id, clock)


async def test_teacher_signs_in_and_sees_who_was_not_reached_and_why(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    context = await browser.new_context()
    try:
        page, status, problems = await open_page(context, await live.link("t1"))
        assert status == 200
        assert page.url == live.page  # the link set the cookie and redirected
        cookies = await context.cookies()
        [cookie] = [c for c in cookies if c["name"] == "budbringer_staff"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["expires"] > 0
        assert await page.evaluate("document.documentElement.lang") == "nb"
        # staff-written text is escaped, not markup
        assert await page.locator("h1").inner_text() == "Tur <i>fredag</i>"
        text = await page.locator("main").inner_text()
        # the sender sees every child the message concerns, Nils of 5B too
        assert "Nils Elev" in text
        missing = await page.locator("section[aria-labelledby=not-reached]").inner_text()
        reached = await page.locator("section[aria-labelledby=reached]").inner_text()
        assert "Kari Elev" in reached and "Anne Berg" in reached and "via lenken" in reached
        assert "Bjørn Berg: får ikke meldingen (ikke foreldreansvar)" in reached
        assert "Per Elev" in missing
        assert "Ingen nummer eller e-post nådde fram" in missing
        assert "Lise Elev" in missing and "Ikke lest ennå" in missing
        # the protected child and guardian appear only by the status API's pseudonym
        assert "Sol" not in text and "Hemmelig" not in text
        assert "Skjermet person (protected-" in missing
        assert "Lest av 1 av 4 foresatte · 4 barn ikke nådd" in text
        assert problems == []
        # children not reached come first
        assert text.index("Ikke nådd") < text.index("Nådd (")
        # the CSV for phoning: only those not reached, with numbers, protected without
        jar = {"budbringer_staff": cookie["value"]}
        async with (
            aiohttp.ClientSession(cookies=jar) as session,
            session.get(live.page + "/not-reached.csv") as resp,
        ):
            assert resp.status == 200
            assert resp.content_type == "text/csv"
            text = (await resp.read()).decode("utf-8-sig")
            # columns by semicolons, as Excel with Norwegian settings reads them
            assert text.startswith("Barn;Klasse;")
            rows = list(csv.reader(io.StringIO(text), delimiter=";"))
        assert rows[0] == ["Barn", "Klasse", "Hvorfor ikke nådd", "Foresatte å ringe"]
        by_name = {r[0]: r for r in rows[1:]}
        assert by_name["Lise Elev"][1:] == ["5A", "Ikke lest ennå", "Jon Lund: +4741100004"]
        assert by_name["Per Elev"][3] == ""
        assert "41100006" not in str(rows)
        await page.close()
    finally:
        await context.close()


async def test_a_teacher_who_did_not_send_it_sees_their_own_class(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    context = await browser.new_context()
    try:
        page, status, _ = await open_page(context, await live.link("t4"))
        assert status == 200
        text = await page.locator("main").inner_text()
        assert "Nils Elev" in text
        assert "Kari" not in text and "Lise" not in text
        await page.close()
    finally:
        await context.close()


async def test_the_office_sees_the_whole_unit_and_the_blocked_child(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    context = await browser.new_context()
    try:
        page, status, _ = await open_page(context, await live.link("t2"))
        assert status == 200
        missing = await page.locator("section[aria-labelledby=not-reached]").inner_text()
        assert "Nils Elev" in missing
        assert "Ingen foresatt har rett til å få meldingen" in missing
        assert "Geir Vik: får ikke meldingen (sperret)" in missing
        await page.close()
    finally:
        await context.close()


async def test_the_office_of_one_unit_sees_only_its_own_children_of_a_wider_message(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    gw = live.gateway
    message_id = await gw.post_event(
        live.api_key,
        {
            "id": "evt-kommune",
            "type": "message.created",
            "data": {"audience": {"units": ["u1", "u2"]}, "subject": "Hele kommunen", "body": "."},
        },
    )
    await gw.run()
    context = await browser.new_context()
    try:
        for staff_id, sees, hidden in (("t2", "Kari Elev", "Vilde"), ("t3", "Vilde Elev", "Kari")):
            body = {"message_id": message_id}
            async with gw.session.post(
                f"{gw.url}/v1/staff/{staff_id}/tokens", json=body, headers=gw.headers(live.api_key)
            ) as resp:
                link = (await resp.json())["link"]
            page, status, _ = await open_page(context, link)
            assert status == 200
            text = await page.locator("main").inner_text()
            assert sees in text and hidden not in text, staff_id
            await page.close()
    finally:
        await context.close()


async def test_staff_of_another_unit_get_403(live: Live, browser: Browser) -> None:  # noqa: F811
    context = await browser.new_context()
    try:
        page, status, _ = await open_page(context, await live.link("t3"))
        assert status == 403
        assert await page.locator("h1").inner_text() == "Du har ikke tilgang"
        assert "Kari" not in await page.locator("main").inner_text()
        await page.close()
    finally:
        await context.close()


async def test_a_tenant_key_alone_opens_no_page(live: Live) -> None:
    async with live.gateway.session.get(
        live.page, headers=live.gateway.headers(live.api_key)
    ) as resp:
        assert resp.status == 401
        assert "Logg inn på nytt" in await resp.text()


async def test_links_for_non_staff_and_unknown_messages_are_refused(live: Live) -> None:
    gw = live.gateway
    for path, body, status in (
        ("/v1/staff/p1/tokens", {}, 403),
        ("/v1/staff/nobody/tokens", {}, 404),
        ("/v1/staff/t1/tokens", {"message_id": "nope"}, 404),
        ("/v1/staff/t1/tokens", {"message_id": 5}, 422),
    ):
        async with gw.session.post(
            gw.url + path, json=body, headers=gw.headers(live.api_key)
        ) as resp:
            assert resp.status == status, (path, await resp.text())
    async with gw.session.post(gw.url + "/v1/staff/t1/tokens", json={}) as resp:
        assert resp.status == 401


async def test_an_expired_session_asks_to_sign_in_again(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    context = await browser.new_context()
    try:
        page, status, _ = await open_page(context, await live.link("t1"))
        assert status == 200
        live.clock.advance(8 * 3600 + 1)
        try:
            response = await page.goto(live.page)
            assert response is not None and response.status == 401
            assert await page.locator("h1").inner_text() == "Logg inn på nytt"
        finally:
            live.clock.advance(-(8 * 3600 + 1))
        # an expired sign-in link too
        link = await live.link("t1")
        live.clock.advance(601)
        try:
            response = await page.goto(link)
            assert response is not None and response.status == 401
            assert await page.locator("h1").inner_text() == "Innloggingslenken virker ikke"
        finally:
            live.clock.advance(-601)
        await page.close()
    finally:
        await context.close()


async def test_sign_out_needs_the_forms_csrf_field(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    context = await browser.new_context()
    try:
        page, _, _ = await open_page(context, await live.link("t1"))
        cookie = next(c for c in await context.cookies() if c["name"] == "budbringer_staff")
        async with (
            aiohttp.ClientSession(cookies={cookie["name"]: cookie["value"]}) as s,
            s.post(live.gateway.url + "/staff/signout", data={"csrf": "x"}) as resp,
        ):
            assert resp.status == 403
        await page.get_by_role("button", name="Logg ut").click()
        assert await page.locator("h1").inner_text() == "Du er logget ut"
        response = await page.goto(live.page)
        assert response is not None and response.status == 401
        await page.close()
    finally:
        await context.close()


@pytest.mark.parametrize("width", [320, 390, 1280])
async def test_axe_and_no_horizontal_scroll(
    live: Live,
    browser: Browser,  # noqa: F811
    width: int,
) -> None:
    ensure_node_modules(AXE)
    link = await live.link("t2")
    # axe_violations opens the URL in a fresh profile: sign in there through a link
    assert await axe_violations(browser, link, width) == []
    context = await browser.new_context(viewport={"width": width, "height": 800})
    try:
        page, _, _ = await open_page(context, await live.link("t2"))
        await page.evaluate("document.documentElement.style.fontSize = '200%'")
        assert await no_horizontal_scroll(page)
        await page.close()
    finally:
        await context.close()
    assert await axe_violations(browser, live.page, width) == []  # the sign-in page


async def test_the_message_list_filters_pages_and_counts(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    # 21 short notes to t1 alone, to page through (newest first)
    for n in range(21):
        live.clock.advance(60)
        await live.gateway.post_event(
            live.api_key,
            {
                "id": f"evt-note-{n}",
                "type": "message.created",
                "data": {
                    "audience": {"staff": ["t1"]},
                    "subject": f"Notat {n:02d}",
                    "body": "Husk møtet.",
                },
            },
        )
    await live.gateway.run()
    context = await browser.new_context()
    try:
        page, status, problems = await open_page(context, await live.link("t1", message=False))
        assert status == 200 and page.url == f"{live.gateway.url}/staff/messages"
        rows = page.locator("main .row")
        assert await rows.count() == 20
        assert await rows.first.locator("a").inner_text() == "Notat 20"
        await page.get_by_role("link", name="Eldre meldinger").click()
        texts = await page.locator("main .rows").inner_text()
        assert "Notat 00" in texts and "Tur <i>fredag</i>" in texts
        assert "Lest av 1 av 4 foresatte · 4 barn ikke nådd" in texts
        assert "Notat 20" not in texts
        # filters: category, subject search, group; each keeps the others
        await page.goto(f"{live.gateway.url}/staff/messages")
        await page.get_by_role("combobox", name="Kategori").select_option("emergency")
        await page.get_by_role("button", name="Vis").click()
        assert await rows.count() == 1
        assert await rows.first.locator("a").inner_text() == "Tur <i>fredag</i>"
        await page.get_by_role("searchbox", name="Søk i emnet").fill("notat")
        await page.get_by_role("button", name="Vis").click()
        assert await rows.count() == 0
        assert "Ingen meldinger å vise." in await page.locator("main").inner_text()
        await page.goto(f"{live.gateway.url}/staff/messages?q=TUR&group=g1")
        assert await rows.count() == 1
        await rows.first.locator("a").click()
        assert page.url == live.page
        assert problems == []
        await page.close()
        # another unit's staff see nothing of it (nor the notes to t1)
        page, status, _ = await open_page(context, await live.link("t3", message=False))
        assert status == 200
        listed = await page.locator("main").inner_text()
        assert "Tur" not in listed and "Notat" not in listed
        await page.close()
    finally:
        await context.close()
    ensure_node_modules(AXE)
    for width in (390, 1280):
        assert await axe_violations(browser, await live.link("t2", message=False), width) == []


async def test_absence_today_and_contact_problems(
    live: Live,
    browser: Browser,  # noqa: F811
) -> None:
    gw, store = live.gateway, live.gateway.service.store
    today = live.clock.now().date().isoformat()
    # an alert for Lise (not explained), an alert for Kari that Anne explains, a report
    for event_id, child in (("evt-abs-lise", "c3"), ("evt-abs-kari", "c1")):
        await gw.post_event(
            live.api_key,
            {
                "id": event_id,
                "type": "absence.recorded",
                "data": {
                    "child_id": child,
                    "date": today,
                    "lesson": {"number": 2, "name": "Matte"},
                    "note": "Sett i gangen <b>før</b> timen",
                },
            },
        )
    await gw.run()
    kari_alert = next(
        m for m in await store.list_messages(live.tenant_id) if m.event_id == "evt-abs-kari"
    )
    token = await _guardian_token(live, "p1")
    async with gw.session.post(
        f"{gw.url}/v1/me/inbox/{kari_alert.id}/absence-reply",
        json={"kind": "sick", "text": "Feber"},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
    # p3's email bounced for good: the planner stops using it, the office is told
    await store.mark_contact_failing(
        live.tenant_id, "p3", "email", "p3@familie.no", "bounced", live.clock.now()
    )
    context = await browser.new_context()
    try:
        page, _, problems = await open_page(context, await live.link("t1", message=False))
        await page.get_by_role("link", name="Fravær i dag").click()
        open_part = await page.locator("section[aria-labelledby=open]").inner_text()
        done_part = await page.locator("section[aria-labelledby=done]").inner_text()
        assert "Lise Elev" in open_part and "time Matte" in open_part
        # escaped, staff only, and isolated (FSI ... PDI) as every text someone typed
        assert "Notat: \u2068Sett i gangen <b>før</b> timen\u2069" in open_part
        assert "Kari Elev" in done_part
        assert "Syk: «\u2068Feber\u2069» (\u2068Anne Berg\u2069," in done_part
        await page.get_by_role("link", name="Kontaktproblemer").click()
        text = await page.locator("main").inner_text()
        assert "Siri Dale" in text and "E-post virker ikke" in text and "Per Elev (5A)" in text
        assert "Anne Berg" not in text
        assert problems == []
        await page.close()
        # another unit's staff see none of it
        page, _, _ = await open_page(context, await live.link("t3", message=False))
        await page.goto(f"{gw.url}/staff/absence")
        assert "Lise" not in await page.locator("main").inner_text()
        await page.goto(f"{gw.url}/staff/contacts")
        assert "Siri" not in await page.locator("main").inner_text()
        await page.close()
    finally:
        await context.close()
    ensure_node_modules(AXE)
    for width in (390, 1280):
        for path in ("absence", "contacts"):
            ctx = await browser.new_context(
                viewport={"width": width, "height": 800}, bypass_csp=True
            )
            try:
                page = await ctx.new_page()
                await page.goto(await live.link("t1", message=False))
                await page.goto(f"{gw.url}/staff/{path}")
                await page.add_script_tag(path=str(NODE_MODULES / AXE))
                result = await page.evaluate(
                    "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
                )
                assert result["violations"] == [], (path, width)
            finally:
                await ctx.close()


async def _guardian_token(live: Live, guardian_id: str) -> str:
    """A parent-app token, issued with the app's key (protected guardians too)."""
    _, app_key = await create_api_key(
        live.gateway.service.store,
        live.tenant_id,
        [Scope.directory, Scope.protected],
        live.clock.now(),
    )
    async with live.gateway.session.post(
        f"{live.gateway.url}/v1/guardians/{guardian_id}/tokens",
        headers=live.gateway.headers(app_key),
    ) as resp:
        assert resp.status == 201
        token: str = (await resp.json())["token"]
    return token


async def test_a_protected_childs_absence_report_is_hidden_on_the_staff_pages(
    live: Live,
) -> None:
    """Sol (strictly confidential) is reported absent by her guardian: the report to her
    teacher names no child in its deliveries, yet its subject names her. The staff
    pages hide it as the status API does, and a search by her name finds nothing."""
    gw = live.gateway
    token = await _guardian_token(live, "p6")
    body = {"id": "r-sol", "child_id": "c5", "date": live.clock.now().date().isoformat()}
    async with gw.session.post(
        f"{gw.url}/v1/me/absences",
        json={**body, "kind": "sick", "text": "Vondt i magen"},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 202, await resp.text()
        report_id = (await resp.json())["message_id"]
    await gw.run()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as staff:
        async with staff.get(await live.link("t1", message=False)) as resp:
            listed = await resp.text()
            assert resp.status == 200
        async with staff.get(f"{gw.url}/staff/messages/{report_id}") as resp:
            shown = await resp.text()
            assert resp.status == 200
        async with staff.get(f"{gw.url}/staff/messages?q=Sol") as resp:
            searched = await resp.text()
    for page in (listed, shown):
        assert "Fravær (skjermet person)" in page
        assert "Fraværsmelding: Sol" not in page
    assert f"messages/{report_id}" in listed
    assert f"messages/{report_id}" not in searched
    async with gw.session.get(
        f"{gw.url}/v1/messages/{report_id}", headers=gw.headers(live.api_key)
    ) as resp:
        assert (await resp.json())["subject"] == "(protected)"


async def test_an_absence_reported_for_tomorrow_shows_tomorrow_not_today(live: Live) -> None:
    """Anne reports Kari absent tomorrow: today's absence page does not list it (the
    heading says today); tomorrow's does, although it was reported the day before."""
    gw = live.gateway
    tomorrow = (live.clock.now() + timedelta(days=1)).date().isoformat()
    async with gw.session.post(
        f"{gw.url}/v1/me/absences",
        json={
            "id": "r-tannlege",
            "child_id": "c1",
            "date": tomorrow,
            "kind": "other",
            "text": "Tannlege",
        },
        headers={"Authorization": f"Bearer {await _guardian_token(live, 'p1')}"},
    ) as resp:
        assert resp.status == 202, await resp.text()
    await gw.run()

    async def absence_page() -> str:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as staff:
            async with staff.get(await live.link("t1", message=False)) as resp:
                assert resp.status == 200
            async with staff.get(f"{gw.url}/staff/absence") as resp:
                assert resp.status == 200
                return await resp.text()

    assert "Tannlege" not in await absence_page()
    live.clock.advance(24 * 3600)
    # the parent's text and name isolated: a direction in them stays inside
    assert "«\u2068Tannlege\u2069» (\u2068" in await absence_page()


async def test_a_message_without_children_says_so_instead_of_all_and_none_reached(
    live: Live,
) -> None:
    """A note to staff alone, and a class message scheduled for tomorrow (no deliveries
    yet): neither says "every child reached" beside "no child reached yet"; the note
    counts its readers as recipients, not guardians; the list shows the planned time."""
    gw = live.gateway
    send_at = (live.clock.now() + timedelta(days=1)).replace(hour=7, minute=30)
    ids = []
    for event_id, data in (
        ("evt-staff-only", {"audience": {"staff": ["t1"]}, "subject": "Personalmøte"}),
        ("evt-later", {"audience": {"groups": ["g1"]}, "subject": "Turdag",
                       "send_at": send_at.isoformat()}),
    ):  # fmt: skip
        ids.append(
            await gw.post_event(
                live.api_key,
                {"id": event_id, "type": "message.created", "data": {**data, "body": "Info."}},
            )
        )
    await gw.run()
    pages = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as staff:
        async with staff.get(await live.link("t1", message=False)) as resp:
            listed = await resp.text()
        for message_id in ids:
            async with staff.get(f"{gw.url}/staff/messages/{message_id}") as resp:
                assert resp.status == 200
                pages.append(await resp.text())
    staff_only, later = pages
    for page in pages:
        assert "Alle barna er nådd." not in page and "Ingen barn er nådd ennå." not in page
    assert "Meldingen gikk ikke til noen barns foresatte." in staff_only
    assert "Lest av 0 av 1 mottakere" in staff_only
    assert "Ikke sendt ennå: barna og de foresatte vises her når meldingen er sendt." in later
    assert "Planlagt sendt" in later and "Planlagt sendt" in listed


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("twilio_30003", "unreachable"),  # phone off: not "the number does not work"
        ("twilio_30005", "number"),
        ("twilio_21211", "number"),
        ("twilio_21610", "opted_out"),  # answered STOP: the number works
        ("fcm_UNREGISTERED", "app_gone"),
        ("gave_up:smtp_452", "gave_up"),
        ("invalid_address", "email_address"),
        ("smtp_550", "other"),
        (None, "other"),
    ],
)
async def test_a_failed_send_says_why_in_words_a_teacher_can_act_on(
    reason: str | None, kind: str
) -> None:
    """Every failure read "nummer eller e-post virker ikke", also a phone that was off
    or a guardian who had answered STOP; the number to phone round with was offered as
    if it worked."""
    assert failure_kind(reason) == kind
    t = load_texts(None, "staff.toml")["nb"]
    recipient = RecipientReach("p1", Role.guardian, ["c1"], {"sms": DeliveryStatus.undelivered})
    line = _guardian_line(recipient, "Per Berg", t, failed={"sms": reason or ""})
    if kind == "other":
        assert line.endswith("SMS ikke levert")
    else:
        assert line.endswith(f"SMS ikke levert: {t['failure'][kind]}")
    note = _phone_note("+4791000001", (reason or "", "+4791000001"), t)
    marked = kind in ("number", "opted_out")
    assert note == (f"+4791000001 ({t['failure'][kind]})" if marked else "+4791000001")
    # a number changed since in the directory is not the one that failed
    assert _phone_note("+4791000002", (reason or "", "+4791000001"), t) == "+4791000002"
