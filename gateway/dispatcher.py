"""The dispatcher: takes durable jobs from the store and does them.

Two kinds of job:

* ``plan`` — one per accepted message: load the audience, resolve who may be
  told, plan deliveries and their ``send`` jobs. Planning streams: deliveries
  are written in batches and sending starts while planning goes on.
* ``send`` — one per delivery: render, hand to the channel, record the outcome.

Jobs are leased, so a crashed worker's jobs become visible again after the
lease; a job whose delivery is already final is dropped, never sent again.
Transient errors are retried with exponential backoff and full jitter,
honouring ``Retry-After``; permanent errors are recorded and never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from channels.base import Channel
from gateway.attachments import Attachments
from gateway.audience_handoff import AudienceHandoff
from gateway.channel_gate import STALL_WAIT, ChannelGate
from gateway.channel_health import ChannelHealth
from gateway.clock import Clock
from gateway.constants import (
    DEFAULT_LANGUAGE,
    JOB_CONTACT_FAILING,
    JOB_PLAN,
    JOB_SEND,
    MESSAGE_MISSING,
    NO_SUCH_CHANNEL,
)
from gateway.digest_plan import digest_entries
from gateway.errors import (
    ChannelUnavailable,
    DeadAddress,
    DeliveryError,
    LeaseShort,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.followups import ContactStore, after_failure, failover_job, run_contact_job
from gateway.jobs import JobHandler, registry
from gateway.lease_left import LEASE_SHORT, lease_ends_in
from gateway.message_cache import MessageCache
from gateway.metrics import LEASE_OVERRUNS, LEASE_TAKEOVERS, SEND_METERS, SMS_SEGMENTS
from gateway.models import (
    FINAL,
    TERMINAL_FAILURES,
    Attachment,
    ChannelName,
    Delivery,
    DeliveryStatus,
    Job,
    Message,
    Rendered,
)
from gateway.outcomes import OutcomeBatcher
from gateway.planner import planned, resolution_for
from gateway.ready_buffer import Ready, ReadyBuffer
from gateway.recheck import HoldStore, held, needs_recheck
from gateway.render import Renderer
from gateway.retries import attempt_note, backoff, record_attempt, unanswered_before
from gateway.sender_unit import add_sender_units
from gateway.settings import DispatchSettings
from gateway.store.ports import (
    DeliveryReport,
    DigestFiles,
    MessageStore,
    RateLimiter,
    SendLedger,
)
from gateway.store.priority import mark_urgent, urgent_scope
from gateway.store.records import LEASE_ENDED, SendOutcome
from gateway.translations import Translations
from gateway.urgent_handoff import UrgentHandoff

log = logging.getLogger(__name__)


def held_until(job_id: str, until: datetime) -> datetime:
    """When a send its channel's breaker holds is due: ``until`` plus up to a second, by a
    hash of the job and ``until``. The queue takes sends due at one time by id, so the
    same one would be every probe (one the relay refuses for itself: for ever, while the
    others wait); this way each probe round takes the held sends in a fresh order."""
    digest = hashlib.blake2b(f"{job_id}\x1f{until.isoformat()}".encode(), digest_size=4)
    return until + timedelta(microseconds=int.from_bytes(digest.digest(), "big") % 1_000_000)


PLAN_BATCH = 1000
URGENT_PROBE = 16  # jobs claimed on a wake-up while the buffer still holds normal work
URGENT_RESERVE = 0.1  # share of the dispatch slots normal work never takes
URGENT_POLL = 1.0  # seconds between claims for urgent work of other processes while busy
PLAN_BESIDE_URGENT = 100  # deliveries per plan transaction of normal work beside urgent
PLAN_GIVE_WAY = 0.5  # longest wait of a normal plan between two batches for urgent work
UNAVAILABLE_RECHECK = 60.0  # seconds before a stopped channel is tried again
RATE_WAIT = 1.0  # longest wait for a rate-limit slot in a send; longer: the job waits
# Most sends of a full channel set aside in the ready buffer: what it does in this share
# of the lease at its limit and latency (they start well before _release_stale). Beyond
# that, or once it stalls, its sends start and wait at its gate as before (channel_gate).
HELD_LEASE_SHARE = 0.25


def _chunks(
    deliveries: list[Delivery], jobs: list[Job], size: int
) -> list[tuple[list[Delivery], list[Job]]]:
    """Deliveries in chunks of ``size``, each with its send jobs; every other job (a
    daily digest's, whose ref is no delivery) goes with the first chunk."""
    if size >= len(deliveries):
        return [(deliveries, jobs)]
    chunks = [deliveries[i : i + size] for i in range(0, len(deliveries), size)]
    where = {d.id: n for n, chunk in enumerate(chunks) for d in chunk}
    their: list[list[Job]] = [[] for _ in chunks]
    for job in jobs:
        their[where.get(job.ref, 0)].append(job)
    return list(zip(chunks, their, strict=True))


class DispatchStore(
    HoldStore,
    ContactStore,
    MessageStore,
    DeliveryReport,
    SendLedger,
    RateLimiter,
    DigestFiles,
    Protocol,
):
    """What the dispatcher needs: the queue, messages, deliveries and the audience to plan
    and recheck (through HoldStore and ContactStore), the send ledger, the rate limits."""


# What a send may raise that says what became of it (gateway/errors.py); anything else
# is a bug, and the job's handler fails (Dispatcher._failed).
_SEND_ERRORS = (TransientDeliveryError, PermanentDeliveryError, ChannelUnavailable)


def _note_takeovers(jobs: list[Job]) -> None:
    """Report each job a claim took over because the lease of the claim before had ended:
    that worker stopped (a crash, a kill) or stalled, and may have done the job already,
    so it may be done twice (docs/redis.md, "A live worker's lease can run out")."""
    for job in jobs:
        if job.last_error == LEASE_ENDED:
            LEASE_TAKEOVERS.inc()
            log.warning(
                "a job was taken over after its lease ended; its last worker may have done it",
                extra={"job_id": job.id},
            )


class Dispatcher:
    def __init__(
        self,
        store: DispatchStore,
        channels: Mapping[str, Channel],
        renderer: Renderer,
        clock: Clock,
        settings: DispatchSettings,
        *,
        work_available: asyncio.Event | None = None,
        health: ChannelHealth | None = None,
        translations: Translations | None = None,
        attachments: Attachments | None = None,
        handlers: Mapping[str, JobHandler] | None = None,
        on_planned: Callable[[Message], Awaitable[None]] | None = None,
        audiences: AudienceHandoff | None = None,
        handoff: UrgentHandoff | None = None,
    ) -> None:
        self.store = store
        # The snapshots the intake read for its 202 (gateway/audience_handoff.py).
        self.audiences = audiences
        # Small urgent work queued in this process comes here past the queue
        # (gateway/urgent_handoff.py).
        self.handoff = handoff or UrgentHandoff(settings.urgent_handoff)
        # Staff text per recipient language (gateway/translations.py); None: never.
        self.translations = translations
        self.channels = channels
        self.renderer = renderer
        self.attachments = attachments
        self.clock = clock
        self.settings = settings
        self.work_available = work_available or asyncio.Event()
        # Per-channel circuit breaker and the state /readyz shows (gateway/channel_health).
        self.health = health or ChannelHealth(clock, stopped_pause=UNAVAILABLE_RECHECK)
        self.health.watch(list(channels))
        self._tasks: set[asyncio.Task[None]] = set()
        # Per message, read once however many of its sends start at once.
        self._messages: MessageCache[Message] = MessageCache()
        self._attachments: MessageCache[list[Attachment]] = MessageCache()
        self._slot_freed = asyncio.Event()
        # channel -> its in-flight limit here; a send waiting for one holds no slot above.
        self._gates: dict[str, ChannelGate] = {}
        # The ready buffer's bound on a full channel's set-aside sends (_held_bound): the
        # share of a lease it covers, and per channel what its rate limit allows in it.
        self._held_window = settings.lease_seconds * HELD_LEASE_SHARE
        self._rate_held: dict[str, int | None] = {}
        # The urgent lane's test of a channel's room (one call, not a wrapper's two).
        self._urgent_fits = functools.partial(self._channel_fits, urgent=True)
        # Deliveries of the send jobs just claimed, read in one round trip (see run_once).
        self._prefetched: dict[str, Delivery] = {}
        # Claimed but not started yet: jobs are claimed a batch at a time, not one per
        # freed slot, so a broadcast costs one claim transaction per batch.
        # Urgent jobs (emergency, absence) have a buffer of their own and start first.
        # A send whose channel is full waits there, set aside, while the jobs behind it
        # start (gateway/ready_buffer.py).
        self._ready: ReadyBuffer[Job] = ReadyBuffer()
        self._ready_urgent: ReadyBuffer[Job] = ReadyBuffer()
        # channel -> its sends started and not finished; task -> its channel.
        self._sending: dict[str, int] = {}
        self._sending_urgent: dict[str, int] = {}  # of which urgent
        self._task_channel: dict[asyncio.Task[None], str] = {}
        # task -> when the job it does was claimed (its lease runs from then): a send
        # that reaches its provider only after half the lease is given back (_admit),
        # and a job that outlasts its lease is reported (_note_overrun).
        self._task_claimed: dict[asyncio.Task[None], tuple[datetime, str]] = {}
        self._overran: set[asyncio.Task[None]] = set()  # reported for the job it does
        self._overruns_checked = -math.inf  # time.monotonic() of the last look (_release_stale)
        self._urgent_tasks: set[asyncio.Task[None]] = set()
        self._urgent_idle = asyncio.Event()  # set while no task does an urgent job
        self._urgent_idle.set()
        self._claimed_at = -math.inf  # time.monotonic() of the last claim
        self._urgent_flowing = False  # whether the last claim brought urgent jobs
        # Send outcomes are committed in batches (one transaction for many sends).
        self._outcomes = OutcomeBatcher(store, urgent_active=self._urgent_active)
        self._stopping = False  # stop() was called: no claims, no job taken up
        # Job kind -> handler: the dispatcher's own and the features' (the service builds
        # them with gateway.jobs.registry); a kind handled twice is refused here too.
        self._handlers = registry(self.handlers(), handlers or {})
        # Escalation's hook (gateway/escalation.py): a message planned. A failed delivery's
        # failover is a job committed with the failure (gateway/followups.py).
        self.on_planned = on_planned

    @property
    def kinds(self) -> tuple[str, ...]:
        """The job kinds this dispatcher claims: those it has a handler for."""
        return tuple(self._handlers)

    def handlers(self) -> dict[str, JobHandler]:
        """The dispatcher's own jobs: plan a message, send a delivery, and the follow-up of
        a dead address or device (gateway/followups.py)."""
        return {
            JOB_PLAN: self.plan,
            JOB_SEND: self.send,
            JOB_CONTACT_FAILING: lambda job: run_contact_job(self.store, job),
        }

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        """Claim and do jobs until :meth:`stop`; then let in-flight work finish."""
        self.handoff.attach(self._take_over, self.settings.lease_seconds, self.kinds)
        try:
            while not self._stopping:
                claimed = await self.run_once(wait=False)
                if claimed == 0:
                    # run_once cleared the event before its claim: a job queued since is seen.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self.work_available.wait(), timeout=self.settings.poll_interval
                        )
        finally:
            # Also when the loop died (a store error): no task takes up another job once
            # nothing releases stale ones, claims or hands the buffer back.
            self._stopping = True
            self.handoff.detach()
        await self._drain_in_flight()
        await self._outcomes.drain()
        await self._release_ready()

    def stop(self) -> None:
        self._stopping = True
        self.work_available.set()  # wakes the run loop

    async def run_once(self, *, wait: bool = True) -> int:
        """Claim what is due now (as many as there are free slots) and start it.

        With ``wait`` the call returns only when those jobs are done (tests, demo).
        Urgent work preempts: while the dispatcher is busy with a broadcast it still
        claims as soon as work is queued in this process (``work_available``) or a poll
        interval passed (work queued by another process), so an urgent job does not wait
        for the buffer to drain; urgent jobs start first, on slots normal work never
        takes, and while they run normal work keeps only its share of the slots.
        """
        await self._release_stale()
        free = self._free_slots()
        buffered = self._startable()
        if (free and not buffered) or self._wake_due():
            await self._claim(self._claim_size(free, buffered))
        started = self._start_ready()
        if not started and (free == 0 or self._ready or self._ready_urgent):
            # Claim again as soon as a send finishes (not on a timer): no slot stays empty.
            await self._busy_wait()
            return -1  # busy, not idle
        if wait and started:
            await asyncio.gather(*started)
        return len(started)

    def _take_over(self, jobs: list[Job], deliveries: dict[str, Delivery]) -> None:
        """Jobs handed over in this process (gateway/urgent_handoff.py), stored as claimed
        by it: ahead of the urgent buffer, started at once where there is room. The store
        is told, so a retry after another worker took one over gives nothing back. Each
        is due when its lease ends, so its claim was a lease before that."""
        self.store.hold_handed(jobs)
        lease = timedelta(seconds=self.settings.lease_seconds)
        self._prefetched.update(deliveries)
        ready = [Ready(job, job.due_at - lease, self._channel_of(job)) for job in jobs]
        self._ready_urgent.put_first(ready)
        self._start_ready()
        self._slot_freed.set()  # the run loop starts the rest as slots free up

    def _wake_due(self) -> bool:
        """Whether to claim although the buffer still holds work: new work was queued in
        this process, or URGENT_POLL passed since the last claim (work queued by another
        process, or due now). Not every poll interval: with SQLite each claim is a write
        transaction that the outcomes and plan batches of the broadcast wait for."""
        since = time.monotonic() - self._claimed_at
        return self.work_available.is_set() or since >= URGENT_POLL or self._urgent_refill_due()

    def _urgent_refill_due(self) -> bool:
        """Whether urgent work is flowing (the last claim brought some) and its buffer ran
        dry with room for URGENT_PROBE more: an emergency of thousands of sends is claimed
        as fast as its sends end, not a buffer's worth per URGENT_POLL."""
        room = min(URGENT_PROBE, self.settings.concurrency)
        return self._urgent_flowing and not self._ready_urgent and self._urgent_room() >= room

    def _urgent_active(self) -> bool:
        """Whether urgent jobs run or wait here: the broadcast's writes are kept short."""
        return bool(self._urgent_tasks or self._ready_urgent)

    def _urgent_room(self) -> int:
        """Slots urgent work could take that it holds neither running nor buffered."""
        return self.settings.concurrency - len(self._urgent_tasks) - len(self._ready_urgent)

    def _claim_size(self, free: int, buffered: bool) -> int:
        """A round of sends when the buffer is empty and there is room. Otherwise a probe
        for urgent work (the lanes give it urgent work first; any normal jobs it takes
        join the buffer) as large as the room urgent jobs have, so a large urgent message
        is not claimed a few jobs at a time; a single job once the buffer holds several
        rounds of normal work."""
        round_ = min(self.settings.batch, self.settings.concurrency)
        if free and not buffered:
            return max(free, round_)
        urgent_room = self._urgent_room()
        if len(self._ready) >= 4 * round_:
            return max(urgent_room, 1)
        return max(urgent_room, URGENT_PROBE)

    async def _claim(self, limit: int) -> None:
        self.work_available.clear()  # what is queued from now on wakes the next claim
        now = self.clock.now()
        # Urgent work enters through the claim: it goes before the broadcast's other
        # writes and reads (gateway/store/priority.py), as does the read of its deliveries.
        with urgent_scope():
            jobs = await self.store.claim_jobs(
                self.kinds,
                limit,
                now,
                self.settings.lease_seconds,
                normal_share=self.settings.normal_share,
            )
            self._claimed_at = time.monotonic()  # the poll interval runs from the answer
            if self._task_claimed:
                # A job still being done here whose lease ran out (a slow send) comes back
                # with a claim: it is its task's to end, not a second send's to start.
                doing = {job_id for _, job_id in self._task_claimed.values()}
                jobs = [job for job in jobs if job.id not in doing]
            _note_takeovers(jobs)
            refs = [job.ref for job in jobs if job.kind == JOB_SEND]
            if refs:  # their channels, to start each when its channel has room
                self._prefetched.update(await self.store.get_deliveries(refs))
        for job in jobs:
            ready = Ready(job, now, self._channel_of(job))
            (self._ready_urgent if job.urgent else self._ready).append(ready)
        self._urgent_flowing = any(job.urgent for job in jobs)

    def _start_ready(self) -> list[asyncio.Task[None]]:
        """Start buffered jobs while there is room: urgent ones first; a send whose
        channel is full is set aside until it has room (gateway/ready_buffer.py)."""
        started: list[asyncio.Task[None]] = []
        if self._stopping:
            return started
        while (ready := self._take_next()) is not None:
            started.append(self._start(ready))
        return started

    def _take_next(self) -> Ready[Job] | None:
        """The buffered job to start next, if one may start now: urgent ones first; a
        send whose channel is full is set aside until it has room. The one rule both
        :meth:`_start_ready` and a task that finished its job (:meth:`_work`) go by."""
        if self._ready_urgent and self._room(urgent=True):
            ready = self._ready_urgent.take(self._urgent_fits)
            if ready is not None:
                return ready
        if self._ready and self._room(urgent=False):
            return self._ready.take(self._channel_fits)
        return None

    def _channel_of(self, job: Job) -> str | None:
        """A send job's channel, when its delivery was read with the claim."""
        if job.kind != JOB_SEND:
            return None
        delivery = self._prefetched.get(job.ref)
        return None if delivery is None else delivery.channel

    def _channel_fits(self, channel: str, *, urgent: bool = False) -> bool:
        """Whether one more send of ``channel`` may start: fewer of its sends run than
        its in-flight limit plus as many waiting at its gate without a dispatch slot
        (channel_gate.py; one more would wait there holding a slot other channels use),
        or it has more set aside than :meth:`_held_bound` allows, or it stalled or fell
        silent (started, the gate puts such sends off: its stall rule). An urgent send
        counts only urgent ones: it is never set aside behind a broadcast's normal
        sends, as its gate lets it go first."""
        gate = self._gates.get(channel) or self._gate(channel)
        sending = self._sending_urgent if urgent else self._sending
        if sending.get(channel, 0) < 2 * gate.limit or gate.silent(STALL_WAIT):
            return True
        held = self._ready_urgent.held(channel)
        if not urgent:
            held += self._ready.held(channel)
        return held >= self._held_bound(channel, gate)

    def _held_bound(self, channel: str, gate: ChannelGate) -> int:
        """How many sends of ``channel`` may be set aside: what it gets through in
        HELD_LEASE_SHARE of a lease at its limit and latency, and at its rate limit if it
        has one (beyond it they start, and the rate limit puts them off to their time)."""
        bound = gate.clears_in(self._held_window)
        cap = self._rate_held.get(channel)
        return bound if cap is None else min(bound, cap)

    def _rate_cap(self, channel: str) -> int | None:
        """Sends of ``channel`` its rate limit lets through in the held window (None: no
        rate limit); fixed by the settings and the channel, worked out once."""
        found = self.channels.get(channel)
        rate = self.settings.channel_rate.get(
            channel, found.rate_per_second if found is not None else None
        )
        return math.ceil(rate * self._held_window) if rate else None

    def _startable(self) -> bool:
        """Whether the buffers hold a job that could start now."""
        return self._ready_urgent.startable(self._urgent_fits) or self._ready.startable(
            self._channel_fits
        )

    def _room(self, *, urgent: bool) -> bool:
        """Whether one more job may start. Urgent jobs may take every slot; normal jobs
        leave URGENT_RESERVE of them free, and while urgent jobs run or wait they keep
        only ``normal_share`` of the slots (at least one: never starved)."""
        busy = self.settings.concurrency - self._free_slots()
        if urgent:
            return busy < self.settings.concurrency
        reserve = math.ceil(self.settings.concurrency * URGENT_RESERVE)
        if busy >= max(self.settings.concurrency - reserve, 1):
            return False
        if self._urgent_tasks or self._ready_urgent:
            share = max(math.ceil(self.settings.concurrency * self.settings.normal_share), 1)
            return len(self._tasks) - len(self._urgent_tasks) < share
        return True

    async def _busy_wait(self) -> None:
        """Until a task ends or ends an urgent job, a send waits at its gate without a
        slot, or work is queued (at most a poll interval, and URGENT_POLL)."""
        self._slot_freed.clear()
        freed = asyncio.ensure_future(self._slot_freed.wait())
        queued = asyncio.ensure_future(self.work_available.wait())
        try:
            await asyncio.wait(
                (freed, queued),
                # Tasks go on to the next job without waking this loop: URGENT_POLL is
                # kept by the timeout, not by the ends of sends.
                timeout=min(self.settings.poll_interval, URGENT_POLL),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            freed.cancel()
            queued.cancel()

    async def _release_stale(self) -> None:
        """Give back buffered jobs that waited half their lease (slow providers held every
        slot): started later, another worker could take them over mid-send. And, once a
        second, report the jobs in flight here whose lease has run out."""
        if time.monotonic() - self._overruns_checked >= 1.0:
            self._overruns_checked = time.monotonic()
            lease_ago = self.clock.now() - timedelta(seconds=self.settings.lease_seconds)
            for task, (claimed, _) in list(self._task_claimed.items()):
                if claimed < lease_ago:
                    self._note_overrun(task)
        limit = self._half_lease_ago()
        for ready in (self._ready_urgent, self._ready):
            for job in list(ready.take_older(limit)):
                await self._give_back_stale(job)

    def _lease_half_gone(self) -> bool:
        """Whether the current task's job was claimed half its lease ago or earlier."""
        task = asyncio.current_task()
        held = self._task_claimed.get(task) if task is not None else None
        return held is not None and held[0] < self._half_lease_ago()

    def _note_overrun(self, task: asyncio.Task[None]) -> None:
        """Report, once, a job done here that outlasted its lease (its send was slow, its
        worker stalled: a loaded machine, a long pause): another worker may take it over
        and do it too, the one duplicate a live worker can cause (docs/redis.md, "A live
        worker's lease can run out"). Seen by the run loop while the job goes on, or by
        its task when the job ends (the loop may have stalled too)."""
        held = self._task_claimed.get(task)
        if held is None or task in self._overran:
            return
        claimed, job_id = held
        took = (self.clock.now() - claimed).total_seconds()
        if took > self.settings.lease_seconds:
            self._overran.add(task)
            LEASE_OVERRUNS.inc()
            log.warning(
                "a job outlasted its lease; another worker may do it too",
                extra={"job_id": job_id, "seconds": round(took, 3)},
            )

    def _lease_left(self, task: asyncio.Task[None]) -> float:
        """Seconds until the lease of the job ``task`` does ends (a whole lease if unknown)."""
        lease = self.settings.lease_seconds
        held = self._task_claimed.get(task)
        return lease if held is None else lease - (self.clock.now() - held[0]).total_seconds()

    def _half_lease_ago(self) -> datetime:
        return self.clock.now() - timedelta(seconds=self.settings.lease_seconds / 2)

    async def _give_back_stale(self, job: Job) -> None:
        self._prefetched.pop(job.ref, None)
        await self.store.postpone_job(job.id, self.clock.now(), "lease_half_gone")

    async def run_until_idle(self, max_rounds: int = 10_000) -> None:
        """Do every job that is due now, including jobs that those jobs queue."""
        for _ in range(max_rounds):
            if await self.run_once(wait=True) == 0 and not self._tasks:
                return
        raise RuntimeError("dispatcher did not become idle")

    def _free_slots(self) -> int:
        waiting = 0  # sends waiting at their gate without a slot (a loop: no call per gate)
        for gate in self._gates.values():
            waiting += gate.waiting - gate.excess
        return max(self.settings.concurrency - len(self._tasks) + waiting, 0)

    def _gate(self, channel: str) -> ChannelGate:
        gate = self._gates.get(channel)
        if gate is None:
            limit = self.settings.in_flight_limit(channel)
            gate = self._gates[channel] = ChannelGate(limit, self._slot_freed.set)
            self._rate_held[channel] = self._rate_cap(channel)
        return gate

    def _start(self, ready: Ready[Job]) -> asyncio.Task[None]:
        with urgent_scope(ready.job.urgent):  # the task's store calls go first if urgent
            task = asyncio.create_task(self._work(ready.job))
        self._book(task, ready)
        task.add_done_callback(self._finished)
        return task

    async def _work(self, job: Job) -> None:
        """Do ``job``, then the next buffered job while one may start: one task per
        dispatch slot in use, not one per job. The slot passes from a job to the next
        only once the first job's outcome is stored (the crash bound), and the next is
        the one :meth:`_start_ready` would start (urgent first, a full channel's set
        aside). Without one the task ends and the run loop claims more."""
        task = asyncio.current_task()
        assert task is not None
        urgent = job.urgent
        while True:
            # Its channel's requests stay within the job's lease (gateway/lease_left.py).
            lease_ends_in(self._lease_left(task))
            # The job's handler is awaited here, not in a function of its own: each
            # frame of the chain is resumed at every await of a send.
            handler = self._handlers.get(job.kind)
            try:
                await (self._unknown(job) if handler is None else handler(job))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(job, exc)
            self._note_overrun(task)
            self._unbook(task)
            ready = None if self._stopping else self._take_next()
            while ready is not None and ready.claimed_at < self._half_lease_ago():
                await self._give_back_stale(ready.job)  # as _release_stale does
                ready = None if self._stopping else self._take_next()
            if ready is None:
                self._slot_freed.set()  # the run loop claims, or starts what has room
                return
            if urgent and (not ready.job.urgent or not self._ready_urgent):
                # Urgent work ends here or its buffer ran dry: the normal share and the
                # refill of urgent work (_urgent_refill_due) are the run loop's to redo.
                self._slot_freed.set()
            job = ready.job
            self._book(task, ready)
            if job.urgent != urgent:  # the task's own context: no scope to leave
                urgent = job.urgent
                mark_urgent(urgent)

    def _book(self, task: asyncio.Task[None], ready: Ready[Job]) -> None:
        """Count ``task`` as doing the job: a dispatch slot, and a send of its channel."""
        self._task_claimed[task] = (ready.claimed_at, ready.job.id)
        channel = ready.channel
        if channel is not None:
            self._sending[channel] = self._sending.get(channel, 0) + 1
            self._task_channel[task] = channel
        self._tasks.add(task)
        if ready.job.urgent:
            if not self._urgent_tasks:
                self._urgent_idle.clear()
            self._urgent_tasks.add(task)
            if channel is not None:
                self._sending_urgent[channel] = self._sending_urgent.get(channel, 0) + 1

    def _unbook(self, task: asyncio.Task[None]) -> None:
        """Undo :meth:`_book` (nothing if already undone)."""
        self._task_claimed.pop(task, None)
        self._overran.discard(task)
        channel = self._task_channel.pop(task, None)
        urgent = task in self._urgent_tasks
        if channel is not None:
            self._sending[channel] -= 1
            if urgent:
                self._sending_urgent[channel] -= 1
        self._tasks.discard(task)
        if urgent:
            self._urgent_tasks.discard(task)
            if not self._urgent_tasks:
                self._urgent_idle.set()

    def _finished(self, task: asyncio.Task[None]) -> None:
        """A task ended: after its last job, or cancelled or failed within one."""
        self._unbook(task)
        self._slot_freed.set()

    async def _release_ready(self) -> None:
        """Hand claimed jobs that never started back to the queue, due now, so the next
        start (or another worker) takes them at once instead of after their lease."""
        now = self.clock.now()
        for ready in (self._ready_urgent, self._ready):
            for job in list(ready.take_all()):
                self._prefetched.pop(job.ref, None)
                await self.store.postpone_job(job.id, now, "shutdown")

    async def _drain_in_flight(self) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.settings.shutdown_timeout)
        for task in pending:
            task.cancel()
        if pending:
            # Their leases run out and another start picks them up: nothing is lost.
            log.warning("shutdown left jobs unfinished", extra={"jobs": len(pending)})
            await asyncio.gather(*pending, return_exceptions=True)

    async def _unknown(self, job: Job) -> None:
        log.error("unknown job kind", extra={"kind": job.kind})
        await self.store.finish_job(job.id)

    async def _failed(self, job: Job, exc: Exception) -> None:
        """A job's handler raised: a bug, or a store that failed. Retried later; a send
        out of attempts is recorded as failed."""
        log.exception("job failed unexpectedly", extra={"kind": job.kind}, exc_info=exc)
        if job.kind == JOB_SEND and job.attempts >= self.settings.max_attempts:
            # A bug (a broken template, say) must not keep a delivery queued forever.
            delivery = await self.store.get_delivery(job.ref)
            if delivery is None:
                await self.store.finish_job(job.id)
            else:
                reason = f"error:{type(exc).__name__}"
                await self._finish(job, delivery, DeliveryStatus.failed, reason=reason)
            return
        delay = backoff(job.attempts, self.settings.backoff_base, self.settings.backoff_max, None)
        await self.store.retry_job(
            job.id, self.clock.now() + timedelta(seconds=delay), type(exc).__name__
        )

    # ------------------------------------------------------------------ plan

    async def plan(self, job: Job) -> None:
        message = await self.store.get_message(job.tenant_id, job.ref)
        if message is None:
            await self.store.finish_job(job.id)
            return
        snapshot = self.audiences.take(message) if self.audiences is not None else None
        if snapshot is None:
            snapshot = await self.store.load_audience(message.tenant_id, message.audience)
        await add_sender_units(self.store, message, snapshot)
        now = self.clock.now()
        resolution = resolution_for(message, snapshot, now)
        if self.translations is not None and message.event_type == "message.created":
            # Before any delivery exists: every send of the message finds its language's
            # row (a provider outage ends in a "failed" row, never a delay past its timeout).
            recipients = {r.person_id for r in resolution.recipients}
            await self.translations.prepare(message, snapshot, recipients)
        deliveries: list[Delivery] = []
        jobs: list[Job] = []
        for delivery, send_job in planned(message, snapshot, resolution, now):
            if send_job is not None:
                jobs.append(send_job)
            deliveries.append(delivery)
            if len(deliveries) >= PLAN_BATCH:
                if not job.urgent:
                    await self._give_way()
                await self._write_plan(deliveries, jobs, yields=not job.urgent)
                deliveries, jobs = [], []
        await self._write_plan(deliveries, jobs, yields=not job.urgent)
        await self.store.mark_planned(message.tenant_id, message.id, self.clock.now())
        if self.on_planned is not None:
            await self.on_planned(message)
        await self.store.finish_job(job.id)

    async def _give_way(self) -> None:
        """Between two batches of a normal message's plan: wait while urgent jobs run (at
        most PLAN_GIVE_WAY seconds, so a broadcast's planning goes on at least at one
        batch per PLAN_GIVE_WAY): its write transaction and CPU slice would delay them."""
        deadline = time.monotonic() + PLAN_GIVE_WAY
        while self._urgent_tasks and (left := deadline - time.monotonic()) > 0:
            # A task goes on to the next job: the end of its urgent one is no task's end.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent_idle.wait(), timeout=left)

    async def _write_plan(
        self, deliveries: list[Delivery], jobs: list[Job], *, yields: bool = False
    ) -> None:
        """Store planned deliveries and their send jobs; with ``yields`` (a normal message)
        in short transactions while urgent work runs, as an urgent write may wait for one."""
        if deliveries:
            # Held for a daily digest: the digest's entries first (gateway/store/digests.py).
            await self.store.digests.add_digest_entries(digest_entries(deliveries))
            step = len(deliveries)
            if yields and self._urgent_active():
                step = PLAN_BESIDE_URGENT
            for part, part_jobs in _chunks(deliveries, jobs, step):
                await self.store.add_deliveries(part, part_jobs)
            self.work_available.set()

    # ------------------------------------------------------------------ send

    async def send(self, job: Job) -> None:
        delivery = self._prefetched.pop(job.ref, None) or await self.store.get_delivery(job.ref)
        if delivery is None or delivery.status in FINAL:
            # Finished before a crash, or cancelled: never send twice.
            await self._drop(job, delivery)
            return
        # Quiet hours not over yet; or rights or reach changed since planning (gateway/recheck).
        # The check is sync for a normal send: no coroutine per send for a "no".
        if needs_recheck(delivery) and await held(
            self.store, self._message, self._outcomes.commit, job, delivery, self.clock.now()
        ):
            return
        name = delivery.channel
        channel = self.channels.get(name)
        if channel is None:
            await self._finish(job, delivery, DeliveryStatus.failed, reason=NO_SUCH_CHANNEL)
            return
        # The channel's breaker is open: the job waits (no attempt used up).
        paused_until = self.health.paused_until(name)
        if paused_until is not None:
            await self.store.postpone_job(
                job.id, held_until(job.id, paused_until), self.health.reason(name)
            )
            return
        message = self._messages.get(delivery.message_id) or await self._message(delivery)
        if message is None:
            await self._finish(job, delivery, DeliveryStatus.failed, reason=MESSAGE_MISSING)
            return
        content = await self._render(message, delivery)
        # Concurrency: the free task slots run_once claims for, and the channel's gate.
        admitted = await self._admit(job, name, channel)
        if admitted is None:
            return
        gate, probe = admitted
        started = time.perf_counter()
        elapsed = 0.0
        outcome = "sent"
        short = False  # stopped short of its lease's end: no request was answered
        try:
            try:
                receipt = await channel.send(delivery, content)
            except BaseException as exc:
                # The channel's circuit breaker learns of every outcome (channel_health.py).
                self.health.record(name, exc, probe=probe)
                short = isinstance(exc, LeaseShort)
                raise
            finally:
                # Left when the provider answered, not once the outcome is stored: the
                # limit is of sends at the provider. The dispatch slot is held until the
                # outcome is stored (the crash bound).
                elapsed = time.perf_counter() - started
                gate.leave(None if short else elapsed)
            self.health.record(name, None, probe=probe)
        except _SEND_ERRORS as exc:
            outcome = await self._not_sent(job, delivery, exc)
        else:
            if receipt.segments:
                SMS_SEGMENTS.observe(receipt.segments)
            await self._outcomes.commit(
                SendOutcome(
                    job.id,
                    delivery.id,
                    receipt.status,
                    self.clock.now(),
                    detail=receipt.detail,
                    provider_id=receipt.provider_id,
                    segments=receipt.segments,
                )
            )
        finally:
            # The provider's time alone, not the outcome's commit after it.
            SEND_METERS.observe(name, outcome, elapsed)

    async def _not_sent(self, job: Job, delivery: Delivery, exc: DeliveryError) -> str:
        """Store what a send's error means for the job and its delivery; the outcome's
        name (for the send meters)."""
        if isinstance(exc, LeaseShort):
            # Stopped before a request that could outlast the lease (gateway/lease_left.py):
            # put off, not tried, as a send given back at half its lease is.
            await self.store.postpone_job(job.id, self.clock.now(), LEASE_SHORT)
            return LEASE_SHORT
        if isinstance(exc, TransientDeliveryError):
            await self._transient(job, delivery, exc)
            return "transient"
        if isinstance(exc, ChannelUnavailable):
            await self._channel_down(job, delivery, exc)
            return "unavailable"
        dead = isinstance(exc, DeadAddress)
        reason = exc.code or ("dead_address" if dead else "permanent")
        await self._finish(job, delivery, DeliveryStatus.failed, reason=reason, dead=dead)
        return "permanent"

    async def _admit(
        self, job: Job, name: str, channel: Channel
    ) -> tuple[ChannelGate, bool] | None:
        """Take a slot of the channel's rate limit (one for the whole deployment: the
        setting, else the channel's own) and of the tenant's share of it where a
        ``tenant_channel_rate`` is set, pass its circuit breaker and take a slot of its
        gate; (gate, whether this send probes the breaker), or None when the job was put
        off (no rate slot within RATE_WAIT, the breaker is open, or the channel is
        stalled: channel_gate.py)."""
        rate = self.settings.channel_rate.get(name, channel.rate_per_second)
        if rate and not await self._rate_slot(job, f"channel:{name}", rate):
            return None
        tenant_rate = self.settings.tenant_channel_rate.get(name)
        if tenant_rate and not await self._rate_slot(
            job, f"tenant:{job.tenant_id}:{name}", tenant_rate
        ):
            return None
        gate = self._gate(name)
        # A free slot is taken without a coroutine; else the send waits in line.
        put_off = None if gate.take_free(job.urgent) else await gate.enter(urgent=job.urgent)
        if put_off is not None:
            due = self.clock.now() + timedelta(seconds=put_off)
            await self.store.postpone_job(job.id, due, "channel_stalled")
            return None
        if self._lease_half_gone():
            # Taken from the buffer in time, it then waited (for its channel, a rate slot,
            # a stalled loop) until half its lease was gone: sent now, its lease could end
            # mid-send and another worker send it too. Given back, as the buffer's are.
            gate.leave(None)
            await self.store.postpone_job(job.id, self.clock.now(), "lease_half_gone")
            return None
        # Last, so a send the breaker lets through as its probe surely goes.
        wait_until, probe = self.health.admit(name)
        if wait_until is not None:  # the breaker opened while this send waited for a slot
            gate.leave(None)
            await self.store.postpone_job(
                job.id, held_until(job.id, wait_until), self.health.reason(name)
            )
            return None
        return gate, probe

    @contextlib.asynccontextmanager
    async def admitted(self, job: Job, name: str) -> AsyncIterator[bool]:
        """For a handler that sends outside :meth:`send` (the daily digest): its send is
        let in as a send job's is (:meth:`_admit`: the channel's rate limits, its breaker,
        a slot of its gate). Yields False when the job was put off instead (postponed in
        the store: the handler stops there), else True; the block's outcome goes to the
        channel's breaker, and the gate's slot is left when the block ends."""
        paused_until = self.health.paused_until(name)
        if paused_until is not None:  # as send: no rate slot or gate wait for an outage
            await self.store.postpone_job(
                job.id, held_until(job.id, paused_until), self.health.reason(name)
            )
            yield False
            return
        admitted = await self._admit(job, name, self.channels[name])
        if admitted is None:
            yield False
            return
        gate, probe = admitted
        started = time.perf_counter()
        short = False
        try:
            yield True
        except BaseException as exc:
            self.health.record(name, exc, probe=probe)
            short = isinstance(exc, LeaseShort)
            raise
        else:
            self.health.record(name, None, probe=probe)
        finally:
            gate.leave(None if short else time.perf_counter() - started)

    async def _rate_slot(self, job: Job, key: str, rate: float) -> bool:
        """Wait for a slot of the limit named ``key``, shared by every process (one
        second's worth may go at once); False when it is further off: the job is put off
        to then."""
        now = self.clock.now()
        wait = await self.store.acquire_rate(key, rate, math.ceil(rate), now, max_wait=RATE_WAIT)
        if wait > RATE_WAIT:
            await self.store.postpone_job(job.id, now + timedelta(seconds=wait), "rate_limited")
            return False
        if wait > 0:
            await asyncio.sleep(wait)
        return True

    async def _render(self, message: Message, delivery: Delivery) -> Rendered:
        """The content for this delivery, with the message's files (an email carries
        the small ones itself)."""
        files = self._known_files(message)
        if files is None:
            files = await self._files(message)
        translation, source = None, DEFAULT_LANGUAGE
        if self.translations is not None and message.event_type == "message.created":
            # The stored row of the recipient's language (gateway/translations.py).
            known = self.translations.known_for_language(message, delivery.language)
            source, translation = (
                known
                if known is not None
                else await self.translations.for_language(message, delivery.language)
            )
        content = self.renderer.render(
            message, delivery, files, translation=translation, source_language=source
        )
        if files and delivery.channel == ChannelName.email and self.attachments is not None:
            content.files = await self.attachments.email_files(files)
        return content

    def _known_files(self, message: Message) -> list[Attachment] | None:
        """The message's files when known without a read (none, or read before), else None."""
        if self.attachments is None or message.event_type != "message.created":
            return []
        return self._attachments.get(message.id)

    async def _files(self, message: Message) -> list[Attachment]:
        attachments = self.attachments
        if attachments is None or message.event_type != "message.created":
            return []
        files = await self._attachments.load(
            message.id, lambda: attachments.for_message(message.tenant_id, message.id)
        )
        return files or []

    async def _message(self, delivery: Delivery) -> Message | None:
        return await self._messages.load(
            delivery.message_id,
            lambda: self.store.get_message(delivery.tenant_id, delivery.message_id),
        )

    async def _finish(
        self,
        job: Job,
        delivery: Delivery,
        status: DeliveryStatus,
        *,
        reason: str,
        dead: bool = False,
    ) -> None:
        """Commit a send's end; a failure commits its follow-ups with it (a failover, and
        with ``dead`` the pruning of the device or the failing mark of the address)."""
        now = self.clock.now()
        jobs: list[Job] = []
        if status in TERMINAL_FAILURES:
            jobs = after_failure(
                delivery, now, dead_reason=reason if dead else None, urgent=job.urgent
            )
        await self._outcomes.commit(
            SendOutcome(
                job.id, delivery.id, status, now, detail=reason, reason=reason, jobs=tuple(jobs)
            )
        )
        if jobs:
            self.work_available.set()

    async def _drop(self, job: Job, delivery: Delivery | None) -> None:
        """End the job of a delivery that is gone or final. If it failed, its failover is
        queued again (ignored while it is queued; run again, it plans nothing new): on
        Redis Cluster the follow-ups and the move of a failed send go to two nodes, and a
        crash can leave the move without them — and this job behind."""
        failover = None
        if delivery is not None and delivery.status in (
            DeliveryStatus.failed,
            DeliveryStatus.undelivered,
        ):
            failover = failover_job(delivery, self.clock.now(), urgent=job.urgent)
        if failover is None:
            await self.store.finish_job(job.id)
            return
        await self.store.add_deliveries([], [failover])
        await self.store.finish_job(job.id)

    async def _transient(self, job: Job, delivery: Delivery, exc: TransientDeliveryError) -> None:
        code = exc.code or "transient"
        if exc.maybe_sent and await unanswered_before(self.store, delivery.id, code):
            # Handed over whole twice without an answer: a relay that takes mail and answers
            # too late. Each try again could be one more copy in the family's inbox, so it
            # ends here as sent, unconfirmed: one copy too many at most (RFC 1047).
            await self._finish(job, delivery, DeliveryStatus.sent, reason=f"unconfirmed:{code}")
            return
        paused = self.health.paused_until(delivery.channel)
        age = (self.clock.now() - delivery.created_at).total_seconds()
        held = not exc.per_recipient and not exc.maybe_sent  # a held send is sent again
        if paused is not None and held and age < self.settings.outage_grace:
            # The channel failed, not this delivery, and its breaker is open (this failure
            # opened it, or this send was its probe): the send waits for the channel as
            # the sends the breaker holds do, without using up an attempt (for the outage
            # grace). Else the probes of a relay down for minutes use up one delivery's
            # attempts after another.
            # Held as they are (held_until), so the next probe may be another's: a send
            # the relay keeps refusing for itself does not hold up the rest, and its
            # attempts count again once another's probe has closed the breaker.
            retry_at = self.clock.now() + timedelta(seconds=exc.retry_after or 0)
            due = held_until(job.id, max(paused, retry_at))
            await self.store.postpone_job(job.id, due, self.health.reason(delivery.channel))
            return
        if job.attempts >= self.settings.max_attempts:
            await self._finish(job, delivery, DeliveryStatus.failed, reason=f"gave_up:{code}")
            return
        delay = backoff(
            job.attempts, self.settings.backoff_base, self.settings.backoff_max, exc.retry_after
        )
        now = self.clock.now()
        # The breaker is closed here: a channel-wide failure that left it open was put off
        # above, and a failure of this recipient alone tells it the channel works.
        due = now + timedelta(seconds=delay)
        # One history row per failed attempt: its number, the error, the next try.
        await record_attempt(
            self.store, delivery.id, now, attempt_note(job.attempts, code, due, now)
        )
        await self.store.retry_job(job.id, due, code)

    async def _channel_down(self, job: Job, delivery: Delivery, exc: ChannelUnavailable) -> None:
        # The job waits for the next probe like the others; the channel stays stopped
        # (/readyz's body says so) until a send gets an answer that is not this refusal.
        due = self.health.paused_until(delivery.channel) or self.clock.now()
        await self.store.postpone_job(job.id, held_until(job.id, due), exc.code or "unavailable")

    @property
    def unavailable(self) -> dict[str, str]:
        """Channels not ok -> their last error code."""
        return self.health.unavailable()
