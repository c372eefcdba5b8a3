"""Issue 17, staff text translation end to end: a gateway with a LibreTranslate-like or
DeepL-like peer; messages go in through the HTTP API, deliveries come out in the outbox.
Each recipient whose language differs from the message's gets the provider's text with
the notice; names and dates never reach the provider; an outage sends the original and
the status says why; a teacher's own translation wins; an escalation reuses the row."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from channels.gsm import encoding, fold
from channels.sms import INBOUND_PATH
from gateway.clock import ManualClock
from gateway.locales import load as load_locales
from gateway.locales import resolve_language
from gateway.models import Device, DirectoryBatch, Person
from gateway.settings import Settings, TranslationSettings
from tests.harness import Gateway, new_tenant, running
from tests.peers.translate import DeepLPeer, LibreTranslatePeer
from tests.peers.twilio import TwilioPeer
from tests.test_sms import ACCOUNT_SID, AUTH_TOKEN, twilio_settings

NOTICE = "Maskinoversatt fra norsk - se originalen"


def notice(lang: str, key: str = "machine_translated", *, sms: bool = False) -> str:
    """The notice in ``lang``'s wrapper texts (templates/locale/<lang>.po); in an SMS
    folded to GSM-7 where only our letters would make it UCS-2 (channels/gsm.fold)."""
    texts = load_locales()["texts"][resolve_language(lang)]
    text = str(texts[key]).format(language=texts["norwegian"])
    return fold(text) if sms and encoding(fold(text)) == "GSM-7" else text


BODY = "Amina og klassen går på tur 24.12. kl. 08.30.\n\nTa med matpakke."
# guardian -> (language, has email)
GUARDIANS = {"gar": "ar", "gso": "so", "gpl": "pl", "gnb": "nb"}


def directory() -> DirectoryBatch:
    persons: list[dict[str, Any]] = [
        {
            "id": f"c-{pid}",
            "role": "child",
            "given_name": "Amina" if pid == "gar" else f"Barn {pid}",
            "birth_date": "2015-03-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        }
        for pid in GUARDIANS
    ]
    persons += [
        {
            "id": pid,
            "role": "guardian",
            "given_name": f"Forelder {pid}",
            "phone": f"+47410000{n:02d}",
            "email": f"{pid}@example.no",
            "language": lang,
        }
        for n, (pid, lang) in enumerate(GUARDIANS.items())
    ]
    return DirectoryBatch.model_validate(
        {
            "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
            "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
            "persons": persons,
            "relations": [
                {"child_id": f"c-{pid}", "guardian_id": pid, "parental_responsibility": True}
                for pid in GUARDIANS
            ],
            "preferences": {
                pid: {"channels": {"general": ["sms", "email"], "emergency": ["push"]}}
                for pid in GUARDIANS
            },
        }
    )


def event(event_id: str = "evt-1", **data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "message.created",
        "data": {"audience": {"groups": ["g1"]}, "subject": "Tur", "body": BODY, **data},
    }


@pytest.fixture
async def libre() -> AsyncIterator[LibreTranslatePeer]:
    peer = LibreTranslatePeer(api_key="lt-key")
    async with peer:
        yield peer


def with_provider(settings: Settings, **translation: Any) -> Settings:
    return settings.model_copy(
        update={"translation": TranslationSettings(max_wait=0, **translation)}
    )


async def start(gw: Gateway) -> tuple[str, str]:
    tenant, key = await new_tenant(gw.service, gw.clock, directory())
    return tenant.id, key


def sms_texts(settings: Settings, pid: str, tenant_deliveries: dict[str, str]) -> list[str]:
    path = settings.outbox_dir / "sms.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line["text"] for line in lines if tenant_deliveries.get(line["delivery_id"]) == pid]


def email_text(outbox: Path, delivery_id: str) -> tuple[str, str]:
    mail = message_from_bytes(
        (outbox / "email" / f"{delivery_id}.eml").read_bytes(), policy=policy.default
    )
    text = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


async def by_recipient(gw: Gateway, tenant_id: str, message_id: str) -> dict[str, str]:
    return {d.id: d.recipient_id for d in await gw.deliveries(tenant_id, message_id)}


async def test_each_language_gets_the_providers_text_with_the_notice(
    settings: Settings, clock: ManualClock, libre: LibreTranslatePeer
) -> None:
    settings = with_provider(
        settings, provider="libretranslate", url=libre.base_url, api_key="lt-key"
    )
    async with running(settings, clock) as gw:
        tenant_id, key = await start(gw)
        message_id = await gw.post_event(key, event())
        await gw.run()
        owners = await by_recipient(gw, tenant_id, message_id)
        for pid, lang in GUARDIANS.items():
            (sms,) = sms_texts(settings, pid, owners)
            if lang == "nb":
                assert NOTICE not in sms and "Tur" in sms and "Ta med matpakke." in sms
                continue
            assert notice(lang, sms=True) in sms
            assert f"[{lang}] Tur" in sms  # the provider's subject and body
            assert f"[{lang}] " in sms.split(notice(lang, sms=True), 1)[1]
            assert "24.12." in sms and "08.30" in sms  # dates come back as written
        (gar_sms,) = sms_texts(settings, "gar", owners)
        assert "Amina" in gar_sms
        # The email: notice with a link to the original (the read page shows it).
        email_id = next(
            d.id
            for d in await gw.deliveries(tenant_id, message_id)
            if d.recipient_id == "gpl" and d.channel == "email"
        )
        text, html = email_text(settings.outbox_dir, email_id)
        assert f"{notice('pl')}: {settings.public_url}/r/" in text
        assert notice("pl") in html and 'href="http://127.0.0.1:8080/r/' in html

        # One batch request per language (subject and body), nb never asked for.
        assert sorted(r["target"] for r in libre.requests) == ["ar", "pl", "so"]
        assert all(len(r["q"]) == 2 and r["format"] == "html" for r in libre.requests)
        sent = json.dumps(libre.requests, ensure_ascii=False)
        assert "Amina" not in sent and "24.12." not in sent  # names and dates stay here

        status = await gw.status(key, message_id)
        assert status["language"] == "nb"
        got = {t["language"]: t for t in status["translations"]}
        assert set(got) == {"ar", "pl", "so"}
        assert got["ar"]["origin"] == "machine" and got["ar"]["provider"] == "libretranslate"
        assert got["ar"]["body"].startswith("Amina[ar]  og klassen")  # the name restored


async def test_a_provider_outage_sends_the_original_and_the_status_says_why(
    settings: Settings, clock: ManualClock, libre: LibreTranslatePeer
) -> None:
    libre.down = True
    settings = with_provider(
        settings, provider="libretranslate", url=libre.base_url, api_key="lt-key"
    )
    async with running(settings, clock) as gw:
        tenant_id, key = await start(gw)
        message_id = await gw.post_event(key, event())
        await gw.run()
        owners = await by_recipient(gw, tenant_id, message_id)
        (sms,) = sms_texts(settings, "gar", owners)
        assert notice("ar", sms=True) not in sms and "Amina og klassen går på tur" in sms
        status = await gw.status(key, message_id)
        assert status["counts"].get("sent", 0) >= 8  # nobody waits for the provider
        failed = {t["language"]: t for t in status["translations"]}
        assert set(failed) == {"ar", "pl", "so"}
        assert {t["origin"] for t in failed.values()} == {"failed"}
        assert {t["reason"] for t in failed.values()} == {"provider_503"}
        assert failed["ar"]["body"] is None
        # Three tries per language (settings.attempts), then the original.
        assert len(libre.requests) == 9


async def test_rate_limit_is_retried_and_a_long_retry_after_gives_up(
    settings: Settings, clock: ManualClock, libre: LibreTranslatePeer
) -> None:
    settings = with_provider(
        settings, provider="libretranslate", url=libre.base_url, api_key="lt-key"
    )
    libre.fail_next(429, retry_after=0)
    async with running(settings, clock) as gw:
        _, key = await start(gw)
        message_id = await gw.post_event(key, event(audience={"guardians": ["gar"]}))
        await gw.run()
        status = await gw.status(key, message_id)
        assert [t["origin"] for t in status["translations"]] == ["machine"]
        assert len(libre.requests) == 2

        libre.fail_next(429, retry_after=3600)  # far above max_wait: counts as down
        other = await gw.post_event(key, event("evt-2", audience={"guardians": ["gpl"]}))
        await gw.run()
        status = await gw.status(key, other)
        assert [(t["origin"], t["reason"]) for t in status["translations"]] == [
            ("failed", "rate_limited")
        ]
        assert len(libre.requests) == 3


async def test_a_teachers_own_translation_wins(
    settings: Settings, clock: ManualClock, libre: LibreTranslatePeer
) -> None:
    settings = with_provider(
        settings, provider="libretranslate", url=libre.base_url, api_key="lt-key"
    )
    own = {"subject": "Wycieczka", "body": "Amina i klasa idą na wycieczkę."}
    async with running(settings, clock) as gw:
        tenant_id, key = await start(gw)
        message_id = await gw.post_event(key, event(translations={"pl": own}))
        await gw.run()
        owners = await by_recipient(gw, tenant_id, message_id)
        (sms,) = sms_texts(settings, "gpl", owners)
        assert notice("pl", "sender_translated") in sms  # the teacher's ą: UCS-2, not folded
        assert "Wycieczka" in sms and own["body"] in sms and "[pl]" not in sms
        assert sorted(r["target"] for r in libre.requests) == ["ar", "so"]
        status = await gw.status(key, message_id)
        got = {t["language"]: t for t in status["translations"]}
        assert got["pl"]["origin"] == "teacher" and got["pl"]["body"] == own["body"]


async def test_the_translation_is_made_once_and_reused_by_an_escalation(
    settings: Settings, clock: ManualClock, libre: LibreTranslatePeer
) -> None:
    settings = with_provider(
        settings, provider="libretranslate", url=libre.base_url, api_key="lt-key"
    )
    async with running(settings, clock) as gw:
        tenant_id, key = await start(gw)
        await gw.service.store.upsert_device(
            tenant_id, "gar", Device(id="dev-gar", token="token-gar", platform="android")
        )
        message_id = await gw.post_event(
            key, event(category="emergency", audience={"guardians": ["gar"]})
        )
        await gw.run()
        assert len(libre.requests) == 1
        clock.advance(16 * 60)  # unread: escalation to SMS after 15 minutes
        await gw.run()
        channels = {d.channel for d in await gw.deliveries(tenant_id, message_id)}
        assert "sms" in channels
        owners = await by_recipient(gw, tenant_id, message_id)
        (sms,) = sms_texts(settings, "gar", owners)
        assert notice("ar", sms=True) in sms and "[ar] " in sms
        assert len(libre.requests) == 1  # the escalation read the stored row
        push = (settings.outbox_dir / "push.jsonl").read_text()
        assert "[ar] " in push


async def test_deepl_translates_what_it_supports(settings: Settings, clock: ManualClock) -> None:
    async with DeepLPeer(auth_key="dl-key:fx") as deepl:
        settings = with_provider(
            settings, provider="deepl", url=deepl.base_url, api_key="dl-key:fx"
        )
        async with running(settings, clock) as gw:
            tenant_id, key = await start(gw)
            message_id = await gw.post_event(key, event())
            await gw.run()
            assert sorted(r["target_lang"] for r in deepl.requests) == ["AR", "PL"]
            assert all(
                r["tag_handling"] == "xml" and r["source_lang"] == "NB" for r in deepl.requests
            )
            assert deepl.headers[0]["Authorization"] == "DeepL-Auth-Key dl-key:fx"
            status = await gw.status(key, message_id)
            got = {t["language"]: (t["origin"], t["reason"]) for t in status["translations"]}
            assert got == {
                "ar": ("machine", None),
                "pl": ("machine", None),
                "so": ("failed", "unsupported_language"),  # DeepL has no Somali
            }
            owners = await by_recipient(gw, tenant_id, message_id)
            (sms,) = sms_texts(settings, "gar", owners)
            assert "[AR] " in sms and "Amina" in sms


async def test_staff_see_the_translations_on_the_message_page(
    settings: Settings, clock: ManualClock, libre: LibreTranslatePeer
) -> None:
    settings = with_provider(
        settings, provider="libretranslate", url=libre.base_url, api_key="lt-key"
    )
    libre.unsupported.add("so")
    batch = directory()
    batch.persons.append(
        Person.model_validate(
            {"id": "t1", "role": "staff", "given_name": "Lærer", "unit_ids": ["u1"]}
        )
    )
    own = {"subject": "Wycieczka", "body": "Idziemy na wycieczkę."}
    async with running(settings, clock) as gw:
        _, key = await new_tenant(gw.service, gw.clock, batch)
        message_id = await gw.post_event(key, event(sender_id="t1", translations={"pl": own}))
        await gw.run()
        async with gw.session.post(
            f"{gw.url}/v1/staff/t1/tokens",
            json={"message_id": message_id},
            headers=gw.headers(key),
        ) as resp:
            assert resp.status == 201, await resp.text()
            link: str = (await resp.json())["link"]
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as browser:
            url = link.replace(settings.public_url, gw.url)
            async with browser.get(url) as resp:
                assert resp.status == 200, await resp.text()
                page = await resp.text()
        assert "Oversettelser" in page
        assert "arabisk: maskinoversatt (libretranslate)" in page
        assert "polsk: avsenderens egen oversettelse" in page
        # why, in words: not the stored code
        assert (
            "somali: originalen ble sendt, oversettelsen feilet "
            "(tjenesten kan ikke dette språket)" in page
        )
        assert "unsupported_language" not in page


async def test_a_guardians_reply_is_translated_for_staff_and_the_original_kept(
    settings: Settings, clock: ManualClock, libre: LibreTranslatePeer
) -> None:
    async with TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        settings = with_provider(
            settings, provider="libretranslate", url=libre.base_url, api_key="lt-key"
        ).model_copy(update={"twilio": twilio_settings(twilio.base_url)})
        async with running(settings, clock) as gw:
            _, key = await start(gw)
            message_id = await gw.post_event(key, event(audience={"guardians": ["gpl", "gnb"]}))
            await gw.run()
            inbound = f"{settings.public_url}{INBOUND_PATH}"
            for n, text in ((2, "Dziękuję, Barn gpl przyjdzie."), (3, "Takk!")):
                answer = await twilio.send_inbound(
                    inbound, from_=f"+47410000{n:02d}", to="+4740000000", body=text, via=gw.url
                )
                assert answer.status == 200
            await gw.run()
            status = await gw.status(key, message_id)
            replies = {r["person_id"]: r for r in status["replies"]}
            polish = replies["gpl"]
            assert polish["body"] == "Dziękuję, Barn gpl przyjdzie."  # the original, kept
            assert polish["translation"]["language"] == "nb"
            assert polish["translation"]["origin"] == "machine"
            assert polish["translation"]["body"].startswith("[nb] Dziękuję")
            assert "Barn gpl" in polish["translation"]["body"]  # the child's name protected
            assert replies["gnb"]["translation"] is None  # already in the message's language
            reply_requests = [r for r in libre.requests if r["target"] == "nb"]
            assert len(reply_requests) == 1 and reply_requests[0]["source"] == "pl"
            assert "Barn gpl" not in json.dumps(reply_requests, ensure_ascii=False)


async def test_an_absence_explanation_is_translated_for_staff_and_the_original_kept(
    settings: Settings, clock: ManualClock, libre: LibreTranslatePeer
) -> None:
    settings = with_provider(
        settings, provider="libretranslate", url=libre.base_url, api_key="lt-key"
    )
    async with running(settings, clock) as gw:
        _, key = await start(gw)
        recorded = {
            "id": "evt-abs",
            "type": "absence.recorded",
            "data": {
                "child_id": "c-gpl",
                "date": clock.now().date().isoformat(),
                "lesson": {"number": 2, "from": "08:15", "to": "09:00"},
            },
        }
        alert_id = await gw.post_event(key, recorded)
        await gw.run()
        async with gw.session.post(
            f"{gw.url}/v1/guardians/gpl/tokens", headers=gw.headers(key)
        ) as resp:
            assert resp.status == 201, await resp.text()
            app = gw.headers((await resp.json())["token"])
        text = "Dentysta, Barn gpl wróci o 10.00"
        async with gw.session.post(
            f"{gw.url}/v1/me/inbox/{alert_id}/absence-reply",
            json={"kind": "appointment", "text": text},
            headers=app,
        ) as resp:
            assert resp.status == 200, await resp.text()
        await gw.run()
        status = await gw.status(key, alert_id)
        (explanation,) = status["absence"]["explanations"]
        assert explanation["text"] == text  # the original, kept
        translated = explanation["translation"]
        assert (translated["language"], translated["origin"]) == ("nb", "machine")
        assert translated["body"].startswith("[nb] Dentysta")
        assert "Barn gpl" in translated["body"] and "10.00" in translated["body"]
        asked = [r for r in libre.requests if r["target"] == "nb"]
        assert len(asked) == 1 and asked[0]["source"] == "pl"
        assert "Barn gpl" not in json.dumps(asked, ensure_ascii=False)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("no_provider", "ingen oversettelsestjeneste er satt opp"),
        ("provider_503", "tjenesten svarte med feil 503"),
        ("timeout", "tjenesten svarte ikke i tide"),
        ("something_new", "something_new"),  # a code we have no words for yet: as stored
        (None, ""),
    ],
)
def test_staff_read_why_a_translation_failed_in_words(reason: str | None, words: str) -> None:
    from gateway.api.pages import load_texts
    from gateway.api.staff_pages import _reason_text
    from gateway.settings import Settings as AppSettings

    texts = load_texts(AppSettings().templates_dir, "staff.toml")["nb"]
    assert _reason_text(reason, texts) == words
