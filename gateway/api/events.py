"""``POST /v1/events``: the intake. An accepted event is stored durably before the 202.

Each event type is one entry in :data:`EVENT_TYPES`: the model that validates it
and the handler that turns it into a stored message and its planning job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel

from gateway import intake, scheduling
from gateway.api import absence, recipients, spec
from gateway.api.accepted import Accepted, EventAccepted
from gateway.api.attachments import attachment_service
from gateway.api.body import parse_json, read_raw, to_model
from gateway.api.context import CTX, AppContext
from gateway.api.limits import body_limit
from gateway.api.responses import respond_json
from gateway.auth import AuthStore, authenticate_event
from gateway.errors import Conflict, InputError, ValidationFailed
from gateway.intake import IntakeStore
from gateway.metrics import EVENTS
from gateway.models import (
    AbsenceCancelled,
    AbsenceRecorded,
    AbsenceReported,
    Audience,
    Message,
    MessageCreated,
    Tenant,
    derive_id,
)
from gateway.store.directory_checks import MAX_REPORTED_ERRORS
from gateway.store.ports import AudienceReader, Translations
from gateway.translations import intake_rows

EventHandler = Callable[[AppContext, Tenant, Any, str], Awaitable[Accepted]]


class _Ports(AuthStore, AudienceReader, IntakeStore, Translations, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


@dataclass(frozen=True)
class EventType:
    model: type[BaseModel]
    handle: EventHandler
    # More fields for the 202, from the stored message and the event (e.g. absence's
    # "deduplicated_into" when a repeated mark went into an earlier alert).
    answer: Callable[[Message, Any], dict[str, Any]] | None = None


_SINGULAR = {
    "children": "child",
    "groups": "group",
    "units": "unit",
    "guardians": "guardian",
    "staff": "staff member",
}


async def check_audience(ctx: AppContext, tenant: Tenant, audience: Audience) -> None:
    """Raise ValidationFailed naming the audience ids the directory does not know: the
    first ``MAX_REPORTED_ERRORS`` of them, each at its place in its list."""
    missing = await _store(ctx).missing_ids(tenant.id, audience)
    if not missing:
        return
    places: dict[str, dict[str, int]] = {}  # per list, each id's first index (one pass)
    errors: list[dict[str, Any]] = []
    for kind, ref in missing[:MAX_REPORTED_ERRORS]:
        if kind not in places:
            ids: list[str] = getattr(audience, kind, [])
            places[kind] = {i: n for n, i in reversed(list(enumerate(ids)))}
        where: list[Any] = ["data", "audience", kind]
        if ref in places[kind]:
            where.append(places[kind][ref])
        errors.append(
            {
                "loc": where,
                "message": f"unknown {_SINGULAR.get(kind, kind)}",
                "type": "unknown_reference",
            }
        )
    more = f" (the first {len(errors)} are listed)" * (len(missing) > len(errors))
    raise ValidationFailed(f"the audience names {len(missing)} unknown id(s){more}", errors=errors)


async def handle_message_created(
    ctx: AppContext, tenant: Tenant, event: MessageCreated, body_hash: str
) -> Accepted:
    data = event.data
    now = ctx.clock.now()
    if await _store(ctx).get_message(tenant.id, derive_id(tenant.id, event.id)) is None:
        # Not for a replay: a scheduled event sent again after its send_at is a duplicate.
        scheduling.check_send_at(data.send_at, now, ctx.settings.schedule_horizon_days)
    await check_audience(ctx, tenant, event.data.audience)
    # Read once: for the 202's preview, the confidential check and then the planner.
    audience = await recipients.read(ctx, tenant.id, data.audience)
    seen = recipients.preview(ctx, audience.snapshot, event)
    recipients.refuse_confidential_to_nobody(seen, event)
    message = Message(
        id=derive_id(tenant.id, event.id),
        tenant_id=tenant.id,
        event_id=event.id,
        event_type=event.type,
        body_hash=body_hash,
        category=data.category,
        subject=data.subject,
        body=data.body,
        urgency=data.urgency,
        read_receipt=data.read_receipt,
        sender_id=data.sender_id,
        sender_name=data.sender_name,
        audience=data.audience,
        created_at=now,
    )
    if await _store(ctx).get_message(tenant.id, message.id) is None:
        # Before the message (and its planning job): planning finds the teacher's own.
        await _store(ctx).translations.add(intake_rows(message, data.language, data.translations))
    if data.attachments:
        await attachment_service(ctx).claim(tenant.id, data.attachments, message.id)
    if ctx.audiences is not None and data.send_at is None:
        # Before the planning job exists, so its planner finds it (a scheduled message is
        # resolved when it is due, long after the snapshot could be used).
        ctx.audiences.hand_over(message, audience.snapshot, audience.read_at)
    stored, duplicate = await intake.accept(_store(ctx), message, send_at=data.send_at)
    return Accepted(stored, duplicate, seen.answer())


EVENT_TYPES: dict[str, EventType] = {
    "message.created": EventType(
        MessageCreated,
        handle_message_created,
        answer=lambda _, event: scheduling.accepted_answer(event.data.send_at),
    ),
    "absence.recorded": EventType(
        AbsenceRecorded, absence.handle_recorded, absence.deduplicated_into
    ),
    "absence.reported": EventType(AbsenceReported, absence.handle_reported),
    "absence.cancelled": EventType(AbsenceCancelled, absence.handle_cancelled),
}


def body_hash(parsed: Any) -> str:
    """sha256 of the canonical JSON, so key order and whitespace do not make a new body."""
    canonical = json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _event_type(parsed: Any) -> tuple[str, EventType]:
    if not isinstance(parsed, dict):
        raise ValidationFailed(
            "the body is not valid",
            errors=[{"loc": [], "message": "expected a JSON object", "type": "dict_type"}],
        )
    name = parsed.get("type")
    kind = EVENT_TYPES.get(name) if isinstance(name, str) else None
    if kind is None:
        supported = ", ".join(sorted(EVENT_TYPES))
        raise ValidationFailed(
            "unsupported event type",
            errors=[
                {
                    "loc": ["type"],
                    "message": f"unsupported event type; supported: {supported}",
                    "type": "unsupported_event_type",
                }
            ],
        )
    return str(name), kind


async def accept_event(
    ctx: AppContext, tenant: Tenant, raw: bytes, *, webhook_id: str | None = None
) -> tuple[int, EventAccepted]:
    """Validate and store one event; return (HTTP status, answer).

    Raises InputError subclasses (422 invalid, 409 same id with another body).
    A replay of an accepted event gets the same answer with ``duplicate: true``.
    """
    type_label = "unknown"
    try:
        parsed = parse_json(raw)
        type_label, kind = _event_type(parsed)
        event = to_model(kind.model, parsed)
        event_id: str = getattr(event, "id")  # noqa: B009 - every event model has an id
        if webhook_id is not None and webhook_id != event_id:
            raise ValidationFailed(
                "webhook-id and event id differ",
                errors=[
                    {
                        "loc": ["header", "webhook-id"],
                        "message": "must equal the event id",
                        "type": "id_mismatch",
                    }
                ],
            )
        digest = body_hash(parsed)
        stored, duplicate, fields = await kind.handle(ctx, tenant, event, digest)
        if stored.body_hash != digest:
            EVENTS.labels(type_label, "conflict").inc()
            raise Conflict("this event id was accepted before with a different body")
    except Conflict:
        raise
    except InputError:
        EVENTS.labels(type_label, "rejected").inc()
        raise
    EVENTS.labels(type_label, "duplicate" if duplicate else "accepted").inc()
    if not duplicate:
        ctx.work_available.set()
    return 202, EventAccepted(
        message_id=stored.id,
        event_id=event_id,
        status="accepted",
        duplicate=duplicate,
        **(kind.answer(stored, event) if kind.answer is not None else {}),
        **(fields or {}),
    )


async def post_event(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    raw = await read_raw(request, body_limit(request))
    tenant = await authenticate_event(request, raw, _store(ctx), ctx.clock.now())
    status, answer = await accept_event(
        ctx, tenant, raw, webhook_id=request.headers.get("webhook-id")
    )
    return respond_json(answer, status=status)


EVENT_EXAMPLE = {
    "id": "evt-2026-000123",
    "type": "message.created",
    "timestamp": "2026-11-27T09:00:00Z",
    "data": {
        "sender_id": "s1",
        "sender_name": "Kontaktlærer 5A",
        "audience": {"groups": ["g1"]},
        "category": "general",
        "subject": "Tur til skogen fredag",
        "body": "Husk matpakke og gode sko.",
    },
}

OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("POST", "/v1/events"): spec.Operation(
        tag="events",
        summary="Accept an event (idempotent on the event id)",
        description=(
            "Authenticate with the tenant API key, or sign the request the Standard"
            " Webhooks way with the tenant's `whsec_` secret and name the tenant in"
            " `X-Budbringer-Tenant`. `webhook-id` must equal the event `id`. The event is"
            " stored durably before the 202. Replaying it gives the same answer with"
            " `duplicate: true`; the same id with another body is 409."
        ),
        security=spec.tenant("events") + spec.SIGNED,
        params=(
            spec.header("webhook-id", "Standard Webhooks message id (= event id)"),
            spec.header("webhook-timestamp", "Unix seconds; ±5 minutes"),
            spec.header("X-Budbringer-Tenant", "Tenant id; required when signed"),
        ),
        body=spec.Body(
            spec.OneOf("type", {name: kind.model for name, kind in EVENT_TYPES.items()}),
            example=EVENT_EXAMPLE,
        ),
        responses={202: spec.Response("Accepted (or accepted before: duplicate)", EventAccepted)},
        errors=(401, 409, *spec.BODY_ERRORS, 422),
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/events", post_event)
