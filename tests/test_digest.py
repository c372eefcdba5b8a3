"""Issue 16, the daily digest: a guardian who takes general and reminder messages as a
digest at 18:00 gets ONE email with the day's messages at 18:00 Oslo time — across the
night the clocks go back, with two workers on one store — never with an emergency, and a
read from the digest's link counts for that message. Through the HTTP API of whole
gateways (tests/harness.py) with a real SMTP peer, on a ManualClock."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.constants import SUPPORTED_LANGUAGES
from gateway.digest_plan import digest_time
from gateway.locales import FSI, PDI, RTL_LANGUAGES
from gateway.models import Category, Delivery, DirectoryBatch, Preferences
from gateway.readlinks import make_read_token
from gateway.settings import Settings
from tests.conftest import DIRECTORY, SECRET_KEY
from tests.contract.conftest import REDIS_URL, forget_keys, require_redis
from tests.harness import Gateway, running
from tests.peers.smtp import SmtpPeer

OSLO = "Europe/Oslo"
SENDER = "Asker kommune <varsel@asker.kommune.no>"
# Saturday 24 October 2026, 20:00 in Oslo (CEST, UTC+2); the clocks go back that night.
SATURDAY_EVENING = datetime(2026, 10, 24, 18, 0, tzinfo=UTC)
# Sunday 25 October 18:00 in Oslo is 17:00 UTC (CET, UTC+1), not 16:00.
SUNDAY_1800 = datetime(2026, 10, 25, 17, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- when


def prefs(**digest: str) -> Preferences:
    return Preferences(digest=digest)


def test_the_digest_time_follows_the_wall_clock_across_the_dst_change() -> None:
    chosen = prefs(general="18:00", reminder="07:30")
    assert digest_time(chosen, OSLO, Category.general, SATURDAY_EVENING) == SUNDAY_1800
    before = datetime(2026, 10, 24, 15, 59, tzinfo=UTC)  # 17:59 CEST: today's digest
    assert digest_time(chosen, OSLO, Category.general, before) == datetime(
        2026, 10, 24, 16, 0, tzinfo=UTC
    )
    assert digest_time(chosen, OSLO, Category.reminder, SATURDAY_EVENING) == datetime(
        2026, 10, 25, 6, 30, tzinfo=UTC
    )


@pytest.mark.parametrize("category", [Category.emergency, Category.absence, Category.confidential])
def test_emergency_absence_and_confidential_are_never_held(category: Category) -> None:
    chosen = Preferences.model_validate({"digest": {"general": "18:00", "reminder": "18:00"}})
    assert digest_time(chosen, OSLO, category, SATURDAY_EVENING) is None
    assert digest_time(prefs(), OSLO, Category.general, SATURDAY_EVENING) is None
    assert digest_time(None, OSLO, Category.general, SATURDAY_EVENING) is None


def test_no_message_is_held_more_than_a_day() -> None:
    # 18:00:30 on the Saturday: the next 18:00 is 24 h 59 min away (the day has 25 hours).
    late = datetime(2026, 10, 24, 16, 0, 30, tzinfo=UTC)
    assert digest_time(prefs(general="18:00"), OSLO, Category.general, late) == late + timedelta(
        days=1
    )


@pytest.mark.parametrize(
    "digest", [{"absence": "18:00"}, {"emergency": "18:00"}, {"general": "25:00"}, {"general": "6"}]
)
def test_only_general_and_reminder_at_a_clock_time_are_accepted(digest: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Preferences.model_validate({"digest": digest})


# --------------------------------------------------------------------------- end to end


@dataclass
class Rig:
    workers: list[Gateway]
    smtp: SmtpPeer
    clock: ManualClock
    key: str
    tenant_id: str

    @property
    def gw(self) -> Gateway:
        return self.workers[0]

    async def call(
        self, method: str, path: str, body: Any = None, key: str | None = None
    ) -> tuple[int, Any]:
        headers = self.gw.headers(key or self.key)
        async with self.gw.session.request(
            method, self.gw.url + path, json=body, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def post(self, event_id: str, subject: str, category: str) -> str:
        event = {
            "id": event_id,
            "type": "message.created",
            "data": {
                "audience": {"groups": ["g1"]},
                "category": category,
                "subject": subject,
                "body": "Se meldingen.",
            },
        }
        status, answer = await self.call("POST", "/v1/events", event)
        assert status == 202, answer
        return str(answer["message_id"])

    async def run_all(self) -> None:
        """Both workers at once, as two processes would."""
        await asyncio.gather(*(w.run() for w in self.workers))


@pytest.fixture(params=["redis", "sqlite"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    prefix = ""
    if request.param == "redis":
        require_redis()
        prefix = f"bbtest-digest-{uuid.uuid4().hex[:12]}"
        store_url = f"{REDIS_URL}?prefix={prefix}"
    else:
        store_url = f"sqlite:///{tmp_path / 'budbringer.db'}"
    clock = ManualClock(SATURDAY_EVENING)
    try:
        async with SmtpPeer() as smtp, AsyncExitStack() as stack:
            settings = Settings(
                store_url=store_url,
                outbox_dir=tmp_path / "outbox",
                secret_key=SECRET_KEY,
                channels=["inapp", "email"],
                smtp={"host": smtp.host, "port": smtp.port, "tls": "none", "sender": SENDER},
            )
            # Two gateways on one store: each its own connections and queue consumer.
            workers = [await stack.enter_async_context(running(settings, clock)) for _ in "ab"]
            store = workers[0].service.store
            tenant, key, _ = await create_tenant(store, "Asker kommune", clock.now())
            await store.apply_directory(tenant.id, DirectoryBatch.model_validate(DIRECTORY))
            yield Rig(workers, smtp, clock, key, tenant.id)
    finally:
        if prefix:
            forget_keys(prefix)


async def choose_digest(rig: Rig, at: str, language: str | None = None) -> None:
    status, token = await rig.call("POST", "/v1/guardians/p1/tokens")
    assert status == 201, token
    wanted: dict[str, Any] = {"digest": {"general": at, "reminder": at}}
    if language is not None:
        wanted["language"] = language
    status, answer = await rig.call("PUT", "/v1/me/preferences", wanted, key=token["token"])
    assert status == 200, answer
    status, answer = await rig.call("GET", "/v1/me/preferences", key=token["token"])
    assert answer["digest"] == {"general": at, "reminder": at}


async def test_three_messages_make_one_digest_at_1800_oslo_time_across_the_dst_change(
    rig: Rig,
) -> None:
    await choose_digest(rig, "18:00")
    ids = [
        await rig.post("evt-1", "Tur mandag", "general"),
        await rig.post("evt-2", "Husk gymtøy", "reminder"),
        await rig.post("evt-3", "Foreldremøte", "general"),
    ]
    urgent = await rig.post("evt-4", "Skolen er stengt", "emergency")
    await rig.run_all()
    # The emergency goes at once; the three wait (in the inbox at once, though).
    assert [m.message["Subject"] for m in rig.smtp.received] == ["VIKTIG: Skolen er stengt"]

    _, view = await rig.call("GET", f"/v1/messages/{ids[0]}")
    (email,) = [d for d in view["deliveries"] if d["channel"] == "email"]
    assert email["waiting_for"] == "digest at 2026-10-25T17:00:00+00:00"
    rig.clock.set(SUNDAY_1800 - timedelta(hours=1))  # 18:00 at the summer offset: not yet
    await rig.run_all()
    assert len(rig.smtp.received) == 1
    rig.clock.set(SUNDAY_1800 - timedelta(seconds=1))
    await rig.run_all()
    assert len(rig.smtp.received) == 1

    rig.clock.set(SUNDAY_1800)
    await rig.run_all()
    await rig.run_all()
    digests = rig.smtp.received[1:]
    assert len(digests) == 1, [m.message["Subject"] for m in digests]
    digest = digests[0].message
    assert digest["Subject"] == "Dagens meldinger (3)"
    text = digest.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    for subject in ("Tur mandag", "Husk gymtøy", "Foreldremøte"):
        assert subject in text
    assert "Skolen er stengt" not in text
    assert "Solvang skole (Kari): Tur mandag" in text
    links = dict(re.findall(r"- Solvang skole \(Kari\): ([^\n]+)\n +Les meldingen: (\S+)", text))
    assert set(links) == {"Tur mandag", "Husk gymtøy", "Foreldremøte"}

    # Each held delivery moved on: the email ones sent, the SMS ones folded into it.
    for message_id in ids:
        deliveries = await rig.gw.deliveries(rig.tenant_id, message_id)
        statuses = {d.channel: (d.status.value, d.reason) for d in deliveries}
        assert statuses["email"][0] == "sent" and statuses["inapp"][0] == "delivered"
        assert statuses["sms"] == ("cancelled", "in_digest")
    assert {d.channel for d in await rig.gw.deliveries(rig.tenant_id, urgent)} >= {"email"}

    # A read through the digest's link counts for that message (the page's confirm).
    path = "/r/" + links["Husk gymtøy"].rpartition("/r/")[2]
    async with rig.gw.session.get(rig.gw.url + path) as resp:
        page = await resp.text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    async with rig.gw.session.post(
        rig.gw.url + path, data={"csrf": csrf.group(1)}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
    _, view = await rig.call("GET", f"/v1/messages/{ids[1]}")
    assert view["guardians"][0]["read_at"] is not None
    _, other = await rig.call("GET", f"/v1/messages/{ids[0]}")
    assert other["guardians"][0]["read_at"] is None

    rig.clock.set(SUNDAY_1800 + timedelta(days=1))  # nothing is left for the next day
    await rig.run_all()
    assert len(rig.smtp.received) == 2


async def digest_parts(rig: Rig, language: str) -> tuple[str, str]:
    """The text and HTML parts of p1's 18:00 digest of two messages, in ``language``, as
    the SMTP peer received them."""
    await choose_digest(rig, "18:00", language)
    await rig.post("evt-1", "Juleavslutning", "general")
    await rig.post("evt-2", "Foreldremøte", "reminder")
    await rig.run_all()
    rig.clock.set(SUNDAY_1800)
    await rig.run_all()
    (received,) = rig.smtp.received
    text = received.message.get_body(("plain",))
    html = received.message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())  # type: ignore[attr-defined]


async def test_the_digest_email_shows_no_isolate_characters(rig: Rig) -> None:
    """Names, numbers and links filled into our texts carry Unicode isolates (FSI ...
    PDI) until a render is finished: dropped in a left-to-right language's text, <bdi>
    in HTML. The digest was not finished, so both parts said "kontakt hos
    \u2068Solvang skole\u2069." (shown as boxes by some mail clients)."""
    text, html = await digest_parts(rig, "nb")
    assert "registrert som kontakt hos Solvang skole.\n" in text
    for part in (text, html):
        assert FSI not in part and PDI not in part


async def test_the_arabic_digest_email_is_right_to_left_as_every_email(rig: Rig) -> None:
    """The digest's HTML is laid out as the message email's: ``dir`` beside ``lang``,
    logical CSS (the list's indent on the inline start: the right, in Arabic), names in
    <bdi>; its text keeps names and links isolated (FSI ... PDI), as every Arabic
    email's text does."""
    text, html = await digest_parts(rig, "ar")
    assert '<html lang="ar" dir="rtl">' in html
    assert not re.search(r"-(left|right)\b|:\s*(left|right)\b", html)
    assert FSI not in html and PDI not in html
    assert html.count("<bdi>Solvang skole</bdi>") == 3  # two senders and the footer
    assert html.count("<bdi>Kari</bdi>") == 2
    assert f"{FSI}Solvang skole{PDI} ({FSI}Kari{PDI}): Juleavslutning" in text
    links = re.findall(r"(.)(https?://[^\s\u2069]+)(.)", text)
    assert len(links) == 4  # two read links, the inbox and the settings
    assert all((before, after) == (FSI, PDI) for before, _, after in links), links


async def test_without_a_digest_every_message_goes_at_once(rig: Rig) -> None:
    await rig.post("evt-1", "Tur mandag", "general")
    await rig.run_all()
    assert [m.message["Subject"] for m in rig.smtp.received] == ["Tur mandag"]


async def test_the_preferences_page_sets_and_clears_the_digest(rig: Rig) -> None:
    message_id = await rig.post("evt-1", "Tur mandag", "general")
    await rig.run_all()
    (email,) = [
        d for d in await rig.gw.deliveries(rig.tenant_id, message_id) if d.channel == "email"
    ]
    token = make_read_token(SECRET_KEY.encode(), email.id, rig.clock.now() + timedelta(days=1))
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(f"{rig.gw.url}/p/{token}?to=preferences") as resp:
            assert resp.status == 200
            page = await resp.text()
        assert "Daglig sammendrag" in page
        field = re.search(r'<input type="hidden" name="([^"]+)" value="([^"]+)">', page)
        assert field is not None
        form = {field.group(1): field.group(2), "ch_absence": ["sms", "email"]}
        async with browser.post(
            f"{rig.gw.url}/p/preferences", data={**form, "digest_general": "25:00"}
        ) as resp:
            assert resp.status == 422
            assert "tt:mm" in await resp.text()
        async with browser.post(
            f"{rig.gw.url}/p/preferences", data={**form, "digest_reminder": "07:30"}
        ) as resp:
            assert resp.status == 200  # after the 303 back to the page
            assert 'value="07:30"' in await resp.text()
        stored = await rig.gw.service.store.get_preferences(rig.tenant_id, "p1")
        assert stored is not None and stored.digest == {"reminder": "07:30"}
        async with browser.post(f"{rig.gw.url}/p/preferences", data=form) as resp:
            assert resp.status == 200
        stored = await rig.gw.service.store.get_preferences(rig.tenant_id, "p1")
        assert stored is not None and stored.digest == {}


@pytest.mark.parametrize(
    ("language", "title"),
    [
        ("nb", "Dagens meldinger (3)"),
        ("nn", "Dagens meldingar (3)"),
        ("en", "Today's messages (3)"),
    ],
)
def test_a_digest_by_sms_or_push_lists_the_messages_in_the_guardians_language(
    language: str, title: str
) -> None:
    from tests.test_sms_budget import delivery, message, renderer

    render = renderer.__wrapped__()  # type: ignore[attr-defined]
    subjects = ("Tur mandag", "Husk gymtøy", "Foreldremøte")
    for channel in ("sms", "push"):
        items = [(message(subject=s), delivery(channel, language)) for s in subjects]
        out = render.render_digest(items, items[0][1])
        assert out.subject == title and out.language == language
        for subject in subjects:
            assert subject in out.text
            # push: the notification's body; SMS: the short fallback is title and link only
            assert (subject in (out.short or "")) == (channel == "push")
        if channel == "sms":
            assert "/p/" in out.text  # one link: the guardian's inbox


@pytest.mark.parametrize("language", sorted(set(SUPPORTED_LANGUAGES) - RTL_LANGUAGES))
def test_a_digest_in_a_left_to_right_language_carries_no_isolates(language: str) -> None:
    """Finished as every render is: the isolates around names, numbers and links are
    dropped in a left-to-right language (an SMS or push is no place for them either)."""
    from tests.test_sms_budget import delivery, message, renderer

    render = renderer.__wrapped__()  # type: ignore[attr-defined]
    for channel in ("email", "sms", "push"):
        items = [(message(subject=s), delivery(channel, language)) for s in ("Tur", "Gym")]
        out = render.render_digest(items, items[0][1])
        every = (out.subject, out.text, out.html or "", out.short or "")
        assert not any(FSI in part or PDI in part for part in every), (channel, every)


@pytest.mark.parametrize("language", sorted(RTL_LANGUAGES))
def test_a_right_to_left_digest_email_is_laid_out_as_the_message_email(language: str) -> None:
    """Each right-to-left language's digest opens as its message email does (``lang``
    and ``dir``), with the isolates turned into <bdi> in HTML and kept around names and
    links in the text."""
    from tests.test_sms_budget import PUBLIC_URL, delivery, message, renderer

    render = renderer.__wrapped__()  # type: ignore[attr-defined]
    email = delivery("email", language)
    items = [(message(subject=s), email) for s in ("Tur", "Gym")]
    out = render.render_digest(items, email)
    html = out.html or ""
    opening = (render.render(message(), email).html or "").split("\n")[1]
    assert html.split("\n")[1] == opening == f'<html lang="{language}" dir="rtl">'
    assert FSI not in html and PDI not in html
    assert "<bdi>Solvang skole</bdi>" in html
    assert f"{FSI}Solvang skole{PDI} ({FSI}Kari{PDI}): Tur\n" in out.text
    assert f"{FSI}{PUBLIC_URL}/p/" in out.text


def test_an_sms_digest_keeps_the_staffs_own_letters_and_then_ours() -> None:
    """Only our texts are folded for SMS, and only when that makes it GSM-7: a staff
    subject of its own outside GSM-7 keeps its letters, and then so do ours."""
    from tests.test_sms_budget import delivery, message, renderer

    render = renderer.__wrapped__()  # type: ignore[attr-defined]
    items = [(message(subject=s), delivery("sms", "pl")) for s in ("Wycieczka w środę", "Gym")]
    out = render.render_digest(items, items[0][1])
    assert out.text.startswith("Dzisiejsze wiadomości (2)\n- Wycieczka w środę\n- Gym\n")


async def test_a_digest_waits_for_a_stopped_channel_like_every_send(rig: Rig) -> None:
    """A digest's send is let in as every send is (the channel's rate limits, breaker and
    in-flight limit): with the relay refusing our credentials (the channel stopped), the
    digest is put off, not sent into it, and goes once the channel works again."""
    await choose_digest(rig, "18:00")
    await rig.post("evt-1", "Tur mandag", "general")
    await rig.run_all()
    assert rig.smtp.received == []
    rig.clock.set(SUNDAY_1800)
    for worker in rig.workers:
        worker.service.dispatcher.health.refused("email", "smtp_535", probe=False)
    await rig.run_all()
    assert rig.smtp.received == []  # put off: the breaker holds it
    for worker in rig.workers:
        worker.service.dispatcher.health.worked("email")
    rig.clock.set(SUNDAY_1800 + timedelta(hours=1))
    await rig.run_all()
    assert [m.message["Subject"] for m in rig.smtp.received] == ["Dagens meldinger (1)"]


async def digest_answered(rig: Rig, reply: str) -> str:
    """One message held for Ola's 18:00 digest, which then runs with the relay answering
    his address with ``reply``; the message's id."""
    await choose_digest(rig, "18:00")
    message_id = await rig.post("evt-1", "Tur mandag", "general")
    await rig.run_all()
    rig.smtp.reply_to_recipient("ola@example.no", reply)
    rig.clock.set(SUNDAY_1800)
    await rig.run_all()
    return message_id


async def held_email(rig: Rig, message_id: str) -> Delivery:
    deliveries = await rig.gw.deliveries(rig.tenant_id, message_id)
    (held,) = [d for d in deliveries if d.channel == "email"]
    return held


async def test_a_digest_the_relay_keeps_deferring_is_retried_then_given_up(rig: Rig) -> None:
    """A digest whose send fails but may go later (the relay defers the mailbox) is tried
    again after a backoff as a send is, with a history row per attempt, and given up
    after the attempts, not retried for ever with its messages queued."""
    message_id = await digest_answered(rig, "452 4.2.2 Mailbox full")

    async def email() -> dict[str, Any]:
        _, view = await rig.call("GET", f"/v1/messages/{message_id}")
        (found,) = [d for d in view["deliveries"] if d["channel"] == "email"]
        return dict(found)

    first = await email()
    assert first["status"] == "sending"
    assert first["waiting_for"].endswith("attempt 1: smtp_452")
    for _ in range(12):  # more than the default 10 attempts, each after its backoff
        rig.clock.advance(2 * 3600)
        await rig.run_all()
    assert (await email())["status"] == "failed"
    assert rig.smtp.received == []
    assert (await held_email(rig, message_id)).reason == "gave_up:smtp_452"


async def test_a_digest_the_relay_refuses_for_want_of_credentials_uses_no_attempt(
    rig: Rig,
) -> None:
    """A relay that wants credentials stops the channel (its breaker): the digest is put
    off as a send would be, its deliveries still queued and no attempt used up, and it
    goes once the relay takes mail again."""
    # As Exchange answers a client that did not log in, at RCPT.
    message_id = await digest_answered(rig, "530 5.7.1 Client was not authenticated")
    held = await held_email(rig, message_id)
    assert held.status.value == "queued"
    store = rig.workers[0].service.store
    (job,) = (await store.get_jobs([held.context["digest"]])).values()
    assert job.attempts == 0  # put off (smtp_530, then the breaker holds it), never tried
    rig.smtp.reply_to_recipient("ola@example.no", None)
    for worker in rig.workers:
        worker.service.dispatcher.health.worked("email")
    rig.clock.advance(3600)
    await rig.run_all()
    assert [m.message["Subject"] for m in rig.smtp.received] == ["Dagens meldinger (1)"]
