"""Which channels, which language, and when: turns a ``Resolution`` into deliveries.

Pure functions, no I/O. ``plan_deliveries`` is a generator so a broadcast to a
whole municipality streams instead of building every delivery in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.constants import (
    DEFAULT_LANGUAGE,
    DEFAULT_TIME_ZONE,
    ESCALATION_KEY,
    JOB_SEND,
    MANDATORY_CATEGORIES,
    NEUTRAL_KEY,
    SUPPRESSED_CHANNEL,
    URGENT_CATEGORIES,
)
from gateway.digest_plan import DIGEST_KEY, digest_job, digest_job_id, digest_time
from gateway.models import (
    Category,
    ChannelName,
    Delivery,
    DeliveryStatus,
    Device,
    DirectorySnapshot,
    Job,
    Message,
    Person,
    Preferences,
    Role,
    Unit,
)
from gateway.protection import hides_places, sensitive_children
from gateway.resolver import Recipient, Resolution, Suppression, resolve
from gateway.store.trusted import assembler
from gateway.wallclock import hhmm as _hhmm
from gateway.wallclock import wall_clock_to_utc as _wall_clock_to_utc

# Deliveries and send jobs are built from validated data without validating again,
# from dicts that spell out every field (one delivery and job per send of a broadcast).
_new_delivery = assembler(Delivery)
_new_job = assembler(Job)
# Failing contact kinds, as the store records them.
PHONE = "phone"
EMAIL = "email"

_ORDER = (ChannelName.inapp, ChannelName.push, ChannelName.sms, ChannelName.email)


@dataclass(frozen=True, slots=True)
class Route:
    """One way to reach one person: a channel and, for push, the device."""

    channel: ChannelName
    target: str  # device id for push, "" otherwise
    address: str | None  # email / E.164 phone / push token-or-fid; None for inapp
    address_kind: str = ""  # push: "token" (FCM registration token) or "fid" (installation id)


def choose_language(person: Person, prefs: Preferences | None) -> str:
    """The person's chosen language, else the directory's, else Norwegian Bokmål.

    Any BCP 47 tag is kept as given; rendering falls back when it has no template.
    """
    if prefs is not None and prefs.language:
        return prefs.language
    return person.language or DEFAULT_LANGUAGE


def route(
    person: Person,
    prefs: Preferences | None,
    devices: list[Device],
    category: Category,
    failing: Sequence[str] = (),
) -> list[Route]:
    """The routes for one person and one category, in-app first.

    Emergency goes on every channel the person has. A preference for the
    category picks exactly its channels (those without a contact point are
    skipped); absence and emergency fall back to the default if a preference
    leaves nothing but in-app. Contact kinds in ``failing`` are never used.
    """
    available = _available(person, devices, failing)
    wanted = prefs.channels.get(category) if prefs is not None else None
    if category == Category.emergency:
        # A phone call only where asked for (a preference, or escalation's pinned step).
        call = (ChannelName.voice,) if wanted and ChannelName.voice in wanted else ()
        return _ordered(available, (*_ORDER, *call))
    if wanted is not None:
        routes = _ordered(available, (ChannelName.inapp, *wanted))
        if len(routes) > 1 or category not in MANDATORY_CATEGORIES:
            return routes
    return _ordered(available, _default_channels(person, available, category))


def _available(
    person: Person, devices: list[Device], failing: Sequence[str]
) -> dict[ChannelName, list[Route]]:
    """Every usable route of the person, by channel (a channel without one is absent)."""
    available = {ChannelName.inapp: [Route(ChannelName.inapp, "", None)]}
    push = [
        Route(
            ChannelName.push,
            device.id,
            device.token or device.fid,
            "token" if device.token else "fid",
        )
        for device in sorted(devices, key=lambda d: d.id)
    ]
    if push:
        available[ChannelName.push] = push
    if person.phone and PHONE not in failing:
        available[ChannelName.sms] = [Route(ChannelName.sms, "", person.phone)]
        # Never by default (_ORDER, _default_channels): a preference or escalation asks.
        available[ChannelName.voice] = [Route(ChannelName.voice, "", person.phone)]
    if person.email and EMAIL not in failing:
        available[ChannelName.email] = [Route(ChannelName.email, "", person.email)]
    return available


def _default_channels(
    person: Person,
    available: dict[ChannelName, list[Route]],
    category: Category = Category.general,
) -> tuple[ChannelName, ...]:
    if person.role is Role.staff:
        return (ChannelName.inapp, ChannelName.email)
    if category == Category.absence and (
        ChannelName.push in available or ChannelName.sms in available
    ):
        # A child not where the guardians think: push and SMS at once; email only without.
        return (ChannelName.inapp, ChannelName.push, ChannelName.sms)
    # Push if the app is installed, else SMS; email alongside either.
    nudge = ChannelName.push if ChannelName.push in available else ChannelName.sms
    return (ChannelName.inapp, nudge, ChannelName.email)


def _ordered(
    available: dict[ChannelName, list[Route]], channels: Iterable[ChannelName]
) -> list[Route]:
    wanted = set(channels)
    return [
        r
        for channel in (*_ORDER, ChannelName.voice)
        if channel in wanted
        for r in available.get(channel, ())
    ]


def defer_until(
    prefs: Preferences | None, time_zone: str, category: Category, now: datetime
) -> datetime | None:
    """The end of the person's quiet hours (UTC) if ``now`` is inside them, else None.

    Quiet hours are wall-clock times in ``time_zone`` and may wrap midnight.
    Urgent categories ignore them. On a daylight-saving night the end is the
    first instant the clock shows that time (or later, if the time is skipped).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if prefs is None or not prefs.quiet_start or not prefs.quiet_end:
        return None
    if category in URGENT_CATEGORIES:
        return None
    start, end = _hhmm(prefs.quiet_start), _hhmm(prefs.quiet_end)
    if start == end:
        return None
    zone = ZoneInfo(time_zone)
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside, end_day = start <= clock < end, local.date()
    elif clock >= start:  # wraps midnight, before it
        inside, end_day = True, local.date() + timedelta(days=1)
    else:  # wraps midnight, after it
        inside, end_day = clock < end, local.date()
    if not inside:
        return None
    return _wall_clock_to_utc(end_day, end, zone, now)


def local_time(snapshot: DirectorySnapshot, at: datetime, unit: Unit | None = None) -> datetime:
    """``at`` where the message is about: in the time zone of ``unit`` (absence: the
    child's), else of the snapshot's first unit, else Norway's. The one time-zone rule
    of planning, rechecks, escalation and absence."""
    if unit is None:
        unit = next(iter(snapshot.units.values()), None)
    return at.astimezone(ZoneInfo(unit.time_zone if unit is not None else DEFAULT_TIME_ZONE))


def resolution_for(
    message: Message, snapshot: DirectorySnapshot, now: datetime, unit: Unit | None = None
) -> Resolution:
    """Who may be told about ``message`` (gateway/resolver.py) on today's local date."""
    on = local_time(snapshot, now, unit).date()
    return resolve(snapshot, message.audience, message.category, on)


def planned(
    message: Message, snapshot: DirectorySnapshot, resolution: Resolution, now: datetime
) -> Iterator[tuple[Delivery, Job | None]]:
    """The planning pipeline of a message (the dispatcher's ``plan`` and absence's): each
    delivery of the resolution, made ready with its send job (None for an in-app delivery
    or a suppression record), urgent for absence and emergency. Escalation picks one
    channel per person and uses :func:`plan_deliveries` and :func:`queue` itself."""
    urgent = urgent_work(message.category)
    rank = 0  # the send's place in the message's work (gateway/store/lanes.py)
    for delivery in plan_deliveries(message, snapshot, resolution, now):
        job = queue(delivery, now, urgent=urgent, rank=rank)
        rank += job is not None
        yield delivery, job


def plan_deliveries(
    message: Message, snapshot: DirectorySnapshot, resolution: Resolution, now: datetime
) -> Iterator[Delivery]:
    """One delivery per (recipient, route), then one suppression record per suppression."""
    planner = _Planner(message, snapshot, now)
    owners = contact_owners(resolution.recipients, snapshot)
    for recipient in resolution.recipients:
        if owners:
            for delivery in planner.deliveries(recipient):
                yield one_per_contact_point(delivery, owners)
        else:
            yield from planner.deliveries(recipient)
    for suppression in resolution.suppressed:
        yield planner.suppression(suppression)


# One person in two roles (a teacher who is also a parent) is two rows of the directory
# with the same email address or phone number. Rather than a person with several roles
# (which every store backend, the resolver, the OneRoster mapping and the platform's own
# ids would have to learn), the planner merges by contact point: of the recipients of one
# message sharing an address, one "owns" it and only its email or SMS goes there; the
# others' deliveries on that address are recorded as suppressed (``same_contact_point``).
# Their in-app inbox (per person) and push (per device) are untouched. This also covers
# two rows for one person that no role explains (two guardian ids, one mailbox).
SAME_CONTACT_POINT = "same_contact_point"
_EMAIL, _SMS = ChannelName.email.value, ChannelName.sms.value


def contact_owners(
    recipients: Sequence[Recipient], snapshot: DirectorySnapshot
) -> dict[tuple[str, str], str]:
    """(channel, address) -> the recipient whose email or SMS goes to it, where several
    recipients of one message share it: a guardian (their message names the children)
    before staff, then the one with more children, then the smaller id."""
    first: dict[tuple[str, str], Recipient] = {}
    shared: dict[tuple[str, str], list[Recipient]] = {}
    persons = snapshot.persons
    for recipient in recipients:
        person = persons.get(recipient.person_id)
        if person is None:
            continue
        for key in ((_EMAIL, person.email), (_SMS, person.phone)):
            if key[1]:
                other = first.setdefault(key, recipient)  # type: ignore[arg-type]
                if other is not recipient:
                    shared.setdefault(key, [other]).append(recipient)  # type: ignore[arg-type]
    return {
        key: min(
            sharing, key=lambda r: (r.role is Role.staff, -len(r.child_ids), r.person_id)
        ).person_id
        for key, sharing in shared.items()
    }


def one_per_contact_point(delivery: Delivery, owners: dict[tuple[str, str], str]) -> Delivery:
    """``delivery``, or — when another recipient owns its address — a suppressed record."""
    if not owners or delivery.address is None:
        return delivery
    owner = owners.get((delivery.channel, delivery.address))
    if owner is None or owner == delivery.recipient_id:
        return delivery
    return delivery.model_copy(
        update={
            "status": DeliveryStatus.suppressed,
            "reason": SAME_CONTACT_POINT,
            "address": None,
            "not_before": None,
        }
    )


class _Planner:
    """Per-message state and lookups, built once for the whole plan."""

    def __init__(self, message: Message, snapshot: DirectorySnapshot, now: datetime) -> None:
        self.message = message
        self.snapshot = snapshot
        self.now = now
        # Children whose place is hidden from other recipients (rule 4), found once.
        self.sensitive = sensitive_children(snapshot)
        self.related: dict[str, tuple[str, ...]] = {}
        if self.sensitive:
            for relation in snapshot.relations:
                known = self.related.get(relation.guardian_id, ())
                self.related[relation.guardian_id] = (*known, relation.child_id)

    def deliveries(self, recipient: Recipient) -> Iterator[Delivery]:
        person = self.snapshot.persons.get(recipient.person_id)
        if person is None:
            # The resolver never yields one; be safe rather than send to nobody knows whom.
            yield self.suppression(
                Suppression(recipient.person_id, recipient.role, None, "unknown_person")
            )
            return
        pid = person.id
        prefs = self.snapshot.preferences.get(pid)
        routes = route(
            person,
            prefs,
            self.snapshot.devices.get(pid, []),
            self.message.category,
            self.snapshot.failing.get(pid, ()),
        )
        unit = self._unit(person, recipient.child_ids)
        time_zone = unit.time_zone if unit is not None else DEFAULT_TIME_ZONE
        not_before = defer_until(prefs, time_zone, self.message.category, self.now)
        # A daily digest holds the noisy channels until its time (not escalation steps).
        digest = None
        if recipient.basis != ESCALATION_KEY:
            digest = digest_time(prefs, time_zone, self.message.category, self.now)
        language = choose_language(person, prefs)
        # A message to a guardian directly concerns no child: their own children decide
        # whether the sender's unit may be named (rule 4).
        concerned = recipient.child_ids or self.related.get(pid, ())
        neutral = bool(self.sensitive) and hides_places(person, concerned, self.sensitive)
        context = self._context(recipient.child_ids, None if neutral else unit)
        if neutral:
            # A protected child or co-guardian: no unit, group, sender or staff name.
            # The kind ("the school") says nothing about which one; the wording needs it.
            context.update(
                sender=None,
                sms_sender=None,
                unit_kind=unit.kind.value if unit is not None else None,
                **{NEUTRAL_KEY: True},
            )
        for r in routes:
            # Context is per recipient; each delivery gets its own copy to mutate.
            own = {**context, "children": list(context["children"])}
            if r.address_kind:
                own["address_kind"] = r.address_kind
            # An inbox entry disturbs nobody: only the noisy channels wait.
            waits = None if r.channel is ChannelName.inapp else not_before
            if digest is not None and r.channel is not ChannelName.inapp:
                own[DIGEST_KEY] = digest_job_id(self.message.tenant_id, pid, digest)
                waits = digest
            yield self._delivery(
                recipient.person_id,
                recipient.role,
                r.channel.value,
                r.target,
                address=r.address,
                language=language,
                child_ids=list(recipient.child_ids),
                context=own,
                not_before=waits,
            )

    def suppression(self, suppression: Suppression) -> Delivery:
        person = self.snapshot.persons.get(suppression.person_id)
        language = (
            choose_language(person, self.snapshot.preferences.get(person.id))
            if person is not None
            else DEFAULT_LANGUAGE
        )
        return self._delivery(
            suppression.person_id,
            suppression.role,
            SUPPRESSED_CHANNEL,
            suppression.child_id or "",
            address=None,
            language=language,
            child_ids=[suppression.child_id] if suppression.child_id else [],
            status=DeliveryStatus.suppressed,
            reason=suppression.reason,
        )

    def _delivery(
        self, person_id: str, role: Role, channel: str, target: str, **fields: Any
    ) -> Delivery:
        message = self.message
        get = fields.get
        # Every value comes from the validated message and directory: built without
        # validating again (gateway/store/trusted.py), the model's defaults for the rest.
        return _new_delivery(
            {
                "id": Delivery.make_id(
                    message.tenant_id, message.event_id, person_id, channel, target
                ),
                "tenant_id": message.tenant_id,
                "message_id": message.id,
                "recipient_id": person_id,
                "recipient_role": role,
                "channel": channel,
                "target": target,
                "address": get("address"),
                "language": fields["language"],
                "child_ids": get("child_ids", []),
                "context": get("context", {}),
                "status": get("status", DeliveryStatus.planned),
                "reason": get("reason"),
                "provider_id": None,
                "segments": None,
                "attempts": 0,
                "not_before": get("not_before"),
                "created_at": self.now,
                "updated_at": self.now,
            }
        )

    def _unit(self, person: Person, child_ids: tuple[str, ...]) -> Unit | None:
        """The first unit of the first child the message concerns, else of the person, else
        the sender's."""
        owner = self.snapshot.persons.get(child_ids[0]) if child_ids else None
        # Else the sender's unit (a message to guardians or staff directly names it too).
        for unit_id in (*(owner or person).unit_ids, *self.snapshot.sender_units):
            unit = self.snapshot.units.get(unit_id)
            if unit is not None:
                return unit
        return None

    def _context(self, child_ids: tuple[str, ...], unit: Unit | None) -> dict[str, Any]:
        """``unit`` None: neither the unit nor the unit's sender is named."""
        # Only the recipient's own children: never a co-guardian or another family.
        persons = self.snapshot.persons
        return {
            "children": [persons[c].given_name for c in child_ids if c in persons],
            "unit": unit.name if unit is not None else None,
            "sender": self.message.sender_name or (unit.sender_name if unit else None),
            "sms_sender": unit.sms_sender if unit is not None else None,
            # Channels set priority and TTL from these (push: high priority for urgent ones).
            "category": self.message.category.value,
            "urgency": self.message.urgency.value,
        }


def send_job_id(delivery_id: str) -> str:
    """The id of a delivery's send job: one per delivery, so it is queued at most once."""
    return f"{JOB_SEND}:{delivery_id}"


def urgent_work(category: str) -> bool:
    """Whether a message's work (planning, sending, escalation) goes in the urgent lane."""
    return category in URGENT_CATEGORIES


def queue(
    delivery: Delivery, now: datetime, *, urgent: bool, rank: int | None = None
) -> Job | None:
    """Make a freshly planned delivery ready to go; return its send job, if it needs one
    (in the urgent lane with ``urgent``: the message is an emergency or absence; ``rank``
    its place among the message's sends, kept when it is due now: gateway/store/lanes.py).

    An in-app delivery needs none: its row is the inbox entry, so it is
    delivered the moment it is stored (unless quiet hours defer it). A
    suppression record needs none either.
    """
    if delivery.status is not DeliveryStatus.planned:
        return None
    if delivery.channel == ChannelName.inapp and delivery.not_before is None:
        delivery.status = DeliveryStatus.delivered
        return None
    delivery.status = DeliveryStatus.queued
    if DIGEST_KEY in delivery.context:
        return digest_job(delivery, urgent=urgent)  # held for the guardian's daily digest
    return _new_job(
        {
            "id": send_job_id(delivery.id),
            "tenant_id": delivery.tenant_id,
            "kind": JOB_SEND,
            "ref": delivery.id,
            "due_at": delivery.not_before or now,
            "attempts": 0,
            "last_error": None,
            "urgent": urgent,
            "rank": rank if delivery.not_before is None else None,
        }
    )
