"""Issue 17, voice: an unread emergency escalates to a phone call through the Twilio-like
peer (Calls API, TwiML <Say> in the guardian's language, <Gather> "press 1"); the peer
presses 1 on the signed gather webhook and the child counts as reached. The message
goes in through the HTTP API; the call's request is checked field by field."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.voice import GATHER_PATH, say_language
from gateway.clock import ManualClock
from gateway.locales import load as load_locales
from gateway.models import Device, DirectoryBatch
from gateway.settings import Settings, TranslationSettings, VoiceSettings
from tests.harness import Gateway, new_tenant, running
from tests.peers.translate import LibreTranslatePeer
from tests.peers.twilio import TwilioPeer
from tests.test_sms import ACCOUNT_SID, AUTH_TOKEN, twilio_settings

CALLER = "+4721000000"
PHONE = "+4741000011"
PHONE2 = "+4741000012"


def directory(language: str) -> DirectoryBatch:
    return DirectoryBatch.model_validate(
        {
            "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
            "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
            "persons": [
                {
                    "id": "c1",
                    "role": "child",
                    "given_name": "Amina",
                    "birth_date": "2015-03-01",
                    "unit_ids": ["u1"],
                    "group_ids": ["g1"],
                },
                {
                    "id": "p1",
                    "role": "guardian",
                    "given_name": "Forelder",
                    "phone": PHONE,
                    "language": language,
                },
            ],
            "relations": [{"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True}],
        }
    )


@pytest.fixture
async def peers() -> AsyncIterator[tuple[TwilioPeer, LibreTranslatePeer]]:
    async with TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio, LibreTranslatePeer() as libre:
        yield twilio, libre


def voice_settings(settings: Settings, twilio: TwilioPeer, libre: LibreTranslatePeer) -> Settings:
    return settings.model_copy(
        update={
            "twilio": twilio_settings(twilio.base_url),
            "voice": VoiceSettings(enabled=True, caller_id=CALLER, ring_seconds=25),
            "translation": TranslationSettings(
                provider="libretranslate", url=libre.base_url, max_wait=0
            ),
        }
    )


EMERGENCY: dict[str, Any] = {
    "id": "evt-1",
    "type": "message.created",
    "data": {
        "audience": {"children": ["c1"]},
        "category": "emergency",
        "subject": "Skolen er stengt",
        "body": "Hent Amina innen kl. 12.00.",
    },
}


async def emergency(gw: Gateway, language: str) -> tuple[str, str, str]:
    tenant, key = await new_tenant(gw.service, gw.clock, directory(language))
    await gw.service.store.upsert_device(
        tenant.id, "p1", Device(id="d1", token="tok-1", platform="android")
    )
    message_id = await gw.post_event(key, EMERGENCY)
    await gw.run()
    return tenant.id, key, message_id


async def test_an_unread_emergency_ends_in_a_call_and_pressing_1_reaches_the_child(
    settings: Settings, clock: ManualClock, peers: tuple[TwilioPeer, LibreTranslatePeer]
) -> None:
    twilio, libre = peers
    async with running(voice_settings(settings, twilio, libre), clock) as gw:
        _, key, message_id = await emergency(gw, "ar")
        assert twilio.call_requests == []  # push and SMS first: no call at once
        status = await gw.status(key, message_id)
        assert status["summary"]["children_reached"] == 0

        clock.advance(16 * 60)  # unread after the emergency delay: the next step, a call
        await gw.run()
        (request,) = twilio.call_requests
        assert request.authorized
        assert request.field("To") == PHONE and request.field("From") == CALLER
        assert request.field("Timeout") == "25"
        assert request.field("StatusCallback") is not None
        root = ET.fromstring(request.field("Twiml") or "")
        gather = root.find("Gather")
        assert gather is not None and gather.get("numDigits") == "1"
        assert (gather.get("action") or "").startswith(f"{settings.public_url}{GATHER_PATH}?d=")
        said = gather.findall("Say")
        # The message in Arabic (the provider's translation, names kept), then "press 1".
        assert said[0].get("language") == "ar-XA"
        assert "[ar]" in (said[0].text or "") and "Amina" in (said[0].text or "")
        # "press 1" in the guardian's wrapper language too (templates/locale/ar.po)
        press_1 = str(load_locales()["texts"]["ar"]["voice_press_1"])
        assert said[1].get("language") == "ar-XA" and said[1].text == press_1
        assert len(libre.requests) == 1  # the call reused the stored translation

        (sid,) = twilio.calls
        answer = await twilio.press(sid, "1", via=gw.url)
        assert answer.status == 200 and "<Say" in answer.text
        status = await gw.status(key, message_id)
        assert status["summary"]["children_reached"] == 1
        assert status["children"][0]["reached"] is True
        calls = [d for d in status["deliveries"] if d["channel"] == "voice"]
        assert len(calls) == 1

        ended = await twilio.end_call(sid, via=gw.url)
        assert ended.status == 200
        status = await gw.status(key, message_id)
        call = next(d for d in status["deliveries"] if d["channel"] == "voice")
        assert call["status"] in ("delivered", "read")

        clock.advance(60 * 60)  # reached: nothing more goes out
        await gw.run()
        assert len(twilio.call_requests) == 1


async def test_another_key_or_a_forged_webhook_reaches_nobody(
    settings: Settings, clock: ManualClock, peers: tuple[TwilioPeer, LibreTranslatePeer]
) -> None:
    twilio, libre = peers
    async with running(voice_settings(settings, twilio, libre), clock) as gw:
        _, key, message_id = await emergency(gw, "so")
        clock.advance(16 * 60)
        await gw.run()
        (sid,) = twilio.calls
        twiml = ET.fromstring(twilio.calls[sid]["twiml"])
        gather = twiml.find("Gather")
        assert gather is not None
        assert gather.findall("Say")[0].get("language") == "nb-NO"  # no Somali voice
        assert (await twilio.press(sid, "2", via=gw.url)).status == 200
        action = gather.get("action") or ""
        forged = await twilio.post_webhook(
            action, twilio.call_params(sid, "in-progress", Digits="1"), via=gw.url, signed=False
        )
        assert forged.status == 403
        status = await gw.status(key, message_id)
        assert status["summary"]["children_reached"] == 0


def test_say_languages_fall_back_to_norwegian() -> None:
    assert say_language("pl-PL") == "pl-PL"
    assert say_language("ti") == "nb-NO"
    assert say_language(None) == "nb-NO"


def two_guardians() -> DirectoryBatch:
    """The directory of :func:`directory`, with a second guardian of the same child."""
    batch = directory("nb").model_dump(mode="json")
    batch["persons"].append({"id": "p2", "role": "guardian", "given_name": "To", "phone": PHONE2})
    batch["relations"].append(
        {"child_id": "c1", "guardian_id": "p2", "parental_responsibility": True}
    )
    return DirectoryBatch.model_validate(batch)


async def test_calls_keep_to_the_tenants_share_of_the_account(
    settings: Settings, clock: ManualClock, peers: tuple[TwilioPeer, LibreTranslatePeer]
) -> None:
    """One call a minute per tenant: the second guardian of one tenant is called a minute
    later, while another tenant's call goes at once (the account's own limit is high)."""
    twilio, libre = peers
    configured = voice_settings(settings, twilio, libre)
    dispatch = configured.dispatch.model_copy(
        update={"channel_rate": {"voice": 100.0}, "tenant_channel_rate": {"voice": 1 / 60}}
    )
    async with running(configured.model_copy(update={"dispatch": dispatch}), clock) as gw:
        _, busy_key = await new_tenant(gw.service, gw.clock, two_guardians())
        busy_message = await gw.post_event(busy_key, {**EMERGENCY, "id": "evt-busy"})
        await gw.run()
        await emergency(gw, "nb")

        clock.advance(16 * 60)  # all unread: the call step for the three guardians
        await gw.run()
        assert len(twilio.call_requests) == 2  # one of the busy tenant's two, the other's
        status = await gw.status(busy_key, busy_message)
        waiting = [d["waiting_for"] for d in status["deliveries"] if d["channel"] == "voice"]
        (put_off,) = [w for w in waiting if w]
        assert put_off.startswith("waiting until ") and put_off.endswith(": rate_limited")

        clock.advance(60)
        await gw.run()
        called = sorted(r.field("To") or "" for r in twilio.call_requests)
        assert called == sorted([PHONE, PHONE, PHONE2])
