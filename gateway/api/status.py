"""``GET /v1/messages/{id}``: a message, who it reached, its deliveries and replies.

Addresses are never shown, nor the render context (it carries children's names):
persons appear by id only. Besides the deliveries with their history the answer
says, per child the message concerns, whether it was reached and by whom
(``children``); per recipient, the best status across channels and the read
(``guardians``); and the counts (``summary``). See :mod:`gateway.tracker` for what
"reached" means per category.

Persons with a protected address (fortrolig / strengt fortrolig), recipients or
children, appear only by a stable opaque pseudonym (``protected-`` + 16 hex
digits of an HMAC under the gateway secret) unless the caller's key has the
``protected`` scope. The pseudonym is the same in every field and every call, so
the status still adds up, but it cannot be turned back into the id.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Protocol

from aiohttp import web

from gateway import scheduling
from gateway.api import spec
from gateway.api.absence import absences
from gateway.api.context import CTX, AppContext
from gateway.api.responses import respond_json
from gateway.api.status_models import (
    AbsenceView,
    CancelAnswer,
    ChildStatus,
    DeliveryView,
    GuardianStatus,
    HistoryEntry,
    MessageStatus,
    ReplyTranslationView,
    ReplyView,
    ScheduleView,
    StatusSummary,
    TranslationView,
)
from gateway.auth import AuthStore, authenticate_bearer, key_has
from gateway.errors import NotFound
from gateway.locales import is_fallback, resolve_language
from gateway.models import (
    Delivery,
    Message,
    Reply,
    Scope,
    StatusChange,
    Translation,
    TranslationOrigin,
)
from gateway.pseudonyms import Names, NamesStore, hides_subject, names_for
from gateway.store.ports import (
    DeliveryReport,
    DeliveryStore,
    JobQueue,
    MessageStore,
    ReachStore,
    ReplyStore,
    ScheduleFiles,
    Translations,
)
from gateway.tracker import ChildReach, Reach, RecipientReach, reach
from gateway.translations import explanation_translations, reply_translations, source_language
from gateway.waiting import WAITING, job_of, waiting_for

PROTECTED_SUBJECT = "(protected)"


class _Ports(
    AuthStore,
    NamesStore,
    MessageStore,
    DeliveryStore,
    DeliveryReport,
    ReachStore,
    ReplyStore,
    JobQueue,
    ScheduleFiles,
    Translations,
    Protocol,
):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


def _delivery(
    delivery: Delivery, history: list[StatusChange], name: Names, waiting: str | None
) -> DeliveryView:
    return DeliveryView(
        id=delivery.id,
        recipient_id=name(delivery.recipient_id),
        recipient_role=delivery.recipient_role,
        channel=delivery.channel,
        target=name.target(delivery),
        status=delivery.status,
        reason=delivery.reason,
        segments=delivery.segments,
        # The language asked for, the one our texts were written in, and whether that is
        # the Bokmål fallback for a language we have no texts for (never silent).
        language=delivery.language,
        wrapper_language=resolve_language(delivery.language),
        language_fallback=is_fallback(delivery.language),
        child_ids=name.all(delivery.child_ids),
        history=[HistoryEntry(status=c.status, at=c.at, detail=c.detail) for c in history],
        waiting_for=waiting,
    )


def _answer_translation(translation: Translation | None) -> ReplyTranslationView | None:
    if translation is None:
        return None
    return ReplyTranslationView(
        language=translation.language,
        origin="machine" if translation.usable else "failed",
        provider=translation.provider,
        reason=translation.reason,
        body=translation.body if translation.usable else None,
    )


async def _absence_view(ctx: AppContext, tenant_id: str, view: dict[str, Any]) -> AbsenceView:
    """The absence with each explanation's translation for staff (gateway/translations)."""
    found = AbsenceView.model_validate(view)
    ids = [e.id for e in found.explanations]
    rows = await explanation_translations(_store(ctx), tenant_id, ids)
    for explanation in found.explanations:
        explanation.translation = _answer_translation(rows.get(explanation.id))
    return found


def _reply(reply: Reply, name: Names, translation: Translation | None) -> ReplyView:
    # Staff may read replies to their own message; the sender's address is left out.
    return ReplyView(
        id=reply.id,
        channel=reply.channel,
        person_id=name(reply.person_id) if reply.person_id else None,
        body=reply.body,
        received_at=reply.received_at,
        # In the message's language for staff (the body above stays the original).
        translation=_answer_translation(translation),
    )


def _child(child: ChildReach, name: Names) -> ChildStatus:
    return ChildStatus(
        child_id=name(child.child_id),
        reached=child.reached,
        reached_by=name.all(child.reached_by),
        reached_at=child.reached_at,
        # why nobody could be told: no_recipient, all_suppressed, all_failed (else null)
        reason=child.reason,
    )


def _guardian(recipient: RecipientReach, name: Names) -> GuardianStatus:
    return GuardianStatus(
        recipient_id=name(recipient.recipient_id),
        role=recipient.role,
        best_status=recipient.best_status,
        channels=recipient.channels,
        read_at=recipient.read_at,
        via=recipient.via,
    )


def _summary(view: Reach, name: Names) -> StatusSummary:
    children = view.children.values()
    return StatusSummary(
        guardians_total=len(view.recipients),
        guardians_read=sum(1 for r in view.recipients.values() if r.read_at is not None),
        children_total=len(view.children),
        children_reached=sum(1 for c in children if c.reached),
        children_not_reached=sorted(name(c.child_id) for c in children if not c.reached),
        children_not_told=sum(1 for c in children if c.reason is not None),
    )


async def translations_view(ctx: AppContext, message: Message, *, hidden: bool) -> dict[str, Any]:
    """The message's language and its translations (gateway/translations.py)."""
    rows = await _store(ctx).translations.of_message(message.tenant_id, message.id)
    return {
        "language": source_language(rows),
        "translations": [
            TranslationView(
                language=row.language,
                origin=row.origin.value,  # never "source" here
                provider=row.provider,
                reason=row.reason,
                subject=None if hidden or not row.usable else row.subject,
                body=None if hidden or not row.usable else row.body,
                at=row.at,
            )
            for _, row in sorted(rows.items())
            if row.origin is not TranslationOrigin.source
        ],
    }


async def get_message(request: web.Request) -> web.Response:
    """The status of one message of the calling tenant; another tenant's is 404."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.status)
    message = await _store(ctx).get_message(tenant.id, request.match_info["id"])
    if message is None:
        raise NotFound("no such message")
    deliveries = await _store(ctx).list_deliveries(tenant.id, message.id)
    history = await _store(ctx).history([d.id for d in deliveries])
    counts = await _store(ctx).count_by_status(tenant.id, message.id)
    replies = await _store(ctx).list_replies(tenant.id, message.id)
    view = reach(message, deliveries, await _store(ctx).list_reads(tenant.id, message.id))
    absence = await absences(ctx).status(message)
    persons = {d.recipient_id for d in deliveries} | set(view.children)
    persons.update(r.person_id for r in replies if r.person_id)
    persons.update(absence.persons if absence is not None else ())
    name = await names_for(
        _store(ctx),
        ctx.secret,
        tenant.id,
        persons,
        sees_protected=key_has(request, Scope.protected),
    )
    now = ctx.clock.now()
    schedule = await scheduling.schedule_of(_store(ctx), message)
    reply_rows = await reply_translations(_store(ctx), tenant.id, [r.id for r in replies])
    jobs = await _store(ctx).get_jobs([job_of(d) for d in deliveries if d.status in WAITING])
    children = sorted((_child(c, name) for c in view.children.values()), key=attrgetter("child_id"))
    guardians = sorted(
        (_guardian(r, name) for r in view.recipients.values()), key=attrgetter("recipient_id")
    )
    return respond_json(
        MessageStatus(
            id=message.id,
            event_id=message.event_id,
            category=message.category,
            subject=PROTECTED_SUBJECT if hides_subject(message, name) else message.subject,
            read_receipt=message.read_receipt,
            created_at=message.created_at,
            planned_at=message.planned_at,
            schedule=None if schedule is None else ScheduleView.of(schedule),
            counts=counts,
            sms_segments=sum(d.segments or 0 for d in deliveries if d.channel == "sms"),
            summary=_summary(view, name),
            children=children,
            guardians=guardians,
            deliveries=[
                _delivery(
                    d,
                    history.get(d.id, []),
                    name,
                    waiting_for(d, jobs.get(job_of(d)), ctx.channel_health, now),
                )
                for d in deliveries
            ],
            replies=[_reply(r, name, reply_rows.get(r.id)) for r in replies],
            # absence alerts and reports: the absence, its marks and guardians' answers
            absence=None
            if absence is None
            else await _absence_view(ctx, tenant.id, absence.view(name)),
            **await translations_view(ctx, message, hidden=hides_subject(message, name)),
        )
    )


async def cancel_message(request: web.Request) -> web.Response:
    """Cancel a scheduled message before it starts; 409 once it has (or if not scheduled)."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.events)
    view = await scheduling.cancel(
        _store(ctx), tenant.id, request.match_info["id"], ctx.clock.now()
    )
    return respond_json(CancelAnswer(id=request.match_info["id"], schedule=ScheduleView.of(view)))


OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("GET", "/v1/messages/{id}"): spec.Operation(
        tag="status",
        summary="A message with its deliveries, their history, and replies",
        security=spec.tenant("status"),
        params=(spec.path("id", "Message id (from the 202)"),),
        responses={200: spec.Response("Message status", MessageStatus)},
        errors=(401, 404),
    ),
    ("POST", "/v1/messages/{id}/cancel"): spec.Operation(
        tag="status",
        summary="Cancel a scheduled message before it starts",
        description=(
            "Only a message.created with send_at, until its planning starts at"
            " send_at; 409 once it has started or if the message was not scheduled."
            " Cancelling again answers the same."
        ),
        security=spec.tenant("events"),
        params=(spec.path("id", "Message id (from the 202)"),),
        responses={200: spec.Response("Cancelled", CancelAnswer)},
        errors=(401, 404, 409),
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/messages/{id}", get_message)
    app.router.add_post("/v1/messages/{id}/cancel", cancel_message)
