"""A push digest goes to each of the guardian's devices in turn. A run put off part-way
(the channel's rate limit, say) carries on, when it runs again, on the channel it began
on: the guardian is never told the same messages a second time on another channel, not
even by a process whose settings lack that channel. Real FCM and Twilio peers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from channels.gsm import encoding
from gateway.clock import ManualClock
from gateway.digest import IN_DIGEST, Admission, DigestSender
from gateway.digest_plan import DIGEST_KEY, digest_entries, digest_job
from gateway.lease_left import lease_ends_in
from gateway.models import Delivery, DeliveryStatus, Device, Job, Message, Preferences
from gateway.settings import Settings
from gateway.store import Store
from tests.conftest import TenantCreds
from tests.test_dispatcher import (
    Rig,
    _us,
    directory,
    family,
    peered_rig,
)


@pytest.fixture
async def rig(
    store: Store, clock: ManualClock, tenant: TenantCreds, settings: Settings, tmp_path: Path
) -> AsyncIterator[Rig]:
    async with peered_rig(store, clock, tenant, settings, tmp_path) as built:
        yield built


def first_send_only() -> Admission:
    """An admission that lets the first send in and puts every later one off, as the
    dispatcher's does when the channel's rate limit runs out after one send."""
    let_in = iter([True])

    @contextlib.asynccontextmanager
    async def admission(job: Job, channel: str) -> AsyncIterator[bool]:
        yield next(let_in, False)

    return admission


async def two_devices_then_put_off(rig: Rig, first_token: str) -> tuple[Message, Job]:
    """p1 takes general messages by push and SMS as a digest at 18:00 and has two devices
    (d1 with ``first_token``, d2); one message is held for it, and the digest's first
    run, at its time, got one send in (d1's) before it was put off."""
    await rig.load(directory(family(1, email=False, phone=True)))
    for device_id, token in (("d1", first_token), ("d2", "tok-2")):
        await rig.store.upsert_device(
            rig.tenant_id, "p1", Device(id=device_id, token=token, platform="android")
        )
    prefs = {"channels": {"general": ["push", "sms"]}, "digest": {"general": "18:00"}}
    await rig.store.set_preferences(rig.tenant_id, "p1", Preferences.model_validate(prefs))
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    held = await held_by_target(rig, message)
    assert sorted(held) == ["d1", "d2", "sms"]
    assert rig.fcm.sent == [] and rig.twilio.requests == []
    job = digest_job(held["d1"])
    rig.clock.set(job.due_at)
    first = DigestSender(rig.store, rig.dispatcher.channels, rig.dispatcher.renderer, rig.clock)
    first.admission = first_send_only()
    await first.run(job)
    return message, job


async def held_by_target(rig: Rig, message: Message) -> dict[str, Delivery]:
    """The message's deliveries held for a digest, by device (push) or channel."""
    found = await rig.deliveries(message)
    return {d.target or d.channel: d for d in found if DIGEST_KEY in d.context}


async def run_without_push(rig: Rig, job: Job) -> None:
    """The digest runs again in a process whose settings have no push (FCM switched off)."""
    sms = {"sms": rig.dispatcher.channels["sms"]}
    await DigestSender(rig.store, sms, rig.dispatcher.renderer, rig.clock).run(job)


async def test_a_digest_put_off_part_way_carries_on_on_the_channel_it_began_on(rig: Rig) -> None:
    message, job = await two_devices_then_put_off(rig, "tok-1")
    assert [s.body["message"]["token"] for s in rig.fcm.sent] == ["tok-1"]

    await run_without_push(rig, job)

    assert rig.twilio.requests == []  # not the same message again, by SMS
    assert [s.body["message"]["token"] for s in rig.fcm.sent] == ["tok-1"]
    after = await held_by_target(rig, message)
    assert after["d1"].status is DeliveryStatus.sent
    assert (after["d2"].status, after["d2"].reason) == (DeliveryStatus.failed, "no_such_channel")
    sms = after["sms"]
    assert (sms.status, sms.reason) == (DeliveryStatus.cancelled, IN_DIGEST)


async def test_a_digest_whose_first_device_was_refused_still_reaches_the_guardian(
    rig: Rig,
) -> None:
    """Only a send the provider took counts as the digest having gone on a channel: with
    the first device's token dead and the second put off, a process without push sends
    the digest by SMS (nobody was told yet), not nothing."""
    rig.fcm.dead["tok-dead"] = "UNREGISTERED"
    message, job = await two_devices_then_put_off(rig, "tok-dead")
    assert rig.fcm.sent == []  # d1 refused as dead, d2 put off

    await run_without_push(rig, job)

    assert len(rig.twilio.requests) == 1  # the digest, by SMS
    after = await held_by_target(rig, message)
    assert after["sms"].status is DeliveryStatus.sent
    assert after["d1"].status is DeliveryStatus.failed
    assert (after["d2"].status, after["d2"].reason) == (DeliveryStatus.cancelled, IN_DIGEST)


async def test_a_digest_with_too_little_of_its_lease_left_is_put_off_not_sent(rig: Rig) -> None:
    """A digest's request, too, is made only while a whole timeout of its job's lease is
    left (gateway/lease_left.py): otherwise the job is put off, nothing is moved, and it
    goes in full when it runs again."""
    message, job = await held_digest(rig, device=True)
    sender = DigestSender(rig.store, rig.dispatcher.channels, rig.dispatcher.renderer, rig.clock)

    async def run_with_lease_left(seconds: float) -> None:
        lease_ends_in(seconds)  # as the dispatcher says for the job
        await sender.run(job)

    await asyncio.create_task(run_with_lease_left(0.5))  # less than FCM's timeout
    assert rig.fcm.sent == []
    assert (await rig.one(message, "push")).status is DeliveryStatus.queued
    [(_, _, due_at, _, _)] = [j for j in rig.jobs() if j[0] == job.id]
    assert due_at == _us(rig.clock.now())  # put off, due now

    await asyncio.create_task(run_with_lease_left(60.0))
    assert len(rig.fcm.sent) == 1
    assert (await rig.one(message, "push")).status is DeliveryStatus.sent


async def held_digest(
    rig: Rig, *, device: bool = False, language: str | None = None, messages: int = 1
) -> tuple[Message, Job]:
    """One general message (the first of ``messages``) held for p1's 18:00 digest, by
    push to one device if ``device``, else by SMS (p1 reading ``language``, if given);
    the clock at the digest's time."""
    await rig.load(directory(family(1, email=False, phone=True, language=language)))
    if device:
        await rig.store.upsert_device(
            rig.tenant_id, "p1", Device(id="d1", token="tok-1", platform="android")
        )
    prefs = {"digest": {"general": "18:00"}}
    await rig.store.set_preferences(rig.tenant_id, "p1", Preferences.model_validate(prefs))
    message = await rig.post("e1", {"groups": ["g1"]})
    for n in range(2, messages + 1):
        await rig.post(f"e{n}", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    [held] = [d for d in await rig.deliveries(message) if DIGEST_KEY in d.context]
    job = digest_job(held)
    rig.clock.set(job.due_at)
    return message, job


async def test_a_digest_no_channel_here_can_carry_fails_as_a_send_would(rig: Rig) -> None:
    """In a process with none of the channels a digest holds, its deliveries fail as
    `no_such_channel`, as a send's would; before, they were cancelled as "in the digest"
    of nothing."""
    message, job = await held_digest(rig)
    email = rig.dispatcher.channels["email"]
    await DigestSender(rig.store, {"email": email}, rig.dispatcher.renderer, rig.clock).run(job)
    sms = await rig.one(message, "sms")
    assert (sms.status, sms.reason) == (DeliveryStatus.failed, "no_such_channel")
    assert rig.twilio.requests == []


async def test_a_held_delivery_whose_message_is_gone_fails_and_the_rest_goes(rig: Rig) -> None:
    """A delivery whose message is gone fails as `message_missing` (as a send's would)
    instead of staying queued for ever; the digest goes with the rest."""
    message, job = await held_digest(rig)
    held = await rig.one(message, "sms")
    orphan = held.model_copy(update={"id": "d-orphan", "message_id": "m-gone"})
    await rig.store.add_deliveries([orphan], [])
    await rig.store.digests.add_digest_entries(digest_entries([orphan]))
    await DigestSender(rig.store, rig.dispatcher.channels, rig.dispatcher.renderer, rig.clock).run(
        job
    )
    gone = await rig.store.get_delivery("d-orphan")
    assert gone is not None
    assert (gone.status, gone.reason) == (DeliveryStatus.failed, "message_missing")
    assert (await rig.one(message, "sms")).status is DeliveryStatus.sent
    assert len(rig.twilio.requests) == 1


async def test_a_polish_sms_digest_is_gsm7_when_only_our_letters_are_not(rig: Rig) -> None:
    """Our Polish "Dzisiejsze wiadomości" alone made the digest SMS UCS-2 (67 characters
    a segment instead of 160: two segments billed for one's worth here); its "ś" is
    folded, as in every SMS whose only letters outside GSM-7 are ours."""
    message, job = await held_digest(rig, language="pl", messages=2)
    await DigestSender(rig.store, rig.dispatcher.channels, rig.dispatcher.renderer, rig.clock).run(
        job
    )
    [request] = rig.twilio.requests
    body = request.field("Body") or ""
    assert body.startswith("Dzisiejsze wiadomosci (2)\n- Foreldremøte\n- Foreldremøte\n"), body
    assert encoding(body) == "GSM-7"
    [billed] = rig.twilio.messages.values()
    assert billed["num_segments"] == "1"
    assert (await rig.one(message, "sms")).status is DeliveryStatus.sent


async def two_channel_digest(rig: Rig, channels: list[str], device: bool) -> tuple[Message, Job]:
    """p1 (email, phone, and one device if ``device``) takes general messages on
    ``channels`` as a digest at 18:00; one message held for it, the clock at its time."""
    await rig.load(directory(family(1, email=True, phone=True)))
    if device:
        await rig.store.upsert_device(
            rig.tenant_id, "p1", Device(id="d1", token="tok-1", platform="android")
        )
    prefs = {"channels": {"general": channels}, "digest": {"general": "18:00"}}
    await rig.store.set_preferences(rig.tenant_id, "p1", Preferences.model_validate(prefs))
    message = await rig.post("e1", {"groups": ["g1"]})
    await rig.dispatcher.run_until_idle()
    held = await held_by_target(rig, message)
    assert sorted(held) == sorted("d1" if c == "push" else c for c in channels)
    job = digest_job(next(iter(held.values())))
    rig.clock.set(job.due_at)
    return message, job


async def test_a_digest_its_first_channel_cannot_reach_goes_on_the_next(rig: Rig) -> None:
    """The first channel in the digest's order reaches nobody (the relay refuses the
    mailbox): the digest goes on the next the guardian takes, not cancelled with it."""
    message, job = await two_channel_digest(rig, ["email", "sms"], device=False)
    rig.smtp.reply_to_recipient("forelder1@example.no", "550 5.1.1 No such user")
    await DigestSender(rig.store, rig.dispatcher.channels, rig.dispatcher.renderer, rig.clock).run(
        job
    )
    held = await held_by_target(rig, message)
    assert (held["email"].status, held["email"].reason) == (DeliveryStatus.failed, "smtp_550")
    assert held["sms"].status is DeliveryStatus.sent
    assert len(rig.twilio.requests) == 1


async def test_a_digest_whose_sms_is_in_doubt_retries_the_sms_before_any_push(rig: Rig) -> None:
    """An SMS digest whose request got no clear answer (Twilio may have taken it) is
    retried on SMS, which looks the first up, even in a process that could send push
    (first in the order): otherwise the guardian could be told twice."""
    message, job = await two_channel_digest(rig, ["push", "sms"], device=True)
    rig.twilio.fail_next(500, code=20500, message="Internal Server Error")
    sms_only = {"sms": rig.dispatcher.channels["sms"]}
    await DigestSender(rig.store, sms_only, rig.dispatcher.renderer, rig.clock).run(job)
    assert (await held_by_target(rig, message))["sms"].status is DeliveryStatus.sending

    rig.clock.advance(3600)  # past the retry's backoff
    await DigestSender(rig.store, rig.dispatcher.channels, rig.dispatcher.renderer, rig.clock).run(
        job
    )
    held = await held_by_target(rig, message)
    assert held["sms"].status is DeliveryStatus.sent
    assert rig.twilio.list_requests  # the retry looked the first attempt up
    assert rig.fcm.sent == []
    assert (held["d1"].status, held["d1"].reason) == (DeliveryStatus.cancelled, IN_DIGEST)
