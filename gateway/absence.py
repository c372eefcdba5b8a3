"""Absence: alert guardians when a child is missing, take guardians' reports, close the loop.

Three events come in (``absence.recorded``, ``absence.reported``, ``absence.cancelled``);
each becomes one or more messages of category ``absence`` planned by this module's own
job (``absence_plan``), which resolves the recipients like every message and then keeps
those the message is for, and puts the absence facts the templates render into each
delivery's context (``context["absence"]``; never the staff note, never a reason).

* **Alert** (``absence.recorded``): every guardian with rights to the child (an adult
  pupil or learner: themself), at once, by push and SMS by default; quiet hours do not
  apply (category absence). Repeated marks of the same child, day and lesson within the
  tenant's window (``AbsenceSettings.dedup_window_minutes``) make one alert: the store
  folds the later mark into the first (:meth:`gateway.store.ports.AbsenceStore.claim_absence`), and
  the event is answered with ``deduplicated_into``.
* **Escalation**: unread and unanswered after the escalation policy's
  ``after_minutes.absence``, the alert goes out on the next channel (the Escalator);
  still no guardian reached after ``AbsenceSettings.staff_after_minutes``, the child's
  contact teachers (else the unit's staff) get a "not reached" notice, once (its message
  id derives from the alert's event id).
* **Answers**: a guardian answers in the app or by SMS with a keyword (:data:`KEYWORDS`);
  the answer is stored, sent to the platform as an ``absence.explained`` webhook, shown
  on the alert's status, and counts as a read (:func:`gateway.tracker.record_read`), so
  the child is reached and escalation stops. Other SMS replies stay plain replies.
* **Report** (``absence.reported``, also ``POST /v1/me/absences`` and SMS reports): the
  contact teachers, else the unit's staff, are told; the reporter gets a confirmation;
  the other guardians with rights are informed, never told who reported.
* **Cancellation** (``absence.cancelled``): alert deliveries not sent yet are cancelled;
  whoever already got the alert gets a short correction.

Contact teachers are the staff members whose ``group_ids`` include the child's group
(the event's ``group_id``, else every group of the child).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from babel.dates import format_date, format_skeleton
from babel.lists import format_list
from pydantic import ValidationError

from gateway.audience_handoff import AudienceHandoff
from gateway.clock import Clock
from gateway.constants import (
    ABSENCE_CANCELLED,
    ABSENCE_CONFIRMATION,
    ABSENCE_CONTEXT_KEY,
    ABSENCE_INFORMED,
    ABSENCE_RECORDED,
    ABSENCE_REPORTED,
    ABSENCE_UNREACHED,
    DEFAULT_LANGUAGE,
    JOB_ABSENCE_PLAN,
    JOB_ABSENCE_UNREACHED,
    NEUTRAL_KEY,
    SUPPORTED_LANGUAGES,
)
from gateway.errors import ValidationFailed
from gateway.jobs import JobHandler
from gateway.models import (
    AbsenceCancelled,
    AbsenceExplanation,
    AbsenceKind,
    AbsenceRecord,
    AbsenceRecorded,
    AbsenceReported,
    AlertPhone,
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    DirectorySnapshot,
    Job,
    Lesson,
    Message,
    Person,
    Role,
    Unit,
    Urgency,
    derive_id,
)
from gateway.planner import local_time, planned, resolution_for
from gateway.resolver import Recipient, Resolution, resolve
from gateway.settings import AbsenceSettings, Settings
from gateway.store.ports import AbsenceStore, AudienceReader, ChangeFeed, JobQueue, PolicyStore
from gateway.store.priority import urgent_work
from gateway.tracker import ReadStore, reach, record_read
from gateway.translations import explanation_job
from gateway.urgent_handoff import UrgentHandoff

if TYPE_CHECKING:
    from gateway.escalation import Escalator
    from gateway.render import Renderer

# Why an absence report reached no staff (status "unrouted", the absence.unrouted webhook).
NO_STAFF = "no_staff"
log = logging.getLogger(__name__)

# SMS keywords (the first word of an answer, any case, trailing punctuation ignored), in
# nb, nn and en. The rest of the text is the explanation.
KEYWORDS: dict[str, AbsenceKind] = {
    **dict.fromkeys(("1", "SYK", "SJUK", "SICK", "ILL", "FEBER", "FEVER"), AbsenceKind.sick),
    **dict.fromkeys(
        ("2", "LEGE", "TANNLEGE", "LEGETIME", "DOCTOR", "DENTIST", "APPOINTMENT"),
        AbsenceKind.appointment,
    ),
    **dict.fromkeys(("3", "FRI", "PERMISJON", "FERIE", "LEAVE", "HOLIDAY"), AbsenceKind.leave),
    **dict.fromkeys(("4", "ANNET", "ANNA", "OTHER", "OK", "VET", "VEIT"), AbsenceKind.other),
}
# An SMS starting with one of these (or a word keyword of KEYWORDS) that answers no recent
# alert reports an absence for today: "FRAVÆR Kari har feber", "SYK Ola".
REPORT_KEYWORDS = frozenset({"FRAVÆR", "FRÅVÆR", "FRAVAER", "FRAVAR", "ABSENCE", "ABSENT"})
# An SMS answers the alert it follows only this long; later it may be a report.
ANSWER_WINDOW = timedelta(hours=24)
# Delivery statuses that mean the alert reached the recipient (their inbox at least).
_GOT_IT = frozenset(
    {DeliveryStatus.sent, DeliveryStatus.delivered, DeliveryStatus.opened, DeliveryStatus.read}
)
# Not handed over yet ("sending" here is a send waiting for its retry): a cancellation stops
# them, and a job whose delivery is final is dropped by the dispatcher.
_PENDING = frozenset({DeliveryStatus.planned, DeliveryStatus.queued, DeliveryStatus.sending})
# Message type -> the facts' ``kind`` the templates branch on.
_KINDS = {
    ABSENCE_RECORDED: "alert",
    ABSENCE_CANCELLED: "correction",
    ABSENCE_REPORTED: "report",
    ABSENCE_CONFIRMATION: "confirmation",
    ABSENCE_INFORMED: "informed",
    ABSENCE_UNREACHED: "unreached",
}
_DATE_FORMATS = {"nb": "EEEE d. MMMM", "nn": "EEEE d. MMMM", "en": "EEEE d MMMM"}
_DATE_SKELETON = "MMMMEEEEd"  # the other languages: weekday, day, month in CLDR's order
_SUFFIX = "#"  # joins an event id and the part of it a derived message is


# The answer to an SMS keyword that fits open alerts of several children (GSM-7, nb + en).
AMBIGUOUS_ANSWER = (
    "Vi har varslet fravær for flere barn. Send svaret på nytt med barnets fornavn, "
    'f.eks. "SYK Kari", eller svar i appen. / Absence alerts were sent for several '
    'children: reply again with the child\'s first name, e.g. "SICK Kari", or use the app.'
)


@dataclass(frozen=True)
class SmsAnswer:
    """What became of an SMS keyword answer: the alerts it explained, and a text to send
    back (when it fitted several children and explained nothing)."""

    explained: int
    reply: str | None


def _word(token: str) -> str:
    return token.strip(".,;:!?()-").upper()


def parse_answer(body: str) -> tuple[AbsenceKind, str] | None:
    """(kind, explanation) of an SMS answer that starts with a keyword; None otherwise."""
    words = body.strip().split(maxsplit=1)
    if not words:
        return None
    kind = KEYWORDS.get(_word(words[0]))
    if kind is None:
        return None
    return kind, words[1].strip() if len(words) > 1 else ""


def parse_report(body: str) -> AbsenceKind | None:
    """The kind of an SMS that reports an absence ("FRAVÆR ...", "SYK ..."); None if it
    does not look like one. Digits alone never report (too easy to send by mistake)."""
    words = [_word(w) for w in body.split()[:2]]
    if not words:
        return None
    if words[0] in REPORT_KEYWORDS:
        second = KEYWORDS.get(words[1]) if len(words) > 1 and not words[1].isdigit() else None
        return second or AbsenceKind.other
    if words[0] in KEYWORDS and not words[0].isdigit():
        return KEYWORDS[words[0]]
    return None


def body_hash_of(data: Any) -> str:
    """The body hash of an event made here (an app or SMS report), as the intake computes it."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def dates_text(days: Sequence[date], lang: str) -> str:
    """Days as text in ``lang``: runs of consecutive days become "first - last"."""
    return _dates_text(tuple(sorted(set(days))), lang)


# Each alert says its days in every supported language, and babel's date and list
# formatting (CLDR look-ups per call) cost milliseconds per alert, on the loop a
# broadcast's sends share; a morning's alerts name the same few days.
@functools.lru_cache(maxsize=1024)
def _dates_text(days: tuple[date, ...], lang: str) -> str:
    runs: list[list[date]] = []
    for day in days:
        if runs and day - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = [
        _day(run[0], lang) + ("" if len(run) == 1 else " - " + _day(run[-1], lang)) for run in runs
    ]
    return format_list(parts, locale=lang)


def _day(day: date, lang: str) -> str:
    """Weekday, day and month: our pattern for nb, nn, en; CLDR's own order elsewhere."""
    pattern = _DATE_FORMATS.get(lang)
    if pattern is None:
        return format_skeleton(_DATE_SKELETON, day, locale=lang)
    return format_date(day, pattern, locale=lang)


def _per_language(days: Sequence[date]) -> dict[str, str]:
    return {lang: dates_text(days, lang) for lang in SUPPORTED_LANGUAGES}


def _hhmm(value: Any) -> str | None:
    return None if not value else str(value)[:5]


def _main_event_id(message: Message) -> str:
    return message.event_id.partition(_SUFFIX)[0]


def unit_of(snapshot: DirectorySnapshot, child_id: str, unit_id: str | None) -> Unit | None:
    """The unit an absence is at: the one the event named, else the child's first one the
    snapshot holds (its time zone says which day is today)."""
    child = snapshot.persons.get(child_id)
    for uid in [*([unit_id] if unit_id else []), *(child.unit_ids if child else [])]:
        if uid in snapshot.units:
            return snapshot.units[uid]
    return None


def part_message_id(tenant_id: str, event_id: str, part: str) -> str:
    """The message id of a part an absence event makes besides its own message: a report's
    ``confirmation`` and ``informed``, an alert's ``unreached`` notice."""
    return derive_id(tenant_id, f"{event_id}{_SUFFIX}{part}")


async def alert_cancelled(store: AbsenceStore, job: Job) -> bool:
    """Whether an ``escalate`` job is about an absence alert cancelled since: such an alert
    is not followed up (the service gives this to the Escalator as its ``stop``)."""
    message_id = job.ref.partition(":")[0]
    record = await store.get_absence(job.tenant_id, message_id)
    return record is not None and record.cancelled_at is not None


class AbsenceFlowStore(
    AbsenceStore, ReadStore, AudienceReader, JobQueue, PolicyStore, ChangeFeed, Protocol
):
    """What the absence flows need: their records, messages and deliveries with reads, the
    audience, the queue, the tenant's settings and the change feed."""


class Absences:
    """The absence flows (intake, answers, status, planning). The service builds one, with
    the Escalator, puts it in the app context for the API and gives its ``handlers()``
    to the job registry."""

    def __init__(
        self,
        store: AbsenceFlowStore,
        clock: Clock,
        settings: Settings,
        *,
        renderer: Renderer | None = None,
        escalator: Escalator | None = None,
        work_available: asyncio.Event | None = None,
        handoff: UrgentHandoff | None = None,
        audiences: AudienceHandoff | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.renderer = renderer
        self.escalator = escalator
        self.work_available = work_available or asyncio.Event()
        # An alert's plan and sends go to this process's dispatcher past the urgent queue.
        self.handoff = handoff or UrgentHandoff(0)
        # The child's snapshot an alert's intake read, for this process's plan of it
        # (gateway/audience_handoff.py: within its age, else the plan reads its own).
        self.audiences = audiences

    def handlers(self) -> dict[str, JobHandler]:
        """Absence's own jobs: planning its messages and the staff notice of an unreached
        child. (Escalation of a cancelled alert stops through :func:`alert_cancelled`.)"""
        return {JOB_ABSENCE_PLAN: self.plan, JOB_ABSENCE_UNREACHED: self.unreached}

    async def policy(self, tenant_id: str) -> AbsenceSettings:
        """The tenant's absence settings in force (settings with its override over them)."""
        override = await self.store.get_absence_settings(tenant_id)
        if not override:
            return self.settings.absence
        try:
            return AbsenceSettings.model_validate(
                {**self.settings.absence.model_dump(), **override}
            )
        except ValidationError:
            log.warning("ignoring an invalid absence override", extra={"tenant": tenant_id})
            return self.settings.absence

    # ------------------------------------------------------------------ intake

    @urgent_work
    async def record(
        self, tenant_id: str, event: AbsenceRecorded, body_hash: str
    ) -> tuple[Message, bool]:
        """Accept ``absence.recorded``: a new alert, or a repeated mark folded into the
        alert it repeats (then the alert's message is returned: its ``event_id`` is not
        this event's, which the API answers with ``deduplicated_into``)."""
        data = event.data
        read_at = self.audiences.now() if self.audiences is not None else 0.0
        snapshot = await self._child_snapshot(tenant_id, data.child_id, data.unit_id, data.group_id)
        now = self.clock.now()
        unit = unit_of(snapshot, data.child_id, data.unit_id)
        day = data.date or local_time(snapshot, now, unit).date()
        lesson_key = data.lesson.key() if data.lesson is not None else "day"
        stored = data.model_dump(mode="json", by_alias=True) | {"date": day.isoformat()}
        record = AbsenceRecord(
            tenant_id=tenant_id,
            message_id=derive_id(tenant_id, event.id),
            event_id=event.id,
            kind="recorded",
            child_id=data.child_id,
            key=f"{data.child_id}|{day.isoformat()}|{lesson_key}",
            data=stored,
            marks=[event.id],
            created_at=now,
            updated_at=now,
        )
        policy = await self.policy(tenant_id)
        window_start = now - timedelta(minutes=policy.dedup_window_minutes)
        claim = await self.store.claim_absence(record, body_hash, window_start)
        alert = claim.record
        message, _ = await self._ensure(
            alert.message_id,
            tenant_id,
            alert.event_id,
            ABSENCE_RECORDED,
            body_hash,
            Audience(children=[alert.child_id]),
            self._facts("alert", alert, snapshot),
            sender_id=data.recorded_by,
            # _child_snapshot's read is of this audience: the child alone
            read=(snapshot, read_at) if alert.child_id == data.child_id else None,
            new=claim.outcome == "new",
        )
        if claim.outcome == "merged":
            log.info("absence mark merged", extra={"message_id": message.id})
        # The stored body hash of THIS event id decides a conflict, not the alert's.
        return message.model_copy(update={"body_hash": claim.body_hash}), claim.outcome == "known"

    @urgent_work
    async def report(
        self, tenant_id: str, event: AbsenceReported, body_hash: str
    ) -> tuple[Message, bool]:
        """Accept ``absence.reported``: the staff notice (answered with), the reporter's
        confirmation and the co-guardians' information, each a message of its own."""
        data = event.data
        snapshot = await self._child_snapshot(tenant_id, data.child_id, None, None)
        now = self.clock.now()
        unit = unit_of(snapshot, data.child_id, None)
        if not self._has_rights(snapshot, data.child_id, data.guardian_id, now, unit):
            raise ValidationFailed(
                "the reporter has no right to report for this child",
                errors=[
                    {
                        "loc": ["data", "guardian_id"],
                        "message": "not a guardian with rights to this child",
                        "type": "no_rights",
                    }
                ],
            )
        child = snapshot.persons[data.child_id]
        staff = await self._staff(tenant_id, child, None, None)
        stored = data.model_dump(mode="json") | {
            "days": [d.isoformat() for d in data.days()],
            "staff": staff,
        }
        record = AbsenceRecord(
            tenant_id=tenant_id,
            message_id=derive_id(tenant_id, event.id),
            event_id=event.id,
            kind="reported",
            child_id=data.child_id,
            data=stored,
            marks=[event.id],
            created_at=now,
            updated_at=now,
        )
        # Nobody at the unit to tell: the platform must route it (issue 10). The change is
        # recorded with a new claim, in its transaction, so a crash cannot lose it.
        unrouted = None
        if not staff:
            unrouted = {
                "message_id": record.message_id,
                "absence_event_id": record.event_id,
                "child_id": record.child_id,
                "reason": NO_STAFF,
            }
        claim = await self.store.claim_absence(record, body_hash, now, unrouted=unrouted)
        record = claim.record
        if not staff and claim.outcome == "new":
            log.warning("absence report reaches no staff", extra={"message_id": record.message_id})
        everyone = Audience(children=[data.child_id])
        to_staff = Audience(staff=staff) if staff else everyone  # planned to staff only
        main, _ = await self._ensure(
            record.message_id,
            tenant_id,
            record.event_id,
            ABSENCE_REPORTED,
            body_hash,
            to_staff,
            self._facts("report", record, snapshot),
        )
        for kind, message_type in (
            ("confirmation", ABSENCE_CONFIRMATION),
            ("informed", ABSENCE_INFORMED),
        ):
            event_id = f"{record.event_id}{_SUFFIX}{kind}"
            await self._ensure(
                part_message_id(tenant_id, record.event_id, kind),
                tenant_id,
                event_id,
                message_type,
                body_hash,
                everyone,
                self._facts(kind, record, snapshot),
            )
        return main.model_copy(update={"body_hash": claim.body_hash}), claim.outcome == "known"

    @urgent_work
    async def cancel(
        self, tenant_id: str, event: AbsenceCancelled, body_hash: str
    ) -> tuple[Message, bool]:
        """Accept ``absence.cancelled``: cancel what of the alert is not sent yet, and plan a
        correction to whoever got it (the correction is this event's message)."""
        data = event.data
        if data.absence_event_id is not None:
            target = await self.store.find_absence(tenant_id, event_id=data.absence_event_id)
            where = ["data", "absence_event_id"]
        else:
            assert data.child_id is not None and data.date is not None  # the model says so
            lesson_key = data.lesson.key() if data.lesson is not None else "day"
            key = f"{data.child_id}|{data.date.isoformat()}|{lesson_key}"
            target = await self.store.find_absence(tenant_id, key=key)
            where = ["data", "child_id"]
        if target is None or target.kind != "recorded":
            raise ValidationFailed(
                "no such absence alert",
                errors=[{"loc": where, "message": "no absence alert", "type": "unknown_reference"}],
            )
        now = self.clock.now()
        record = await self.store.cancel_absence(tenant_id, target.message_id, event.id, now)
        assert record is not None  # it was just found; records are never deleted but by age
        if record.cancel_event_id == event.id:
            await self._cancel_pending(tenant_id, record.message_id, now)
        snapshot = await self._child_snapshot(tenant_id, record.child_id, None, None)
        return await self._ensure(
            derive_id(tenant_id, event.id),
            tenant_id,
            event.id,
            ABSENCE_CANCELLED,
            body_hash,
            Audience(children=[record.child_id]),
            self._facts("correction", record, snapshot),
            sender_id=data.cancelled_by,
        )

    async def _cancel_pending(self, tenant_id: str, message_id: str, at: datetime) -> None:
        cancelled = 0
        for d in await self.store.list_deliveries(tenant_id, message_id):
            if d.status in _PENDING and await self.store.transition(
                d.id,
                DeliveryStatus.cancelled,
                at,
                detail="absence_cancelled",
                reason="absence_cancelled",
            ):
                cancelled += 1
        log.info("absence alert cancelled", extra={"message_id": message_id, "pending": cancelled})

    # ------------------------------------------------------------------ helpers

    async def _child_snapshot(
        self, tenant_id: str, child_id: str, unit_id: str | None, group_id: str | None
    ) -> DirectorySnapshot:
        """The child with its guardians, units and groups; ValidationFailed naming what the
        directory does not know."""
        audience = Audience(
            children=[child_id],
            units=[unit_id] if unit_id else [],
            groups=[group_id] if group_id else [],
        )
        missing = await self.store.missing_ids(tenant_id, audience)
        if missing:
            fields = {"children": "child_id", "units": "unit_id", "groups": "group_id"}
            raise ValidationFailed(
                "the event names unknown ids",
                errors=[
                    {
                        "loc": ["data", fields.get(kind, kind)],
                        "message": "unknown id",
                        "type": "unknown_reference",
                    }
                    for kind, _ in missing
                ],
            )
        return await self.store.load_audience(tenant_id, Audience(children=[child_id]))

    def _has_rights(
        self,
        snapshot: DirectorySnapshot,
        child_id: str,
        person_id: str,
        now: datetime,
        unit: Unit | None,
    ) -> bool:
        on = local_time(snapshot, now, unit).date()
        audience = Audience(children=[child_id])
        resolution = resolve(snapshot, audience, Category.absence, on)
        return any(
            r.person_id == person_id and child_id in r.child_ids for r in resolution.recipients
        )

    async def _staff(
        self, tenant_id: str, child: Person, unit_id: str | None, group_id: str | None
    ) -> list[str]:
        """The child's contact teachers (staff of its group), else the staff of its unit."""
        groups = [group_id] if group_id else child.group_ids
        teachers = await self.store.staff_members(tenant_id, group_ids=groups)
        if teachers:
            return teachers
        units = [unit_id] if unit_id else child.unit_ids
        return await self.store.staff_members(tenant_id, unit_ids=units)

    def _facts(
        self, kind: str, record: AbsenceRecord, snapshot: DirectorySnapshot
    ) -> dict[str, Any]:
        """What the templates say about this absence: no reason for guardians, no note."""
        data = record.data
        child = snapshot.persons.get(record.child_id)
        unit = unit_of(snapshot, record.child_id, data.get("unit_id"))
        group_id = data.get("group_id") or next(
            (g for g in (child.group_ids if child else []) if g in snapshot.groups), None
        )
        group = snapshot.groups.get(group_id) if group_id else None
        lesson = Lesson.model_validate(data["lesson"]) if data.get("lesson") else None
        days = [date.fromisoformat(d) for d in record.days()]
        reporting = record.kind == "reported"
        # The reporter's reason goes to staff only (rule 10): never stored on the
        # deliveries of the confirmation or of the co-guardians' information.
        for_staff = reporting and kind == "report"
        return {
            "kind": kind,
            "child": child.given_name if child else "",
            "unit": unit.name if unit else "",
            "group": group.name if group else None,
            "lesson": lesson.number if lesson else None,
            "lesson_name": lesson.name if lesson else None,
            "start": _hhmm(lesson.start) if lesson else None,
            "end": _hhmm(lesson.end) if lesson else None,
            "arrival": _hhmm(data.get("expected_arrival")),
            "date": _per_language(days[:1]),
            "dates": _per_language(days),
            # Only staff messages render these two (templates: details, kind "report").
            "report_kind": data.get("kind") if for_staff else None,
            "report_text": (data.get("text") or None) if for_staff else None,
            "self": reporting and data.get("guardian_id") == record.child_id,
        }

    async def _ensure(
        self,
        message_id: str,
        tenant_id: str,
        event_id: str,
        message_type: str,
        body_hash: str,
        audience: Audience,
        facts: dict[str, Any],
        *,
        sender_id: str | None = None,
        read: tuple[DirectorySnapshot, float] | None = None,
        new: bool = False,
    ) -> tuple[Message, bool]:
        """The stored message of this id, stored now (with its plan job) if missing; and
        whether it was stored before. ``read``: a snapshot of ``audience`` and when it was
        read (on ``self.audiences``' clock), offered to this process's plan of it.
        ``new``: its absence record was stored by this call, so the message is all but
        certainly not stored yet: no read first (``accept_message`` still keeps a stored
        one, as for a repost)."""
        if not new:
            existing = await self.store.get_message(tenant_id, message_id)
            if existing is not None:
                return existing, True
        now = self.clock.now()
        message = self._texts(
            Message(
                id=message_id,
                tenant_id=tenant_id,
                event_id=event_id,
                event_type=message_type,
                body_hash=body_hash,
                category=Category.absence,
                subject="Fravær",
                body="Fravær",
                urgency=Urgency.high,
                read_receipt=message_type == ABSENCE_RECORDED,
                sender_id=sender_id,
                audience=audience,
                created_at=now,
            ),
            facts,
        )
        job = Job(
            id=f"{JOB_ABSENCE_PLAN}:{message.id}",
            tenant_id=tenant_id,
            kind=JOB_ABSENCE_PLAN,
            ref=message.id,
            due_at=now,
            urgent=True,
            rank=0,  # the alert's first work: not behind another message's (store/lanes.py)
        )
        if read is not None and self.audiences is not None:
            # Before the plan job exists, so its planner finds it (as the API's intake).
            self.audiences.hand_over(message, *read)
        leased = self.handoff.lease([job], now)
        stored = await self.store.accept_message(message, leased[0] if leased else job)
        if leased and stored is message:  # stored now, with its job: ours to run
            await self._hand(leased)
        self.work_available.set()
        return stored, stored != message

    def _texts(self, message: Message, facts: dict[str, Any]) -> Message:
        """Subject and body as the inbox and the status API show them (Norwegian Bokmål)."""
        if self.renderer is None:
            return message
        now = self.clock.now()
        probe = Delivery(
            id="probe",
            tenant_id=message.tenant_id,
            message_id=message.id,
            recipient_id="",
            recipient_role=Role.guardian,
            channel="inapp",
            language=DEFAULT_LANGUAGE,
            context={"unit": facts["unit"], ABSENCE_CONTEXT_KEY: facts},
            created_at=now,
            updated_at=now,
        )
        out = self.renderer.render(message, probe)
        return message.model_copy(update={"subject": out.subject, "body": out.text})

    # ------------------------------------------------------------------ jobs

    async def _record_of(self, message: Message) -> AbsenceRecord | None:
        """The absence a message belongs to (an alert, its correction or notice, a report)."""
        return await self.store.find_absence(message.tenant_id, event_id=_main_event_id(message))

    async def plan(self, job: Job) -> None:
        """Do one ``absence_plan`` job: resolve, keep whom this message is for, plan."""
        message = await self.store.get_message(job.tenant_id, job.ref)
        record = None if message is None else await self._record_of(message)
        if message is None or record is None:
            await self.store.finish_job(job.id)
            return
        now = self.clock.now()
        snapshot = self.audiences.take(message) if self.audiences is not None else None
        if snapshot is None:
            snapshot = await self.store.load_audience(message.tenant_id, message.audience)
        facts_from = snapshot
        if record.child_id not in snapshot.persons:  # a staff audience
            facts_from = await self.store.load_audience(
                message.tenant_id, Audience(children=[record.child_id])
            )
        unit = unit_of(facts_from, record.child_id, record.data.get("unit_id"))
        resolution = resolution_for(message, snapshot, now, unit)
        keep = await self._keep(message, record)
        alert = message.event_type == ABSENCE_RECORDED
        resolution = Resolution(
            recipients=[r for r in resolution.recipients if keep(r)],
            # Who was left out (no parental responsibility, blocked) is kept for the alert.
            suppressed=resolution.suppressed if alert and record.cancelled_at is None else [],
        )
        facts = self._facts(_KINDS[message.event_type], record, facts_from)
        deliveries: list[Delivery] = []
        jobs: list[Job] = []
        for d, send_job in planned(message, snapshot, resolution, now):
            # An adult pupil or learner is told about themself ("You have not been ...").
            own = d.recipient_id == record.child_id
            mine = facts | {"self": True} if own else facts
            if d.context.get(NEUTRAL_KEY):
                mine = mine | {"unit": "", "group": None}  # rule 4: the renderer words it
            d.context[ABSENCE_CONTEXT_KEY] = mine
            if send_job is not None:
                jobs.append(send_job)
            deliveries.append(d)
        if deliveries:
            await self._queue_sends(job, deliveries, jobs)
        if alert:
            # What an SMS answer from these numbers may be about (answer_sms).
            await self.store.add_alert_phones(
                [
                    AlertPhone(
                        phone=phone,
                        tenant_id=message.tenant_id,
                        message_id=message.id,
                        person_id=r.person_id,
                        at=message.created_at,
                    )
                    for r in resolution.recipients
                    if (phone := getattr(snapshot.persons.get(r.person_id), "phone", None))
                ]
            )
        await self.store.mark_planned(message.tenant_id, message.id, self.clock.now())
        if alert:
            await self._after_alert(message, record, any(jobs))
        await self.store.finish_job(job.id)
        log.info(
            "absence planned",
            extra={"message_id": message.id, "type": message.event_type, "sends": len(jobs)},
        )

    async def _queue_sends(self, job: Job, deliveries: list[Delivery], sends: list[Job]) -> None:
        """Store the deliveries and their send jobs, handed to this process's dispatcher
        (gateway/urgent_handoff.py) on the plan's first run when every delivery is new,
        so none of them can be queued already: a plan run again after a crash queues them.
        Their lease counts from now, when they are stored, not from the plan's start."""
        leased = self.handoff.lease(sends, self.clock.now()) if job.attempts <= 1 else None
        new = await self.store.add_deliveries(deliveries, leased or sends)
        if leased and new == len({d.id for d in deliveries}):
            await self._hand(leased, deliveries)
        self.work_available.set()

    async def _hand(self, leased: list[Job], deliveries: list[Delivery] | None = None) -> None:
        """Give jobs this process just stored as claimed to its dispatcher; if that
        stopped meanwhile (a shutdown between the lease and the hand-over), give them back
        at once, due now and not counted as tried, so a worker takes them now, not when the
        lease ends (an alert a lease late, and reported as taken over)."""
        if self.handoff.hand(leased, deliveries or ()):
            return
        self.store.hold_handed(leased)  # given back only while still the hand-over's
        now = self.clock.now()
        for job in leased:
            await self.store.postpone_job(job.id, now, "handoff_stopped")

    async def _keep(self, message: Message, record: AbsenceRecord) -> Callable[[Recipient], bool]:
        """Which recipients of the resolution a message of this type is for."""
        kind = message.event_type
        if kind == ABSENCE_RECORDED:
            cancelled = record.cancelled_at is not None
            return lambda r: not cancelled
        if kind in (ABSENCE_REPORTED, ABSENCE_UNREACHED):
            return lambda r: r.role is Role.staff
        reporter = record.data.get("guardian_id")
        if kind == ABSENCE_CONFIRMATION:
            return lambda r: r.person_id == reporter
        if kind == ABSENCE_INFORMED:
            return lambda r: r.person_id != reporter and r.role is not Role.staff
        if kind == ABSENCE_CANCELLED and record.cancel_event_id == message.event_id:
            got = await self._got_alert(message.tenant_id, record.message_id)
            return lambda r: r.person_id in got
        return lambda r: False

    async def _got_alert(self, tenant_id: str, message_id: str) -> set[str]:
        """Recipients the alert reached on some channel (or was being handed over for)."""
        deliveries = await self.store.list_deliveries(tenant_id, message_id)
        return {d.recipient_id for d in deliveries if d.status in _GOT_IT}

    async def _after_alert(self, message: Message, record: AbsenceRecord, told: bool) -> None:
        """Escalation's first step, and the staff notice check (at once if nobody is told),
        stored in one call (an existing job, a plan job run twice, is left as it is)."""
        first = None if self.escalator is None else await self.escalator.first_step(message)
        policy = await self.policy(message.tenant_id)
        now = self.clock.now()
        due = now + timedelta(minutes=policy.staff_after_minutes) if told else now
        job = Job(
            id=f"{JOB_ABSENCE_UNREACHED}:{message.id}",
            tenant_id=message.tenant_id,
            kind=JOB_ABSENCE_UNREACHED,
            ref=message.id,
            due_at=due,
            urgent=True,
            rank=None if told else 0,  # due now: before other messages' later sends
        )
        await self.store.add_deliveries([], [job] if first is None else [first, job])

    async def unreached(self, job: Job) -> None:
        """Do one ``absence_unreached`` job: no guardian reached, tell the staff (once)."""
        message = await self.store.get_message(job.tenant_id, job.ref)
        record = None if message is None else await self.store.get_absence(job.tenant_id, job.ref)
        if message is not None and record is not None and record.cancelled_at is None:
            deliveries = await self.store.list_deliveries(message.tenant_id, message.id)
            reads = await self.store.list_reads(message.tenant_id, message.id)
            child = reach(message, deliveries, reads).children.get(record.child_id)
            if child is None or not child.reached:
                await self._notify_staff(message, record)
        await self.store.finish_job(job.id)

    async def _notify_staff(self, alert: Message, record: AbsenceRecord) -> None:
        snapshot = await self.store.load_audience(
            alert.tenant_id, Audience(children=[record.child_id])
        )
        child = snapshot.persons.get(record.child_id)
        if child is None:
            return
        staff = await self._staff(
            alert.tenant_id, child, record.data.get("unit_id"), record.data.get("group_id")
        )
        if not staff:
            log.warning("no staff to tell of an unreached absence", extra={"message_id": alert.id})
            return
        event_id = f"{record.event_id}{_SUFFIX}unreached"
        # The id derives from the alert: the notice is made once, however often this runs.
        _, existed = await self._ensure(
            part_message_id(alert.tenant_id, record.event_id, "unreached"),
            alert.tenant_id,
            event_id,
            ABSENCE_UNREACHED,
            alert.body_hash,
            Audience(staff=staff),
            self._facts("unreached", record, snapshot),
        )
        if not existed:
            log.info("staff told of an unreached absence", extra={"message_id": alert.id})

    # ------------------------------------------------------------------ answers

    async def explain(
        self,
        tenant_id: str,
        message_id: str,
        person_id: str,
        kind: AbsenceKind,
        text: str,
        via: str,
        explanation_id: str,
    ) -> AbsenceExplanation | None:
        """Record a guardian's answer to an alert: stored, an ``absence.explained`` webhook,
        and a read (so the child is reached). None if the message is no alert."""
        record = await self.store.get_absence(tenant_id, message_id)
        if record is None or record.kind != "recorded":
            return None
        now = self.clock.now()
        explanation = AbsenceExplanation(
            id=explanation_id,
            tenant_id=tenant_id,
            message_id=message_id,
            child_id=record.child_id,
            person_id=person_id,
            kind=kind,
            text=text[:1000],
            via=via,
            at=now,
        )
        data = {
            "explanation_id": explanation.id,
            "message_id": message_id,
            "absence_event_id": record.event_id,
            "child_id": record.child_id,
            "recipient_id": person_id,
            "kind": kind.value,
            "text": explanation.text,
            "channel": via,
        }
        # The absence.explained webhook commits with the explanation (one transaction).
        if await self.store.add_absence_explanation(explanation, change=data):
            log.info("absence explained", extra={"message_id": message_id, "via": via})
            job = explanation_job(explanation, now)
            if job is not None:  # translated for staff by a worker (gateway/translations)
                await self.store.add_deliveries([], [job])
                self.work_available.set()
        else:  # the same answer again (a retry): the one stored, with its time
            stored = await self.store.list_absence_explanations(tenant_id, message_id)
            explanation = next((e for e in stored if e.id == explanation_id), explanation)
        # An answer reaches the child like a read does: escalation and the notice stop.
        await record_read(self.store, tenant_id, person_id, message_id, now, via="reply")
        return explanation

    async def answer_sms(self, phone: str, body: str, provider_id: str) -> SmsAnswer | None:
        """An SMS that starts with a keyword, matched against the OPEN alerts of every
        tenant whose recipients have this number: sent within ``ANSWER_WINDOW``, not
        cancelled, not answered by that recipient with another SMS. Never by "the latest
        SMS to this number", which a later message or another municipality changes.

        The alerts of one child (in one tenant) are answered together. Alerts of several
        children: the one whose first name the text holds ("SYK Kari"), else nothing is
        recorded and the answer asks to name the child (``SmsAnswer.reply``). None: no
        keyword, or no open alert (then the SMS may be a report or a plain reply)."""
        answer = parse_answer(body)
        if answer is None:
            return None
        explanation_id = derive_id("twilio", provider_id)
        by_child: dict[tuple[str, str], list[AlertPhone]] = {}
        names: dict[tuple[str, str], str] = {}
        for row in await self.store.alert_phones(phone, self.clock.now() - ANSWER_WINDOW):
            record = await self.store.get_absence(row.tenant_id, row.message_id)
            if record is None or record.kind != "recorded" or record.cancelled_at is not None:
                continue
            answered = await self.store.list_absence_explanations(row.tenant_id, row.message_id)
            if any(e.person_id == row.person_id and e.id != explanation_id for e in answered):
                continue  # answered already (the same SMS again is a provider's retry)
            child = (row.tenant_id, record.child_id)
            by_child.setdefault(child, []).append(row)
            if child not in names:
                person = await self.store.get_person(*child)
                names[child] = person.given_name.casefold() if person is not None else ""
        if not by_child:
            return None
        if len(by_child) > 1:
            words = {w.strip(".,;:!?()").casefold() for w in body.split()}
            by_child = {c: rows for c, rows in by_child.items() if names[c] in words}
            if len(by_child) != 1:
                log.info("sms answer fits several children", extra={"provider_id": provider_id})
                return SmsAnswer(explained=0, reply=AMBIGUOUS_ANSWER)
        (rows,) = by_child.values()
        for row in rows:
            await self.explain(
                row.tenant_id,
                row.message_id,
                row.person_id,
                answer[0],
                answer[1],
                "sms",
                explanation_id,
            )
        return SmsAnswer(explained=len(rows), reply=None)

    async def inbound_sms(
        self, tenant_id: str, delivery: Delivery | None, body: str, provider_id: str
    ) -> bool:
        """Take an inbound SMS that reports an absence (answers are :meth:`answer_sms`'s);
        False leaves it a plain reply."""
        if delivery is None:
            return False
        kind = parse_report(body)
        if kind is None:
            return False
        return await self._sms_report(tenant_id, delivery.recipient_id, kind, body, provider_id)

    async def _sms_report(
        self, tenant_id: str, person_id: str, kind: AbsenceKind, body: str, provider_id: str
    ) -> bool:
        """An SMS report for today, from the person the number was last used for: about
        their one child, or the one whose first name the text names."""
        children = await self.children_of(tenant_id, person_id)
        if len(children) > 1:
            words = {w.strip(".,;:!?").casefold() for w in body.split()}
            children = [c for c in children if c.given_name.casefold() in words]
        if len(children) != 1:
            return False  # which child is unclear: staff read it as a plain reply
        child = children[0]
        snapshot = await self.store.load_audience(tenant_id, Audience(children=[child.id]))
        today = local_time(snapshot, self.clock.now(), unit_of(snapshot, child.id, None)).date()
        event = {
            "id": "sms-" + derive_id("twilio", provider_id)[:24],
            "type": ABSENCE_REPORTED,
            "data": {
                "child_id": child.id,
                "guardian_id": person_id,
                "date": today.isoformat(),
                "kind": kind.value,
                "text": body.strip()[:1000],
            },
        }
        try:
            await self.report(tenant_id, AbsenceReported.model_validate(event), body_hash_of(event))
        except (ValidationFailed, ValidationError):
            return False
        return True

    async def children_of(self, tenant_id: str, person_id: str) -> list[Person]:
        """The children this guardian (or adult pupil: themself) may report absence for."""
        person = await self.store.get_person(tenant_id, person_id)
        if person is None:
            return []
        if person.role is Role.guardian:
            mine = await self.store.load_audience(tenant_id, Audience(guardians=[person_id]))
            ids = sorted({r.child_id for r in mine.relations if r.guardian_id == person_id})
        else:
            ids = [person_id]
        if not ids:
            return []
        snapshot = await self.store.load_audience(tenant_id, Audience(children=ids))
        unit = next(iter(snapshot.units.values()), None)
        on = local_time(snapshot, self.clock.now(), unit).date()
        resolution = resolve(snapshot, Audience(children=ids), Category.absence, on)
        allowed = {
            c for r in resolution.recipients if r.person_id == person_id for c in r.child_ids
        }
        return [snapshot.persons[c] for c in sorted(allowed) if c in snapshot.persons]

    # ------------------------------------------------------------------ status

    async def status(self, message: Message) -> AbsenceStatus | None:
        """The absence part of a message's status (None for other messages)."""
        if message.event_type not in _KINDS:
            return None
        record = await self._record_of(message)
        if record is None:
            return None
        explanations = await self.store.list_absence_explanations(
            message.tenant_id, record.message_id
        )
        return AbsenceStatus(record, explanations)


class AbsenceStatus:
    """An absence as the status API shows it; ``persons`` are the ids it names (the API
    pseudonymises the protected ones)."""

    def __init__(self, record: AbsenceRecord, explanations: list[AbsenceExplanation]) -> None:
        self.record = record
        self.explanations = explanations

    @property
    def days(self) -> list[str]:
        """The days it is for (ISO dates): an alert's one, a report's each."""
        return self.record.days()

    @property
    def persons(self) -> set[str]:
        data = self.record.data
        named = {self.record.child_id, *(e.person_id for e in self.explanations)}
        named.update(p for p in (data.get("guardian_id"), data.get("recorded_by")) if p)
        return named

    def view(self, name: Callable[[str], str]) -> dict[str, Any]:
        record, data = self.record, self.record.data
        reporter = data.get("guardian_id")
        return {
            "kind": record.kind,
            "absence_message_id": record.message_id,
            "absence_event_id": record.event_id,
            "child_id": name(record.child_id),
            "dates": self.days,
            "lesson": data.get("lesson"),
            "expected_arrival": _hhmm(data.get("expected_arrival")),
            "recorded_by": name(data["recorded_by"]) if data.get("recorded_by") else None,
            "note": data.get("note"),
            "reported_by": name(reporter) if reporter else None,
            "reason": data.get("kind") if record.kind == "reported" else None,
            "text": data.get("text") if record.kind == "reported" else None,
            "marks": record.marks,
            "cancelled_at": record.cancelled_at.isoformat() if record.cancelled_at else None,
            "cancel_event_id": record.cancel_event_id,
            # A report with no contact teacher and no unit staff to receive it.
            "unrouted": NO_STAFF if record.kind == "reported" and not data.get("staff") else None,
            "explanations": [
                {
                    "id": e.id,
                    "by": name(e.person_id),
                    "kind": e.kind.value,
                    "text": e.text,
                    "via": e.via,
                    "at": e.at.isoformat(),
                }
                for e in self.explanations
            ],
        }
