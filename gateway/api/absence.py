"""Absence over HTTP: the intake handlers of the absence events (registered in
:data:`gateway.api.events.EVENT_TYPES`), the parent-app routes, and the tenant's settings.

* ``POST /v1/me/absences`` (guardian token): report an absence; the same flow as an
  ``absence.reported`` event. ``id`` (optional) makes a retry idempotent.
* ``POST /v1/me/inbox/{message_id}/absence-reply`` (guardian token): answer an alert
  with a kind and a short text; the same as an SMS keyword answer.
* ``GET``/``PUT /v1/settings/absence`` (tenant API key): the de-duplication window and
  when staff are told of an unreached child; ``{}`` removes the override.

See :mod:`gateway.absence` for the flows.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from gateway.absence import Absences, body_hash_of
from gateway.api import spec
from gateway.api.accepted import Accepted, EventAccepted
from gateway.api.body import parse_json, read_model, read_raw, to_model
from gateway.api.context import CTX, AppContext
from gateway.api.guardian import authenticate_guardian
from gateway.api.responses import Instant, respond_json
from gateway.auth import AuthStore, authenticate_bearer
from gateway.constants import ABSENCE_RECORDED, ABSENCE_REPORTED, DEFAULT_TIME_ZONE
from gateway.errors import Conflict, Forbidden, NotFound, ValidationFailed
from gateway.models import (
    NO_DAY,
    AbsenceCancelled,
    AbsenceExplanation,
    AbsenceKind,
    AbsenceRecorded,
    AbsenceReported,
    Day,
    GuardianText,
    Id,
    Message,
    Scope,
    Strict,
    Tenant,
    derive_id,
)
from gateway.settings import AbsenceSettings
from gateway.store.ports import AbsenceStore, PolicyStore
from gateway.withdrawal import WithdrawalStore, visible_item


class _Ports(AuthStore, PolicyStore, WithdrawalStore, AbsenceStore, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


class AbsenceReport(Strict):
    """Body of ``POST /v1/me/absences``: one ``date`` or several ``dates``."""

    id: Id | None = None  # the app's own id of this report: a retry with it changes nothing
    child_id: Id
    date: Day | None = None
    # validated also when left out: the error names the body's own field, not the
    # event's ``data`` the report becomes
    dates: list[Day] = Field(default_factory=list, max_length=31, validate_default=True)
    kind: AbsenceKind = AbsenceKind.other
    text: GuardianText | None = Field(default=None, max_length=1000)

    @field_validator("dates")
    @classmethod
    def _some_day(cls, dates: list[Day], info: ValidationInfo) -> list[Day]:
        if not dates and "date" in info.data and info.data["date"] is None:
            raise ValueError(NO_DAY)
        return dates


class AbsenceReply(Strict):
    """Body of ``POST /v1/me/inbox/{message_id}/absence-reply``."""

    kind: AbsenceKind
    text: GuardianText = Field(default="", max_length=1000)


class AbsenceReplyAck(BaseModel):
    """Response of ``POST /v1/me/inbox/{message_id}/absence-reply``."""

    message_id: str
    kind: AbsenceKind
    text: str
    at: Instant


def absences(ctx: AppContext) -> Absences:
    """The app's absence flows (one instance, in the app context)."""
    assert ctx.absences is not None  # AppContext.__post_init__ makes sure
    return ctx.absences


# --------------------------------------------------------------------------- events


async def handle_recorded(
    ctx: AppContext, tenant: Tenant, event: AbsenceRecorded, body_hash: str
) -> Accepted:
    return Accepted(*await absences(ctx).record(tenant.id, event, body_hash))


async def handle_reported(
    ctx: AppContext, tenant: Tenant, event: AbsenceReported, body_hash: str
) -> Accepted:
    return Accepted(*await absences(ctx).report(tenant.id, event, body_hash))


async def handle_cancelled(
    ctx: AppContext, tenant: Tenant, event: AbsenceCancelled, body_hash: str
) -> Accepted:
    return Accepted(*await absences(ctx).cancel(tenant.id, event, body_hash))


def deduplicated_into(stored: Message, event: Any) -> dict[str, Any]:
    """A repeated mark is answered with the alert it went into."""
    if stored.event_type == ABSENCE_RECORDED and stored.event_id != getattr(event, "id", None):
        return {"deduplicated_into": stored.id}
    return {}


# --------------------------------------------------------------------------- parent app


# The days a guardian may report (the texts name a day without its year): back to explain
# an absence already past, ahead to tell of a trip; as far as messages may be scheduled.
REPORT_DAYS_BACK = 14
REPORT_DAYS_AHEAD = 90


def _day_errors(body: AbsenceReport, now: datetime) -> list[dict[str, Any]]:
    """A row for each reported day outside REPORT_DAYS_BACK..REPORT_DAYS_AHEAD of today
    in Norway (a year typed wrong: 2999, 1900)."""
    today = now.astimezone(ZoneInfo(DEFAULT_TIME_ZONE)).date()
    first, last = (
        today - timedelta(days=REPORT_DAYS_BACK),
        today + timedelta(days=REPORT_DAYS_AHEAD),
    )
    days: list[tuple[list[str | int], date]] = (
        [(["date"], body.date)] if body.date is not None else []
    )
    days += [(["dates", i], day) for i, day in enumerate(body.dates)]
    return [
        {
            "loc": loc,
            "message": f"a day from {REPORT_DAYS_BACK} days ago to {REPORT_DAYS_AHEAD} days ahead",
            "type": "out_of_range",
        }
        for loc, day in days
        if not first <= day <= last
    ]


async def report_absence(
    ctx: AppContext, tenant_id: str, guardian_id: str, body: AbsenceReport
) -> tuple[Message, AbsenceReported, bool]:
    """A guardian's report (the app's or the parent pages'): the stored message, the
    event it became and whether it was a repeat. Forbidden for another's child;
    Conflict when the report id was used for another report."""
    flows = absences(ctx)
    key = body.id or derive_id(guardian_id, body.model_dump_json())
    event_id = "app-" + derive_id(tenant_id, guardian_id, key)[:24]
    # A retry of a report already taken gets its answer again, even once its day has
    # left the window; only a new report is held to it.
    if await _store(ctx).find_absence(tenant_id, event_id=event_id) is None:
        errors = _day_errors(body, ctx.clock.now())
        if errors:
            raise ValidationFailed("the report names a day out of range", errors=errors)
    if body.child_id not in {c.id for c in await flows.children_of(tenant_id, guardian_id)}:
        raise Forbidden("you cannot report an absence for this child")
    event = {
        "id": event_id,
        "type": ABSENCE_REPORTED,
        "data": {
            **body.model_dump(mode="json", exclude={"id"}, exclude_none=True),
            "guardian_id": guardian_id,
        },
    }
    report = to_model(AbsenceReported, event)
    digest = body_hash_of(event)
    stored, duplicate = await flows.report(tenant_id, report, digest)
    if stored.body_hash != digest:
        raise Conflict("this report id was used before for another report")
    return stored, report, duplicate


async def post_absence(request: web.Request) -> web.Response:
    """Report an absence from the app: 202 like an accepted event."""
    ctx = request.app[CTX]
    tenant_id, guardian_id = await authenticate_guardian(request)
    body = await read_model(request, AbsenceReport, ctx.settings.max_body_bytes)
    stored, report, duplicate = await report_absence(ctx, tenant_id, guardian_id, body)
    return respond_json(
        EventAccepted(
            message_id=stored.id, event_id=report.id, status="accepted", duplicate=duplicate
        ),
        status=202,
    )


async def answer_alert(
    ctx: AppContext, tenant_id: str, guardian_id: str, message_id: str, body: AbsenceReply
) -> AbsenceExplanation:
    """A guardian's answer to an alert in their inbox (the app's or the parent pages');
    NotFound when it is not an alert of theirs."""
    # Only what the inbox shows (not withdrawn by a block, ...) can be answered.
    if await visible_item(_store(ctx), tenant_id, guardian_id, message_id, ctx.clock.now()) is None:
        raise NotFound("message not found")
    explanation_id = derive_id("inapp", tenant_id, message_id, guardian_id, body.model_dump_json())
    explanation = await absences(ctx).explain(
        tenant_id, message_id, guardian_id, body.kind, body.text, "inapp", explanation_id
    )
    if explanation is None:
        raise NotFound("no absence alert with this id")
    return explanation


async def post_absence_reply(request: web.Request) -> web.Response:
    """Answer an absence alert in the inbox: 200 with the explanation."""
    ctx = request.app[CTX]
    tenant_id, guardian_id = await authenticate_guardian(request)
    message_id = request.match_info["message_id"]
    body = await read_model(request, AbsenceReply, ctx.settings.max_body_bytes)
    explanation = await answer_alert(ctx, tenant_id, guardian_id, message_id, body)
    return respond_json(
        AbsenceReplyAck(
            message_id=message_id, kind=explanation.kind, text=explanation.text, at=explanation.at
        )
    )


# --------------------------------------------------------------------------- settings


async def get_settings(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.admin)
    policy = await absences(ctx).policy(tenant.id)
    return respond_json(policy)


async def put_settings(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.admin)
    override = parse_json(await read_raw(request, ctx.settings.max_body_bytes))
    if not isinstance(override, dict):
        raise ValidationFailed(
            "the body is not valid",
            errors=[{"loc": [], "message": "must be a JSON object", "type": "dict_type"}],
        )
    policy = to_model(AbsenceSettings, {**ctx.settings.absence.model_dump(mode="json"), **override})
    await _store(ctx).set_absence_settings(tenant.id, override or None)
    return respond_json(policy)


_SETTINGS = spec.Response("The settings in force (with the tenant's override)", AbsenceSettings)
OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("GET", "/v1/settings/absence"): spec.Operation(
        tag="settings",
        summary="The tenant's absence settings in force",
        security=spec.tenant("admin"),
        responses={200: _SETTINGS},
        errors=(401,),
    ),
    ("PUT", "/v1/settings/absence"): spec.Operation(
        tag="settings",
        summary="Override the de-duplication window or the staff notice delay"
        " (`{}` removes the override)",
        security=spec.tenant("admin"),
        body=spec.Body(AbsenceSettings),
        responses={200: _SETTINGS},
        errors=(401, *spec.BODY_ERRORS, 422),
    ),
    ("POST", "/v1/me/absences"): spec.Operation(
        tag="parent app",
        summary="Report an absence (the `absence.reported` flow)",
        description=(
            "The child's contact teachers (else the unit's staff) are told, the"
            " reporter gets a confirmation, the other guardians with rights are"
            " informed without being told who reported. `id` makes a retry"
            " idempotent; the same `id` with another report is 409."
        ),
        security=spec.GUARDIAN,
        body=spec.Body(AbsenceReport),
        responses={202: spec.Response("Accepted (or accepted before: duplicate)", EventAccepted)},
        errors=(401, 403, 409, *spec.BODY_ERRORS, 422),
    ),
    ("POST", "/v1/me/inbox/{message_id}/absence-reply"): spec.Operation(
        tag="parent app",
        summary="Answer an absence alert (an `absence.explained` webhook; a read)",
        security=spec.GUARDIAN,
        params=(spec.path("message_id", "Message id of the alert"),),
        body=spec.Body(AbsenceReply),
        responses={200: spec.Response("Recorded", AbsenceReplyAck)},
        errors=(401, 404, *spec.BODY_ERRORS, 422),
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/me/absences", post_absence)
    app.router.add_post("/v1/me/inbox/{message_id}/absence-reply", post_absence_reply)
    app.router.add_get("/v1/settings/absence", get_settings)
    app.router.add_put("/v1/settings/absence", put_settings)
