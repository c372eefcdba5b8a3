"""Parent-app routes (``/v1/me/...``): inbox, read marks, preferences, devices.

Authenticated by a guardian token (``Authorization: Bearer <token>`` from
``POST /v1/guardians/{id}/tokens``). A tenant API key is not accepted here,
and a guardian token is not accepted on tenant routes.

Devices: ``PUT /v1/me/devices/{device_id}`` takes a Device body whose ``id``
may be left out; if given it must equal the path id. ``last_seen`` is always
set by the server to now (a value in the body is ignored).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel, Field

from gateway.api import spec
from gateway.api.attachment_models import AttachmentView, attachment_view
from gateway.api.body import parse_json, read_model, read_raw, to_model
from gateway.api.context import CTX, AppContext
from gateway.api.paging import BEFORE_ID, before_time, page_after_id
from gateway.api.responses import respond_json
from gateway.auth import AuthStore
from gateway.constants import (
    ABSENCE_CONTEXT_KEY,
    ABSENCE_RECORDED,
    DEFAULT_LANGUAGE,
    MANDATORY_CATEGORIES,
    NEUTRAL_KEY,
)
from gateway.errors import NotFound, Unauthorized, ValidationFailed
from gateway.models import (
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    Device,
    InboxItem,
    Message,
    Preferences,
    Role,
)
from gateway.render import Renderer
from gateway.store.ports import (
    AudienceReader,
    DeliveryStore,
    DirectoryStore,
    GuardianStore,
    InboxStore,
    MessageStore,
    ReachStore,
)
from gateway.tokens import verify_guardian_token
from gateway.tracker import record_read
from gateway.withdrawal import visible_item, visible_items

MAX_INBOX_LIMIT = 200
DEFAULT_INBOX_LIMIT = 50


class _Ports(
    AuthStore,
    AudienceReader,
    DirectoryStore,
    GuardianStore,
    InboxStore,
    MessageStore,
    DeliveryStore,
    ReachStore,
    Protocol,
):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


class InboxEntry(BaseModel):
    """An inbox message as the app sees it (the render context reduced to ``children``)."""

    message_id: str
    subject: str
    body: str
    category: Category
    sender_name: str | None
    child_ids: list[str]
    children: list[Any]
    status: DeliveryStatus
    created_at: datetime
    read_at: datetime | None


class InboxMessage(InboxEntry):
    attachments: list[AttachmentView] = Field(default_factory=list)


class InboxPage(BaseModel):
    items: list[InboxMessage]
    next_before: datetime | None
    next_before_id: str | None


class ReadAck(BaseModel):
    read: bool


class DeviceList(BaseModel):
    devices: list[Device]


def preference_errors(prefs: Preferences, loc: list[Any]) -> list[dict[str, Any]]:
    """Every error row of the app's preferences: mandatory categories switched off, quiet
    hours half given (the parent page asks for both too), a channel twice. A directory
    batch is checked for the first alone: the planner reads the others as no quiet hours
    and one channel, and one guardian's row must not stop a whole import."""
    errors = mandatory_channel_errors(prefs, loc)
    start, end = prefs.quiet_start, prefs.quiet_end
    if (start is None) != (end is None):
        errors.append(
            {
                "loc": [*loc, "quiet_end" if end is None else "quiet_start"],
                "message": "give both quiet_start and quiet_end, or neither",
                "type": "quiet_hours",
            }
        )
    errors.extend(
        {
            "loc": [*loc, "channels", category.value],
            "message": "a channel is listed twice",
            "type": "duplicate",
        }
        for category, channels in prefs.channels.items()
        if len(set(channels)) != len(channels)
    )
    return errors


def mandatory_channel_errors(prefs: Preferences, loc: list[Any]) -> list[dict[str, Any]]:
    """Error rows for absence/emergency switched off (an empty channel list).

    Those categories may be moved between channels but never switched off; a
    category left out keeps the default routing.
    """
    return [
        {
            "loc": [*loc, "channels", category.value],
            "message": f"{category.value} messages cannot be switched off; give at least"
            " one channel",
            "type": "mandatory_category",
        }
        for category in Category
        if category.value in MANDATORY_CATEGORIES
        and category in prefs.channels
        and not prefs.channels[category]
    ]


async def authenticate_guardian(request: web.Request) -> tuple[str, str]:
    """``(tenant_id, guardian_id)`` from a valid guardian token whose person still exists."""
    ctx = request.app[CTX]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a guardian token is required")
    tenant_id, guardian_id = verify_guardian_token(ctx.secret, token.strip(), ctx.clock.now())
    # A person deleted from the directory loses access before the token expires.
    if await _store(ctx).get_person(tenant_id, guardian_id) is None:
        raise Unauthorized("invalid guardian token")
    return tenant_id, guardian_id


def shown_item(item: InboxItem, renderer: Renderer | None) -> InboxItem:
    """An inbox item as its recipient may see it, in the app and on the parent pages.

    Our own absence texts are told in the delivery's language (the message keeps the
    Bokmål one), and rule 4, a protected child or co-guardian: no sender, and the
    absence text told from this delivery's neutral facts (:meth:`Renderer.own_text`)."""
    update: dict[str, Any] = {}
    if item.context.get(NEUTRAL_KEY):
        update["sender_name"] = None
        if item.context.get(ABSENCE_CONTEXT_KEY):
            update["body"] = ""  # without a renderer: the stored text names the school
    own = renderer.own_text(*_as_sent(item)) if renderer is not None else None
    if own is not None:
        update["subject"], update["body"] = own
    return item.model_copy(update=update) if update else item


def _entry(item: InboxItem, renderer: Renderer | None = None) -> InboxEntry:
    """An inbox item as the app sees it: the render context is reduced to the children's
    names (the planner puts only the recipient's own children there)."""
    shown = shown_item(item, renderer)
    children = item.context.get("children", [])
    return InboxEntry(
        **shown.model_dump(exclude={"context"}),
        children=children if isinstance(children, list) else [],
    )


def _as_sent(item: InboxItem) -> tuple[Message, Delivery]:
    """The message and in-app delivery an inbox item was made of, as far as rendering
    our own texts needs them."""
    message = Message(
        id=item.message_id,
        tenant_id="",
        event_id="",
        event_type=ABSENCE_RECORDED,
        body_hash="",
        category=item.category,
        subject=item.subject,
        body=item.body,
        audience=Audience.model_construct(children=item.child_ids),
        created_at=item.created_at,
    )
    delivery = Delivery(
        id="probe",
        tenant_id="",
        message_id=item.message_id,
        recipient_id="",
        recipient_role=Role.guardian,
        channel="inapp",
        language=item.language or DEFAULT_LANGUAGE,
        context=item.context,
        created_at=item.created_at,
        updated_at=item.created_at,
    )
    return message, delivery


def _query_error(field: str, message: str, kind: str) -> dict[str, Any]:
    return {"loc": ["query", field], "message": message, "type": kind}


def _inbox_query(request: web.Request) -> tuple[int, datetime | None, str | None]:
    """``limit`` (1..MAX_INBOX_LIMIT), ``before`` (ISO 8601 with offset) and ``before_id``
    (the last message id of the previous page) from the query."""
    errors: list[dict[str, Any]] = []
    limit = DEFAULT_INBOX_LIMIT
    raw_limit = request.query.get("limit")
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_INBOX_LIMIT:
            errors.append(
                _query_error("limit", f"an integer from 1 to {MAX_INBOX_LIMIT}", "int_range")
            )
    before: datetime | None = None
    raw_before = request.query.get("before")
    if raw_before is not None:
        try:
            before = before_time(raw_before)
        except ValueError:
            message = "an ISO 8601 date-time with a time zone offset"
            errors.append(_query_error("before", message, "datetime_parsing"))
    before_id = page_after_id(request.query, errors)
    if errors:
        raise ValidationFailed("the query is not valid", errors=errors)
    return limit, before, before_id


async def get_inbox(request: web.Request) -> web.Response:
    """The guardian's in-app messages, newest first; page with ``before`` and ``before_id``
    (the ``next_before`` and ``next_before_id`` of the previous page)."""
    ctx = request.app[CTX]
    tenant_id, guardian_id = await authenticate_guardian(request)
    limit, before, before_id = _inbox_query(request)
    items = await _store(ctx).list_inbox(
        tenant_id, guardian_id, limit=limit, before=before, before_id=before_id
    )
    # a full page may have more: the client passes both next_ fields back
    full = len(items) == limit and bool(items)
    # Items about a child whose access was withdrawn (a block, ...) are left out; the
    # cursor still follows the store's page, so paging goes on past them.
    visible = await visible_items(_store(ctx), tenant_id, guardian_id, items, ctx.clock.now())
    last = items[-1] if full else None
    return respond_json(
        InboxPage(
            items=[await _with_files(ctx, tenant_id, _entry(i, ctx.renderer)) for i in visible],
            next_before=last.created_at if last else None,
            next_before_id=last.message_id if last else None,
        )
    )


async def get_inbox_item(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant_id, guardian_id = await authenticate_guardian(request)
    item = await visible_item(
        _store(ctx), tenant_id, guardian_id, request.match_info["message_id"], ctx.clock.now()
    )
    if item is None:
        raise NotFound("message not found")
    return respond_json(await _with_files(ctx, tenant_id, _entry(item, ctx.renderer)))


async def _with_files(ctx: AppContext, tenant_id: str, entry: InboxEntry) -> InboxMessage:
    """An inbox message with its attachments and where the app downloads them."""
    message_id = entry.message_id
    files = (
        [] if ctx.attachments is None else await ctx.attachments.for_message(tenant_id, message_id)
    )
    base = f"/v1/me/inbox/{message_id}/files/"
    attachments = [attachment_view(a, base + a.id) for a in files]
    return InboxMessage(**dict(entry), attachments=attachments)


async def post_inbox_read(request: web.Request) -> web.Response:
    """Mark an inbox message read (the first read is kept): 200 ``{"read": true}``."""
    ctx = request.app[CTX]
    tenant_id, guardian_id = await authenticate_guardian(request)
    message_id = request.match_info["message_id"]
    # Only what the inbox shows can be marked from the app.
    if await visible_item(_store(ctx), tenant_id, guardian_id, message_id, ctx.clock.now()) is None:
        raise NotFound("message not found")
    if not await record_read(
        _store(ctx), tenant_id, guardian_id, message_id, ctx.clock.now(), via="inapp"
    ):
        raise NotFound("message not found")
    return respond_json(ReadAck(read=True))


async def get_preferences(request: web.Request) -> web.Response:
    """The guardian's preferences; defaults (empty) when none are stored."""
    ctx = request.app[CTX]
    tenant_id, guardian_id = await authenticate_guardian(request)
    prefs = await _store(ctx).get_preferences(tenant_id, guardian_id) or Preferences()
    return respond_json(prefs)


async def put_preferences(request: web.Request) -> web.Response:
    """Replace the guardian's preferences; absence/emergency cannot be switched off (422)."""
    ctx = request.app[CTX]
    tenant_id, guardian_id = await authenticate_guardian(request)
    prefs = await read_model(request, Preferences, ctx.settings.max_body_bytes)
    errors = preference_errors(prefs, [])
    if errors:
        raise ValidationFailed("the body is not valid", errors=errors)
    await _store(ctx).set_preferences(tenant_id, guardian_id, prefs)
    return respond_json(prefs)


async def get_devices(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant_id, guardian_id = await authenticate_guardian(request)
    devices = await _store(ctx).list_devices(tenant_id, guardian_id)
    return respond_json(DeviceList(devices=devices))


async def put_device(request: web.Request) -> web.Response:
    """Register or update a device; 200 with the stored device."""
    ctx = request.app[CTX]
    tenant_id, guardian_id = await authenticate_guardian(request)
    device_id = request.match_info["device_id"]
    data = parse_json(await read_raw(request, ctx.settings.max_body_bytes))
    if isinstance(data, dict):  # anything else: to_model words the error
        if data.setdefault("id", device_id) != device_id:
            raise ValidationFailed(
                "the body is not valid",
                errors=[
                    {
                        "loc": ["id"],
                        "message": "must equal the device id in the path",
                        "type": "id_mismatch",
                    }
                ],
            )
        data["last_seen"] = ctx.clock.now().isoformat()
    device = to_model(Device, data)
    await _store(ctx).upsert_device(tenant_id, guardian_id, device)
    return respond_json(device)


async def delete_device(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant_id, guardian_id = await authenticate_guardian(request)
    if not await _store(ctx).remove_device(tenant_id, guardian_id, request.match_info["device_id"]):
        raise NotFound("device not found")
    return web.Response(status=204)


_MESSAGE_ID = spec.path("message_id", "Message id")
_DEVICE_ID = spec.path("device_id", "Device id", **spec.ID)
OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("GET", "/v1/me/inbox"): spec.Operation(
        tag="parent app",
        summary="The guardian's in-app messages, newest first",
        security=spec.GUARDIAN,
        params=(
            spec.query("limit", type="integer", minimum=1, maximum=200),
            spec.query(
                "before",
                "Page: the `next_before` of the previous page",
                type="string",
                format="date-time",
            ),
            BEFORE_ID,
        ),
        responses={200: spec.Response("A page of the inbox", InboxPage)},
        errors=(401, 422),
    ),
    ("GET", "/v1/me/inbox/{message_id}"): spec.Operation(
        tag="parent app",
        summary="One inbox message",
        security=spec.GUARDIAN,
        params=(_MESSAGE_ID,),
        responses={200: spec.Response("The message, with its attachments", InboxMessage)},
        errors=(401, 404),
    ),
    ("POST", "/v1/me/inbox/{message_id}/read"): spec.Operation(
        tag="parent app",
        summary="Mark a message read (the first read is kept)",
        security=spec.GUARDIAN,
        params=(_MESSAGE_ID,),
        responses={200: spec.Response("Marked read", ReadAck)},
        errors=(401, 404),
    ),
    ("GET", "/v1/me/preferences"): spec.Operation(
        tag="parent app",
        summary="The guardian's preferences",
        security=spec.GUARDIAN,
        responses={200: spec.Response("Preferences", Preferences)},
        errors=(401,),
    ),
    ("PUT", "/v1/me/preferences"): spec.Operation(
        tag="parent app",
        summary="Replace the preferences (absence/emergency cannot be switched off)",
        security=spec.GUARDIAN,
        body=spec.Body(Preferences),
        responses={200: spec.Response("Stored preferences", Preferences)},
        errors=(401, *spec.BODY_ERRORS, 422),
    ),
    ("GET", "/v1/me/devices"): spec.Operation(
        tag="parent app",
        summary="The guardian's registered devices",
        security=spec.GUARDIAN,
        responses={200: spec.Response("Devices", DeviceList)},
        errors=(401,),
    ),
    ("PUT", "/v1/me/devices/{device_id}"): spec.Operation(
        tag="parent app",
        summary="Register or update a push device (`id` may be left out)",
        security=spec.GUARDIAN,
        params=(_DEVICE_ID,),
        body=spec.Body(Device),
        responses={200: spec.Response("The stored device", Device)},
        errors=(401, *spec.BODY_ERRORS, 422),
    ),
    ("DELETE", "/v1/me/devices/{device_id}"): spec.Operation(
        tag="parent app",
        summary="Remove a device",
        security=spec.GUARDIAN,
        params=(_DEVICE_ID,),
        responses={204: spec.Response("Removed")},
        errors=(401, 404),
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/me/inbox", get_inbox)
    app.router.add_get("/v1/me/inbox/{message_id}", get_inbox_item)
    app.router.add_post("/v1/me/inbox/{message_id}/read", post_inbox_read)
    app.router.add_get("/v1/me/preferences", get_preferences)
    app.router.add_put("/v1/me/preferences", put_preferences)
    app.router.add_get("/v1/me/devices", get_devices)
    app.router.add_put("/v1/me/devices/{device_id}", put_device)
    app.router.add_delete("/v1/me/devices/{device_id}", delete_device)
