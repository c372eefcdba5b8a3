"""Re-checks before a late send: is this recipient still allowed, still unreached?

Resolution happens when a message is planned. A delivery that goes out much
later — deferred by quiet hours, or planned by escalation — must not reach a
guardian whose relation was blocked or whose right to information was revoked
in between (DESIGN.md rules 2 and 3), and an escalation delivery must not go
once the message is reached. :func:`allowed_children` re-runs the resolver on a
fresh snapshot; :func:`withheld` is the dispatcher's check for one delivery.
Normal sends (no ``not_before``, not escalation) skip all this: see
:func:`needs_recheck`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from gateway.constants import ESCALATION_KEY, PER_CHILD
from gateway.models import (
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    Job,
    Message,
    Role,
)
from gateway.planner import local_time
from gateway.resolver import BLOCKED, Resolution, resolve
from gateway.store.ports import AudienceReader, JobQueue, ReachStore
from gateway.store.records import SendOutcome

REACHED = "reached"


class RecheckStore(AudienceReader, ReachStore, Protocol):
    """What checking rights and reach again needs."""


class HoldStore(RecheckStore, JobQueue, Protocol):
    """The dispatcher's gate: the recheck plus putting a job off."""


def needs_recheck(delivery: Delivery) -> bool:
    """Whether a send must re-check rights first: it was deferred, or escalation planned it."""
    return delivery.not_before is not None or ESCALATION_KEY in delivery.context


def recheck_audience(
    message: Message, people: Iterable[tuple[str, Role, Sequence[str]]]
) -> Audience:
    """The narrowed audience of a re-check: the children these recipients were told about,
    and those of them the message named (naming changes what the resolver allows)."""
    named_guardians = set(message.audience.guardians)
    named_staff = set(message.audience.staff)
    children: set[str] = set()
    guardians: list[str] = []
    staff: list[str] = []
    for person_id, role, child_ids in people:
        children.update(child_ids)
        if role is Role.staff and person_id in named_staff:
            staff.append(person_id)
        elif person_id in named_guardians:
            guardians.append(person_id)
    return Audience.model_construct(
        children=sorted(children), groups=[], units=[], guardians=guardians, staff=staff
    )


def allowed_children(
    resolution: Resolution, person_id: str, child_ids: Sequence[str]
) -> tuple[list[str], str | None]:
    """Of ``child_ids``, those ``person_id`` may still be told about, and — when that is
    not all of them, or the person is no longer told at all — the reason (blocked first)."""
    recipient = next((r for r in resolution.recipients if r.person_id == person_id), None)
    granted = set(recipient.child_ids) if recipient is not None else set()
    allowed = [c for c in child_ids if c in granted]
    if recipient is not None and len(allowed) == len(child_ids):
        return allowed, None
    reasons = [
        s.reason
        for s in resolution.suppressed
        if s.person_id == person_id and (s.child_id is None or s.child_id in child_ids)
    ]
    reason = BLOCKED if BLOCKED in reasons else (reasons[0] if reasons else "not_allowed")
    return allowed, reason


async def is_reached(
    store: ReachStore, message: Message, recipient_id: str, child_ids: Iterable[str]
) -> bool:
    """Whether following ``recipient_id`` up is pointless: they read it, or (absence,
    emergency) every child it concerns them for was reached by someone."""
    reached = {
        (r.subject_kind, r.subject_id)
        for r in await store.list_reached(message.tenant_id, message.id)
    }
    children = set(child_ids)
    if message.category in PER_CHILD and children:
        return all(("child", c) in reached for c in children)
    return ("guardian", recipient_id) in reached


async def withheld(
    store: RecheckStore, message: Message, delivery: Delivery, now: datetime
) -> tuple[DeliveryStatus, str] | None:
    """Why a deferred or escalation delivery must not go now, or None when it may.

    ``(cancelled, "reached")``: an escalation delivery whose recipient (or every child
    it concerns) was reached meanwhile. ``(suppressed, reason)``: the recipient may no
    longer be told about one of its children (``blocked``, ``information_revoked``, ...)
    — the content names that child, so the whole delivery is withheld.
    """
    if ESCALATION_KEY in delivery.context and await is_reached(
        store, message, delivery.recipient_id, delivery.child_ids
    ):
        return DeliveryStatus.cancelled, REACHED
    if delivery.recipient_role is not Role.guardian:
        return None  # rules 2 and 3 are about guardians' relations; staff are told by role
    audience = recheck_audience(
        message, [(delivery.recipient_id, delivery.recipient_role, delivery.child_ids)]
    )
    if not (audience.children or audience.guardians or audience.staff):
        return None  # nothing the resolver could say more about
    snapshot = await store.load_audience(delivery.tenant_id, audience)
    category: Category = message.category
    resolution = resolve(snapshot, audience, category, local_time(snapshot, now).date())
    _, reason = allowed_children(resolution, delivery.recipient_id, delivery.child_ids)
    if reason is not None:
        return DeliveryStatus.suppressed, reason
    return None


async def held(
    store: HoldStore,
    load_message: Callable[[Delivery], Awaitable[Message | None]],
    commit: Callable[[SendOutcome], Awaitable[None]],
    job: Job,
    delivery: Delivery,
    now: datetime,
) -> bool:
    """The dispatcher's gate before a send; True when the send does not happen now.

    Still in quiet hours: the job is put off to ``not_before``. Deferred or planned
    by escalation: rights and reach are checked again (:func:`withheld`) and, if the
    delivery must not go, its final outcome is committed. A normal send costs no I/O.
    """
    if delivery.not_before is not None and delivery.not_before > now:
        await store.postpone_job(job.id, delivery.not_before, "deferred")
        return True
    if not needs_recheck(delivery):
        return False
    message = await load_message(delivery)
    verdict = None if message is None else await withheld(store, message, delivery, now)
    if verdict is None:
        return False
    status, reason = verdict
    await commit(SendOutcome(job.id, delivery.id, status, now, detail=reason, reason=reason))
    return True
