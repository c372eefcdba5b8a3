"""The daily digest: one email (or push, or SMS) with the day's messages, sent once.

The planner holds a guardian's push, SMS and email deliveries of ``general`` and
``reminder`` messages for their daily digest (gateway/digest_plan.py); their entries
are in the store (gateway/store/digests.py) and one ``digest`` job per guardian and
time sends them. The job is leased like every job, so with many processes one of them
sends it. When it runs it takes the held deliveries not sent yet, picks the
guardian's channel (email, else push, else SMS; push goes to each device), renders one
digest listing each message with its own read link (a read there counts for that
message: the read page's confirm button, as always) and moves the held deliveries on
that channel to the send's outcome; those on the other channels are ``cancelled``
(reason ``in_digest``). Absence and emergency are never held.

Sent once, on one channel: a run put off part-way carries on on the channel that told
the guardian already; an attempt in doubt (the provider may have taken it) is retried
first, so an SMS retry looks the first up; a channel that reaches nobody (a refused
address, sends given up after their attempts, as a send job's are) leaves the digest to
the next; what no channel of this process can carry fails as ``no_such_channel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import timedelta

from channels.base import Channel
from gateway.clock import Clock
from gateway.constants import JOB_DIGEST, MESSAGE_MISSING, NO_SUCH_CHANNEL
from gateway.digest_plan import DIGEST_KEY
from gateway.errors import (
    ChannelUnavailable,
    LeaseShort,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.jobs import JobHandler
from gateway.lease_left import LEASE_SHORT
from gateway.metrics import SEND_METERS, SMS_SEGMENTS
from gateway.models import Delivery, DeliveryStatus, Job, Message
from gateway.recheck import withheld
from gateway.render import Renderer
from gateway.retries import attempt_note, backoff, record_attempt, unanswered_before
from gateway.settings import DispatchSettings
from gateway.store import Store

log = logging.getLogger(__name__)

ORDER = ("email", "push", "sms")  # the digest goes on the first the guardian has held
IN_DIGEST = "in_digest"
# Held, not sent yet: queued, or ``sending`` after a failed attempt (_failed_attempt).
_HELD = frozenset({DeliveryStatus.queued, DeliveryStatus.sending})
# A delivery the guardian was told by (a provider took it); a refused one (a dead push
# token) told nobody, so another channel may still carry the digest.
_TOLD = frozenset(
    {DeliveryStatus.sent, DeliveryStatus.delivered, DeliveryStatus.opened, DeliveryStatus.read}
)


def _went_on(deliveries: list[Delivery]) -> str | None:
    """The channel an earlier run of the digest already told the guardian on, if one did:
    a push digest goes to each device in turn, and a run put off after some went on (a
    rate limit, an open breaker) carries on there. Choosing again could pick another
    channel (one this process lacks, or the push deliveries all ended meanwhile) and tell
    the guardian the same messages twice."""
    return next((d.channel for d in deliveries if d.status in _TOLD), None)


def _in_doubt(deliveries: list[Delivery]) -> str | None:
    """The channel of an earlier attempt that failed in a way the provider may still have
    taken it (``sending``: a timeout, say): tried first, so its retry can look up the
    first (an SMS's does) before any other channel tells the guardian again."""
    return next((d.channel for d in deliveries if d.status is DeliveryStatus.sending), None)


# How a digest's send is let in: the dispatcher's (Dispatcher.admitted), so a digest keeps
# the channel's rate limits, breaker and in-flight limit as every send does. Yields
# False when the job was put off instead.
Admission = Callable[[Job, str], AbstractAsyncContextManager[bool]]


@contextlib.asynccontextmanager
async def _let_in(job: Job, channel: str) -> AsyncIterator[bool]:
    """Admission without a dispatcher (a sender driven by hand): every send goes."""
    yield True


class _PutOff(Exception):
    """The digest's job is due again later, put off (a rate limit, an open breaker, a
    stalled channel, too little of its lease left) or retried after a failed attempt: it
    runs again then, with the deliveries not sent yet."""


class DigestSender:
    """The handler of ``digest`` jobs (register it with the dispatcher)."""

    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        renderer: Renderer,
        clock: Clock,
        *,
        settings: DispatchSettings | None = None,
        work_available: asyncio.Event | None = None,
    ) -> None:
        self.store = store
        self.channels = channels
        self.renderer = renderer
        self.clock = clock
        self.settings = settings or DispatchSettings()  # attempts and backoff, as a send's
        self.work_available = work_available
        self.admission: Admission = _let_in  # the service sets the dispatcher's

    def handlers(self) -> dict[str, JobHandler]:
        """The job kinds this feature does (gateway/jobs.py)."""
        return {JOB_DIGEST: self.run}

    async def run(self, job: Job) -> None:
        entries = await self.store.digests.digest_entries(job.tenant_id, job.id)
        found = await self.store.get_deliveries([e.delivery_id for e in entries])
        own = [
            found[e.delivery_id]
            for e in entries
            if e.delivery_id in found and found[e.delivery_id].context.get(DIGEST_KEY) == job.id
        ]
        by_channel: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in own:
            if delivery.status in _HELD:
                by_channel[delivery.channel].append(delivery)
        try:
            told = await self._send_on_one(job, own, by_channel)
        except _PutOff:
            return  # put off or to be retried; what was sent has moved on
        # The channels not tried: in the digest that went, else none here could carry it.
        now = self.clock.now()
        status, reason = (
            (DeliveryStatus.cancelled, IN_DIGEST)
            if told
            else (DeliveryStatus.failed, NO_SUCH_CHANNEL)
        )
        for deliveries in by_channel.values():
            for delivery in deliveries:
                await self.store.transition(delivery.id, status, now, reason=reason, detail=job.id)
        await self.store.digests.drop_digest_entries(
            job.tenant_id, job.id, [e.delivery_id for e in entries]
        )
        await self.store.finish_job(job.id)

    async def _send_on_one(
        self, job: Job, own: list[Delivery], by_channel: dict[str, list[Delivery]]
    ) -> bool:
        """Send the held deliveries on one channel (taken out of ``by_channel``): the one
        an earlier run told the guardian on, else the first in ORDER that reaches them
        (an attempt in doubt first); a channel that reaches nobody (its address refused,
        its sends given up) leaves the digest to the next. Whether the guardian was told;
        raises _PutOff when the job was put off or is to be retried."""
        told = _went_on(own)
        if told is not None:
            await self._send_held(job, told, by_channel.pop(told, []))
            return True
        doubt = _in_doubt(own)
        order = sorted(
            (c for c in ORDER if c in by_channel and c in self.channels), key=lambda c: c != doubt
        )
        for chosen in order:
            if await self._send_held(job, chosen, by_channel.pop(chosen)):
                return True
        return False

    async def _send_held(self, job: Job, chosen: str, held: list[Delivery]) -> bool:
        """One digest per address or device of ``chosen`` for the held deliveries on it
        that may still go; whether one went. Raises _PutOff when the job was put off or
        is to be retried."""
        channel = self.channels.get(chosen)
        if channel is None:
            # An earlier run sent this digest on a channel this process has not (its
            # settings changed since): the rest of it fails here, as a send would.
            await self._fail(held, NO_SUCH_CHANNEL)
            return False
        messages = await self._messages(job.tenant_id, held)
        by_target: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in held:
            message = messages.get(delivery.message_id)
            if message is None:
                await self._fail([delivery], MESSAGE_MISSING)
                continue
            # Rights are checked again at the digest's time (a block since holds).
            why = await withheld(self.store, message, delivery, self.clock.now())
            if why is not None:
                status, reason = why
                await self.store.transition(delivery.id, status, self.clock.now(), reason=reason)
                continue
            by_target[delivery.target].append(delivery)
        went = False
        for group in by_target.values():
            went = await self._send(job, channel, group, messages) or went
        return went

    async def _failed_attempt(
        self, job: Job, group: list[Delivery], exc: TransientDeliveryError
    ) -> bool:
        """A digest send that failed but may go later, as a send job's does: its
        deliveries move to ``sending`` with a history row (so an SMS retry first looks up
        whether Twilio took it) and the job is tried again after a backoff (True: stop
        this run); past the attempts, the group fails as given up (False: go on)."""
        code = exc.code or "transient"
        settings, now = self.settings, self.clock.now()
        SEND_METERS.count(group[0].channel, "transient")
        if exc.maybe_sent and await unanswered_before(self.store, group[0].id, code):
            # answered too late a second time: sent, unconfirmed (as a send job's)
            for delivery in group:
                await self.store.transition(
                    delivery.id, DeliveryStatus.sent, now, reason=f"unconfirmed:{code}"
                )
            return False
        if job.attempts >= settings.max_attempts:
            await self._fail(group, f"gave_up:{code}")
            return False
        wait = backoff(job.attempts, settings.backoff_base, settings.backoff_max, exc.retry_after)
        due = now + timedelta(seconds=wait)
        note = attempt_note(job.attempts, code, due, now)
        for delivery in group:
            await record_attempt(self.store, delivery.id, now, note)
        await self.store.retry_job(job.id, due, code)
        return True

    async def _fail(self, deliveries: list[Delivery], reason: str) -> None:
        """Fail deliveries the digest cannot send, as a send job would."""
        for delivery in deliveries:
            await self.store.transition(
                delivery.id, DeliveryStatus.failed, self.clock.now(), reason=reason
            )

    async def _messages(self, tenant_id: str, deliveries: list[Delivery]) -> dict[str, Message]:
        messages: dict[str, Message] = {}
        for message_id in dict.fromkeys(d.message_id for d in deliveries):
            message = await self.store.get_message(tenant_id, message_id)
            if message is not None:
                messages[message_id] = message
        return messages

    async def _send(
        self, job: Job, channel: Channel, group: list[Delivery], messages: Mapping[str, Message]
    ) -> bool:
        """One digest for the deliveries of one address or device; whether the provider
        took it. After a failure that may pass, the job is tried again later
        (_failed_attempt) and _PutOff raised."""
        carrier = group[0]
        items = [(messages[d.message_id], d) for d in group]
        content = self.renderer.render_digest(items, carrier)
        try:
            async with self.admission(job, carrier.channel) as admitted:
                if not admitted:
                    raise _PutOff
                receipt = await channel.send(carrier, content)
        except LeaseShort:
            # Stopped before a request that could outlast the lease (gateway/lease_left.py):
            # put off, not tried; what was sent has moved on.
            await self.store.postpone_job(job.id, self.clock.now(), LEASE_SHORT)
            raise _PutOff from None
        except ChannelUnavailable as exc:
            # The channel is stopped (its breaker now holds it): no attempt used up, as a
            # send's; the admission puts the next run off until the breaker's probe.
            await self.store.postpone_job(job.id, self.clock.now(), exc.code or "unavailable")
            raise _PutOff from None
        except TransientDeliveryError as exc:
            if await self._failed_attempt(job, group, exc):
                raise _PutOff from None
            return False
        except PermanentDeliveryError as exc:
            SEND_METERS.count(carrier.channel, "permanent")
            await self._fail(group, exc.code or "permanent")
            return False
        SEND_METERS.count(carrier.channel, "sent")
        if receipt.segments:
            SMS_SEGMENTS.observe(receipt.segments)
        now = self.clock.now()
        for delivery in group:
            own = delivery.id == carrier.id
            await self.store.transition(
                delivery.id,
                receipt.status,
                now,
                detail=f"digest of {len(group)}" if own else f"in the digest of {carrier.id}",
                provider_id=receipt.provider_id if own else None,
                segments=receipt.segments if own else None,
            )
        return True
