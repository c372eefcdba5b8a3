"""Escalation: a message not read in time goes out again on the next channel.

A message that asks for a read receipt (``read_receipt``; absence and emergency
always) gets a stored ``escalate`` job when planning finishes, due after the
tenant's delay for its category (:class:`gateway.settings.EscalationSettings`,
overridable per tenant). When it runs, every recipient not yet reached
(:meth:`gateway.tracker.Reach.unreached`) gets the message on the first channel
of the policy's order (push → SMS → email) that they have a contact point for
and that this message has not used for them yet; then the next step is stored,
until everyone is reached or the channels are exhausted. Being stored work with
a due time, escalation survives restarts.

A delivery that fails permanently (dead address, permanent provider error)
queues a ``failover`` at once: the recipient gets the next channel without
waiting. For a message without read receipt that happens only when the failure
left the recipient with no channel outside the app.

Escalated deliveries are planned by the normal planner, so their ids derive
from (event, recipient, channel, target) like every other delivery: a channel
once used is never planned twice. They carry ``context["escalation"]`` naming
the step (``step:2``, ``failover:sms``), which makes a step that runs again
after a crash a no-op. Before planning, the resolver runs again on a fresh snapshot
(:mod:`gateway.recheck`): a guardian blocked or whose information access was revoked
since planning gets no further step, and a suppression record with the reason instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from gateway.clock import Clock
from gateway.constants import (
    ABSENCE_CONTEXT_KEY,
    ESCALATION_KEY,
    JOB_ESCALATE,
    PER_CHILD,
    SUPPRESSED_CHANNEL,
)
from gateway.followups import FAILOVER, QUIET_CHANNELS
from gateway.jobs import JobHandler
from gateway.metrics import ESCALATED
from gateway.models import (
    TERMINAL_FAILURES,
    Audience,
    Category,
    ChannelName,
    Delivery,
    DirectorySnapshot,
    Job,
    Message,
    Preferences,
    Role,
)
from gateway.planner import local_time, plan_deliveries, queue, route, urgent_work
from gateway.recheck import RecheckStore, allowed_children, recheck_audience
from gateway.resolver import Recipient, Resolution, Suppression, resolve
from gateway.sender_unit import add_sender_units
from gateway.settings import EscalationSettings, VoiceSettings
from gateway.store.ports import DeliveryStore, JobQueue, MessageStore, PolicyStore
from gateway.tracker import asks_receipt, reach

log = logging.getLogger(__name__)

STEP = "step"
_QUIET = QUIET_CHANNELS


def merge_override(base: EscalationSettings, override: Mapping[str, Any]) -> dict[str, Any]:
    """The data of ``base`` with a partial override laid over it (``after_minutes`` per key)."""
    data = base.model_dump(mode="json")
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def effective_policy(
    base: EscalationSettings, override: Mapping[str, Any] | None
) -> EscalationSettings:
    """The policy in force: ``base`` (the settings) with a tenant's override over it."""
    if not override:
        return base
    return EscalationSettings.model_validate(merge_override(base, override))


def policy_in_force(
    base: EscalationSettings, override: Mapping[str, Any] | None, tenant_id: str
) -> EscalationSettings:
    """:func:`effective_policy`, falling back to ``base`` if a stored override no longer
    validates (e.g. after the settings changed under it)."""
    try:
        return effective_policy(base, override)
    except ValidationError:
        log.warning("ignoring an invalid escalation override", extra={"tenant": tenant_id})
        return base


def delay(policy: EscalationSettings, category: Category) -> timedelta:
    minutes: int = getattr(policy.after_minutes, category.value)
    return timedelta(minutes=minutes)


def step_job(message: Message, step: int, due: datetime) -> Job:
    return Job(
        id=f"{JOB_ESCALATE}:{message.id}:{step}",
        tenant_id=message.tenant_id,
        kind=JOB_ESCALATE,
        ref=f"{message.id}:{STEP}:{step}",
        due_at=due,
        urgent=urgent_work(message.category),
    )


class EscalationStore(DeliveryStore, MessageStore, JobQueue, PolicyStore, RecheckStore, Protocol):
    """What escalation needs: deliveries and reads of a message, its audience, the queue
    and the tenant's policy override."""


class Escalator:
    """Schedules and does escalation work; ``run`` is the handler of ``escalate`` jobs."""

    def __init__(
        self,
        store: EscalationStore,
        clock: Clock,
        settings: EscalationSettings,
        *,
        work_available: asyncio.Event | None = None,
        voice: VoiceSettings | None = None,
        stop: Callable[[Job], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        # Calls as the last step of voice.categories (channels/voice.py), when enabled.
        self.voice = voice
        self.work_available = work_available or asyncio.Event()
        # Whether a job's message is no longer followed up at all (a cancelled absence
        # alert: gateway.absence.alert_cancelled), given by the service.
        self.stop = stop

    def handlers(self) -> dict[str, JobHandler]:
        """Escalation's timed steps and failovers."""
        return {JOB_ESCALATE: self.run}

    def order(self, policy: EscalationSettings, message: Message) -> list[str]:
        """The escalation channels for ``message``: the policy's, a call last where voice
        is enabled for its category (a policy listing "voice" already keeps its place)."""
        order: list[str] = list(policy.channels)
        voice = self.voice
        if voice is not None and voice.enabled and message.category.value in voice.categories:
            if ChannelName.voice.value not in order:
                order.append(ChannelName.voice.value)
        elif ChannelName.voice.value in order and (voice is None or not voice.enabled):
            order.remove(ChannelName.voice.value)  # no call without the voice channel
        return order

    async def policy(self, tenant_id: str) -> EscalationSettings:
        """The tenant's policy in force."""
        override = await self.store.get_escalation_override(tenant_id)
        return policy_in_force(self.settings, override, tenant_id)

    # ------------------------------------------------------------------ hooks

    async def after_plan(self, message: Message) -> None:
        """Store the first step of a message that asks for a read receipt (Dispatcher hook)."""
        first = await self.first_step(message)
        if first is not None:
            # An existing job (a plan job run twice) is left as it is.
            await self.store.add_deliveries([], [first])

    async def first_step(self, message: Message) -> Job | None:
        """The job of a message's first step, due from now, if it asks for a read receipt
        and the tenant's policy escalates (stored by the caller, maybe with other jobs)."""
        if not asks_receipt(message):
            return None
        policy = await self.policy(message.tenant_id)
        if not policy.enabled or not policy.channels:
            return None
        return step_job(message, 1, self.clock.now() + delay(policy, message.category))

    # ------------------------------------------------------------------ jobs

    async def run(self, job: Job) -> None:
        """Do one ``escalate`` job: a timed step or a failover."""
        if self.stop is not None and await self.stop(job):
            await self.store.finish_job(job.id)
            return
        message_id, _, rest = job.ref.partition(":")
        kind, _, argument = rest.partition(":")
        message = await self.store.get_message(job.tenant_id, message_id)
        if message is not None:
            policy = await self.policy(job.tenant_id)
            if policy.enabled and policy.channels:
                if kind == STEP:
                    await self._step(message, int(argument), policy)
                elif kind == FAILOVER:
                    channel, _, recipient_id = argument.partition(":")
                    await self._failover(message, channel, recipient_id, policy)
        await self.store.finish_job(job.id)

    async def _step(self, message: Message, step: int, policy: EscalationSettings) -> None:
        deliveries = await self.store.list_deliveries(message.tenant_id, message.id)
        reads = await self.store.list_reads(message.tenant_id, message.id)
        unreached = reach(message, deliveries, reads).unreached()
        if not unreached:
            log.info("escalation stopped: reached", extra={"message_id": message.id})
            return
        wanted = set(unreached)
        targets: dict[str, list[Delivery]] = defaultdict(list)
        for d in deliveries:
            if d.recipient_id in wanted and d.channel != SUPPRESSED_CHANNEL:
                targets[d.recipient_id].append(d)
        order = self.order(policy, message)
        planned, more = await self._plan(message, targets, f"{STEP}:{step}", order)
        later = self.clock.now() + delay(policy, message.category)
        await self._write(message, planned, [step_job(message, step + 1, later)] if more else [])
        ESCALATED.labels("step").inc(len(planned))
        log.info(
            "escalation step",
            extra={
                "message_id": message.id,
                "step": step,
                "unreached": len(unreached),
                "deliveries": len(planned),
                "more": more,
            },
        )

    async def _failover(
        self, message: Message, channel: str, recipient_id: str, policy: EscalationSettings
    ) -> None:
        theirs = await self.store.recipient_deliveries(message.tenant_id, message.id, recipient_id)
        told = [d for d in theirs if d.channel != SUPPRESSED_CHANNEL]
        alive = [d for d in told if d.channel not in _QUIET and d.status not in TERMINAL_FAILURES]
        if not told or any(d.channel == channel for d in alive):
            return  # another device of the same channel still works
        if not asks_receipt(message) and alive:
            return  # no follow-up wanted, and the recipient is told on another channel
        if await self._reached(message, recipient_id, told):
            return
        planned, _ = await self._plan(
            message, {recipient_id: told}, f"{FAILOVER}:{channel}", self.order(policy, message)
        )
        await self._write(message, planned, [])
        ESCALATED.labels("failover").inc(len(planned))
        log.info("failover", extra={"message_id": message.id, "deliveries": len(planned)})

    async def _reached(self, message: Message, recipient_id: str, told: list[Delivery]) -> bool:
        reached = {
            (r.subject_kind, r.subject_id)
            for r in await self.store.list_reached(message.tenant_id, message.id)
        }
        child_ids = {c for d in told for c in d.child_ids}
        if message.category in PER_CHILD and child_ids:
            return all(("child", c) in reached for c in child_ids)
        return ("guardian", recipient_id) in reached

    async def _plan(
        self,
        message: Message,
        targets: Mapping[str, list[Delivery]],
        marker: str,
        order: Sequence[str],
    ) -> tuple[list[Delivery], bool]:
        """Deliveries on each target's next channel; and whether any has a channel left after."""
        if not targets:
            return [], False
        snapshot = await self._snapshot(message.tenant_id, targets)
        await add_sender_units(self.store, message, snapshot)
        # Rights may have changed since planning (blocked, information revoked): ask again.
        children, suppressed = self._still_allowed(message, snapshot, targets)
        chosen: dict[str, str] = {}
        more = False
        for person_id, theirs in targets.items():
            if person_id not in children:
                continue
            person = snapshot.persons.get(person_id)
            if person is None:
                continue  # deleted from the directory since
            routes = route(
                person,
                snapshot.preferences.get(person_id),
                snapshot.devices.get(person_id, []),
                Category.emergency,  # every channel the person has, whatever they prefer
                snapshot.failing.get(person_id, ()),
            )
            has = {r.channel.value for r in routes}
            if ChannelName.sms.value in has:
                has.add(ChannelName.voice.value)  # a number that takes SMS takes calls
            used = {d.channel for d in theirs}
            left = [c for c in order if c in has and c not in used]
            if any(d.context.get(ESCALATION_KEY) == marker for d in theirs):
                more = more or bool(left)  # this step ran already (before a crash)
                continue
            if left:
                chosen[person_id] = left[0]
                more = more or len(left) > 1
        if not chosen and not suppressed:
            return [], more
        recipients = []
        for person_id, channel in chosen.items():
            # The planner's own routing, with the preference pinned to the chosen channel.
            prefs = snapshot.preferences.get(person_id) or Preferences()
            snapshot.preferences[person_id] = prefs.model_copy(
                update={"channels": {message.category: [ChannelName(channel)]}}
            )
            theirs = targets[person_id]
            recipients.append(
                Recipient(person_id, theirs[0].recipient_role, children[person_id], ESCALATION_KEY)
            )
        planned = []
        resolution = Resolution(recipients=recipients, suppressed=suppressed)
        for delivery in plan_deliveries(message, snapshot, resolution, self.clock.now()):
            if delivery.channel == SUPPRESSED_CHANNEL:
                planned.append(delivery)  # recorded with the reason, like at planning
            elif delivery.channel == chosen.get(delivery.recipient_id):
                # Facts a feature put in the context (absence) go out on the next channel too.
                first = targets[delivery.recipient_id][0].context
                if ABSENCE_CONTEXT_KEY in first:
                    delivery.context[ABSENCE_CONTEXT_KEY] = first[ABSENCE_CONTEXT_KEY]
                delivery.context[ESCALATION_KEY] = marker
                planned.append(delivery)
        return planned, more

    def _still_allowed(
        self,
        message: Message,
        snapshot: DirectorySnapshot,
        targets: Mapping[str, list[Delivery]],
    ) -> tuple[dict[str, tuple[str, ...]], list[Suppression]]:
        """Targets the resolver still lets us tell (person -> the children still allowed),
        and the suppressions of those dropped or narrowed."""
        people = [
            (pid, theirs[0].recipient_role, sorted({c for d in theirs for c in d.child_ids}))
            for pid, theirs in targets.items()
        ]
        audience = recheck_audience(message, [p for p in people if p[1] is Role.guardian])
        on = local_time(snapshot, self.clock.now()).date()
        resolution = resolve(snapshot, audience, message.category, on)
        kept: dict[str, tuple[str, ...]] = {}
        suppressed: list[Suppression] = []
        for person_id, role, child_ids in people:
            if role is not Role.guardian:
                # Rules 2 and 3 are about guardians' relations; staff are told by role.
                kept[person_id] = tuple(child_ids)
                continue
            allowed, reason = allowed_children(resolution, person_id, child_ids)
            if reason is not None:
                suppressed.extend(
                    s
                    for s in resolution.suppressed
                    if s.person_id == person_id and (s.child_id is None or s.child_id in child_ids)
                )
                # Absence facts name the child: narrowing them is not safe, so drop.
                absence = ABSENCE_CONTEXT_KEY in targets[person_id][0].context
                if not allowed or absence:
                    log.info(
                        "escalation withheld: no longer allowed",
                        extra={"message_id": message.id, "reason": reason},
                    )
                    continue
            kept[person_id] = tuple(allowed)
        return kept, suppressed

    async def _snapshot(
        self, tenant_id: str, targets: Mapping[str, list[Delivery]]
    ) -> DirectorySnapshot:
        """The directory rows the planner needs for these recipients (and their children)."""
        guardians: list[str] = []
        staff: list[str] = []
        children: set[str] = set()
        for person_id, theirs in targets.items():
            role = theirs[0].recipient_role
            if role is Role.staff:
                staff.append(person_id)
            elif role is Role.guardian:
                guardians.append(person_id)
            else:
                children.add(person_id)
            children.update(c for d in theirs for c in d.child_ids)
        audience = Audience.model_construct(
            children=sorted(children), groups=[], units=[], guardians=guardians, staff=staff
        )
        return await self.store.load_audience(tenant_id, audience)

    async def _write(self, message: Message, deliveries: list[Delivery], extra: list[Job]) -> None:
        now = self.clock.now()
        jobs: list[Job] = []
        urgent = urgent_work(message.category)
        for delivery in deliveries:
            send_job = queue(delivery, now, urgent=urgent, rank=len(jobs))
            if send_job is not None:
                jobs.append(send_job)
        jobs.extend(extra)
        if deliveries or jobs:
            await self.store.add_deliveries(deliveries, jobs)
            self.work_available.set()
