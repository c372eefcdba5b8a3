"""Webhook endpoints and the webhook outbox, for the platform (tenant API key).

An endpoint's ``whsec_`` secret is shown once, when it is created or rotated.
After a rotation the previous secret keeps signing too (a second ``v1,``
signature) for ``webhooks.rotation_grace`` seconds, so the platform can switch
without losing a message. ``GET /v1/webhooks/messages?status=failed`` lists
what could not be delivered; ``POST /v1/webhooks/messages/{id}/replay`` sends a
failed one again with the same ``webhook-id``.
"""

from __future__ import annotations

import ipaddress
import secrets
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from yarl import URL

from gateway.addresses import (
    AddressRefused,
    check_host,
    check_literal,
    is_local_name,
    literal_address,
    parse_networks,
)
from gateway.api import spec
from gateway.api.body import read_model
from gateway.api.context import CTX, AppContext
from gateway.api.paging import BEFORE_ID, before_time, page_after_id
from gateway.api.responses import Instant, respond_json
from gateway.auth import AuthStore, authenticate_bearer, new_webhook_secret
from gateway.constants import WEBHOOK_EVENT_TYPES
from gateway.errors import Conflict, NotFound, ValidationFailed
from gateway.models import (
    Scope,
    Strict,
    Tenant,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    WebhookStatus,
)
from gateway.settings import Settings
from gateway.store.ports import WebhookEndpoints, WebhookOutbox

MAX_ENDPOINTS = 20
MAX_MESSAGES_LIMIT = 500
DEFAULT_MESSAGES_LIMIT = 100
DISABLED_BY_API = "disabled"

WebhookEventType = Literal[
    "delivery.updated",
    "message.read",
    "message.reached",
    "reply.received",
    "absence.explained",
    "absence.unrouted",
]


class _Ports(AuthStore, WebhookEndpoints, WebhookOutbox, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


def _unique(values: list[WebhookEventType] | None) -> list[WebhookEventType] | None:
    return None if values is None else list(dict.fromkeys(values))


class WebhookEndpointCreate(Strict):
    """Body of ``POST /v1/webhooks/endpoints``. Without ``event_types``: every event type."""

    url: str = Field(min_length=1, max_length=2000)
    event_types: list[WebhookEventType] | None = Field(default=None, min_length=1)
    description: str = Field(default="", max_length=500)

    _dedupe = field_validator("event_types")(_unique)


def _patch_schema(schema: dict[str, Any]) -> None:
    """The PATCH rules in JSON Schema: at least one field, and none of them null."""
    schema["minProperties"] = 1
    for prop in schema.get("properties", {}).values():
        options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            prop.update(options[0])
        elif options:
            prop["anyOf"] = options
        prop.pop("default", None)


class WebhookEndpointPatch(Strict):
    """Body of ``PATCH /v1/webhooks/endpoints/{id}``: the fields to change."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra=_patch_schema
    )

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    event_types: list[WebhookEventType] | None = Field(default=None, min_length=1)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None

    _dedupe = field_validator("event_types")(_unique)

    @model_validator(mode="after")
    def _something(self) -> WebhookEndpointPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self


class WebhookEndpointView(BaseModel):
    """An endpoint as the API shows it: never its secret."""

    id: str
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class WebhookEndpointWithSecret(WebhookEndpointView):
    """An endpoint just created or rotated: its secret, shown this once."""

    secret: str


class WebhookEndpointList(BaseModel):
    endpoints: list[WebhookEndpointView]


class WebhookMessageView(BaseModel):
    """One outbox message. ``id`` is its ``webhook-id``; the body is not shown."""

    id: str
    endpoint_id: str
    event_type: str
    status: WebhookStatus
    attempts: int
    next_attempt_at: datetime | None
    reason: str | None
    last_status_code: int | None
    created_at: datetime
    updated_at: datetime


class WebhookMessageDetail(WebhookMessageView):
    history: list[WebhookAttempt]


class WebhookMessageList(BaseModel):
    messages: list[WebhookMessageView]
    next_before: Instant | None
    next_before_id: str | None


# --------------------------------------------------------------------------- validation


_LOOPBACK = frozenset({"localhost"})


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_errors(value: str, settings: Settings, loc: list[str | int]) -> list[dict[str, Any]]:
    """What is wrong with an endpoint URL: http(s) with a host, no credentials or fragment;
    https in production; plain http only to this machine, and only in development."""

    def error(message: str, kind: str) -> list[dict[str, Any]]:
        return [{"loc": loc, "message": message, "type": kind}]

    try:
        url = URL(value)
    except (ValueError, TypeError):
        return error("not a URL", "url_parsing")
    if url.scheme not in ("http", "https") or not url.host:
        return error("must be an absolute http(s) URL with a host", "url_scheme")
    if url.user or url.password:
        return error("credentials in the URL are not allowed", "url_credentials")
    if url.fragment:
        return error("a fragment is not allowed", "url_fragment")
    if url.scheme == "http":
        if settings.environment == "production":
            return error("https is required in production", "url_https_required")
        if not _is_loopback(url.host):
            return error("plain http is allowed only to 127.0.0.1 in development", "url_https")
    if settings.environment == "production":
        allowed = parse_networks(settings.webhooks.allowed_networks)
        try:
            check_literal(url.host, allowed)
        except AddressRefused as exc:
            return error(f"{exc} (see webhooks.allowed_networks)", "url_private")
        if literal_address(url.host) is None and is_local_name(url.host) and not allowed:
            return error(
                "a local name is not public (see webhooks.allowed_networks)", "url_private"
            )
    return []


async def _check_url(value: str, settings: Settings) -> None:
    """The URL's form, then in production its host resolved now: every address public
    (or allowed). Each delivery checks again, since DNS can change."""
    errors = url_errors(value, settings, ["url"])
    if not errors and settings.environment == "production":
        url = URL(value)
        allowed = parse_networks(settings.webhooks.allowed_networks)
        try:
            await check_host(url.host or "", url.port or 443, allowed)
        except AddressRefused as exc:
            errors = [
                {
                    "loc": ["url"],
                    "message": f"{exc} (see webhooks.allowed_networks)",
                    "type": "url_private",
                }
            ]
    if errors:
        raise ValidationFailed("the body is not valid", errors=errors)


# --------------------------------------------------------------------------- views


def endpoint_view(endpoint: WebhookEndpoint) -> WebhookEndpointView:
    return WebhookEndpointView.model_validate(endpoint, from_attributes=True)


def _with_secret(endpoint: WebhookEndpoint) -> WebhookEndpointWithSecret:
    return WebhookEndpointWithSecret.model_validate(endpoint, from_attributes=True)


def message_view(message: WebhookMessage) -> WebhookMessageView:
    return WebhookMessageView.model_validate(message, from_attributes=True)


async def _endpoint(request: web.Request, tenant: Tenant) -> WebhookEndpoint:
    endpoint = await _store(request.app[CTX]).get_webhook_endpoint(
        tenant.id, request.match_info["id"]
    )
    if endpoint is None:
        raise NotFound("no such webhook endpoint")
    return endpoint


# --------------------------------------------------------------------------- endpoints


async def create_endpoint(request: web.Request) -> web.Response:
    """Create an endpoint: 201 with its secret, shown this once."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.webhooks)
    body = await read_model(request, WebhookEndpointCreate, ctx.settings.max_body_bytes)
    await _check_url(body.url, ctx.settings)
    if len(await _store(ctx).list_webhook_endpoints(tenant.id)) >= MAX_ENDPOINTS:
        raise Conflict(f"a tenant may have at most {MAX_ENDPOINTS} webhook endpoints")
    now = ctx.clock.now()
    endpoint = WebhookEndpoint(
        id="ep_" + secrets.token_hex(12),
        tenant_id=tenant.id,
        url=body.url,
        event_types=list(body.event_types or WEBHOOK_EVENT_TYPES),
        description=body.description,
        secret=new_webhook_secret(),
        created_at=now,
        updated_at=now,
    )
    await _store(ctx).create_webhook_endpoint(endpoint)
    return respond_json(_with_secret(endpoint), status=201)


async def list_endpoints(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.webhooks)
    endpoints = await _store(ctx).list_webhook_endpoints(tenant.id)
    return respond_json(WebhookEndpointList(endpoints=[endpoint_view(e) for e in endpoints]))


async def get_endpoint(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.webhooks)
    return respond_json(endpoint_view(await _endpoint(request, tenant)))


async def patch_endpoint(request: web.Request) -> web.Response:
    """Change url, event_types, description or enabled. ``enabled: true`` re-enables an
    endpoint disabled by a 410 or by this call; messages failed meanwhile stay failed
    (replay them one by one)."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.webhooks)
    body = await read_model(request, WebhookEndpointPatch, ctx.settings.max_body_bytes)
    endpoint = await _endpoint(request, tenant)
    changes: dict[str, Any] = {"updated_at": ctx.clock.now()}
    if body.url is not None:
        await _check_url(body.url, ctx.settings)
        changes["url"] = body.url
    if body.event_types is not None:
        changes["event_types"] = list(body.event_types)
    if body.description is not None:
        changes["description"] = body.description
    if body.enabled is not None and body.enabled != endpoint.enabled:
        changes["enabled"] = body.enabled
        changes["disabled_reason"] = None if body.enabled else DISABLED_BY_API
    updated = endpoint.model_copy(update=changes)
    if not await _store(ctx).update_webhook_endpoint(updated):
        raise NotFound("no such webhook endpoint")
    return respond_json(endpoint_view(updated))


async def delete_endpoint(request: web.Request) -> web.Response:
    """Delete an endpoint and its outbox messages."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.webhooks)
    if not await _store(ctx).delete_webhook_endpoint(tenant.id, request.match_info["id"]):
        raise NotFound("no such webhook endpoint")
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret, shown once; the old one also signs during the grace period."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.webhooks)
    endpoint = await _endpoint(request, tenant)
    now = ctx.clock.now()
    grace = timedelta(seconds=ctx.settings.webhooks.rotation_grace)
    rotated = endpoint.model_copy(
        update={
            "secret": new_webhook_secret(),
            "previous_secret": endpoint.secret if grace else None,
            "previous_secret_until": now + grace if grace else None,
            "updated_at": now,
        }
    )
    if not await _store(ctx).update_webhook_endpoint(rotated):
        raise NotFound("no such webhook endpoint")
    return respond_json(_with_secret(rotated))


# --------------------------------------------------------------------------- outbox


def _query_errors(query: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    parsed: dict[str, Any] = {"limit": DEFAULT_MESSAGES_LIMIT}
    errors: list[dict[str, Any]] = []
    if "status" in query:
        try:
            parsed["status"] = WebhookStatus(query["status"])
        except ValueError:
            errors.append(
                {
                    "loc": ["query", "status"],
                    "message": "one of pending, delivered, failed",
                    "type": "enum",
                }
            )
    if "limit" in query:
        raw = query["limit"]
        # isdecimal+isascii: "²".isdigit() is True but int("²") fails.
        if not (raw.isascii() and raw.isdecimal()) or not 1 <= int(raw) <= MAX_MESSAGES_LIMIT:
            errors.append(
                {
                    "loc": ["query", "limit"],
                    "message": f"an integer from 1 to {MAX_MESSAGES_LIMIT}",
                    "type": "int_range",
                }
            )
        else:
            parsed["limit"] = int(raw)
    if "before" in query:
        try:
            parsed["before"] = before_time(query["before"])
        except ValueError:
            errors.append(
                {
                    "loc": ["query", "before"],
                    "message": "an ISO 8601 date-time with a time zone",
                    "type": "datetime_parsing",
                }
            )
    if "endpoint_id" in query:
        parsed["endpoint_id"] = query["endpoint_id"]
    before_id = page_after_id(query, errors)
    if before_id is not None:
        parsed["before_id"] = before_id
    return parsed, errors


async def list_messages(request: web.Request) -> web.Response:
    """The outbox, newest first; ``?status=failed`` lists what needs attention. Pages by
    (created_at, id): pass ``next_before`` and ``next_before_id`` back (api/paging.py)."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.webhooks)
    params, errors = _query_errors(request.query)
    if errors:
        raise ValidationFailed("the query is not valid", errors=errors)
    messages = await _store(ctx).list_webhook_messages(tenant.id, **params)
    last = messages[-1] if len(messages) == params["limit"] and messages else None
    return respond_json(
        WebhookMessageList(
            messages=[message_view(m) for m in messages],
            next_before=last.created_at if last else None,
            next_before_id=last.id if last else None,
        )
    )


async def _message(request: web.Request, tenant: Tenant) -> WebhookMessage:
    message = await _store(request.app[CTX]).get_webhook_message(request.match_info["id"])
    if message is None or message.tenant_id != tenant.id:
        raise NotFound("no such webhook message")
    return message


async def get_message(request: web.Request) -> web.Response:
    """One outbox message with every attempt (status code, time, duration)."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.webhooks)
    message = await _message(request, tenant)
    history = await _store(ctx).webhook_attempts(message.id)
    return respond_json(WebhookMessageDetail(**dict(message_view(message)), history=history))


async def replay_message(request: web.Request) -> web.Response:
    """Send a failed message again: pending, due now, the same ``webhook-id``."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.webhooks)
    message = await _message(request, tenant)
    endpoint = await _store(ctx).get_webhook_endpoint(tenant.id, message.endpoint_id)
    if endpoint is None or not endpoint.enabled:
        raise Conflict("the endpoint is disabled; enable it before replaying")
    replayed = await _store(ctx).replay_webhook_message(tenant.id, message.id, ctx.clock.now())
    if replayed is None:
        raise NotFound("no such webhook message")
    ctx.work_available.set()
    return respond_json(message_view(replayed))


_ENDPOINT_ID = spec.path("id", "Endpoint id")
_MESSAGE_ID = spec.path("id", "Webhook message id (the `webhook-id` header)")
OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("POST", "/v1/webhooks/endpoints"): spec.Operation(
        tag="webhooks",
        summary="Add a webhook endpoint; its `whsec_` secret is shown this once",
        description=(
            "Events: `delivery.updated`, `message.read`, `message.reached`,"
            " `reply.received`, `absence.explained`, `absence.unrouted` (all when"
            " `event_types` is left out). Each is POSTed as `{type, timestamp, data}` with"
            " Standard Webhooks headers `webhook-id` (stable across retries),"
            " `webhook-timestamp` and `webhook-signature`. https is required in production."
        ),
        security=spec.tenant("webhooks"),
        body=spec.Body(WebhookEndpointCreate),
        responses={201: spec.Response("Created, with its secret", WebhookEndpointWithSecret)},
        errors=(401, 409, *spec.BODY_ERRORS, 422),
    ),
    ("GET", "/v1/webhooks/endpoints"): spec.Operation(
        tag="webhooks",
        summary="The tenant's webhook endpoints (no secrets)",
        security=spec.tenant("webhooks"),
        responses={200: spec.Response("Endpoints", WebhookEndpointList)},
        errors=(401,),
    ),
    ("GET", "/v1/webhooks/endpoints/{id}"): spec.Operation(
        tag="webhooks",
        summary="One webhook endpoint (no secret)",
        security=spec.tenant("webhooks"),
        params=(_ENDPOINT_ID,),
        responses={200: spec.Response("Endpoint", WebhookEndpointView)},
        errors=(401, 404),
    ),
    ("PATCH", "/v1/webhooks/endpoints/{id}"): spec.Operation(
        tag="webhooks",
        summary="Change url, event_types, description or enabled (re-enable)",
        security=spec.tenant("webhooks"),
        params=(_ENDPOINT_ID,),
        body=spec.Body(WebhookEndpointPatch),
        responses={200: spec.Response("Changed", WebhookEndpointView)},
        errors=(401, 404, *spec.BODY_ERRORS, 422),
    ),
    ("DELETE", "/v1/webhooks/endpoints/{id}"): spec.Operation(
        tag="webhooks",
        summary="Delete an endpoint and its outbox messages",
        security=spec.tenant("webhooks"),
        params=(_ENDPOINT_ID,),
        responses={204: spec.Response("Deleted")},
        errors=(401, 404),
    ),
    ("POST", "/v1/webhooks/endpoints/{id}/rotate-secret"): spec.Operation(
        tag="webhooks",
        summary="A new secret, shown once; the old one also signs for a grace period",
        security=spec.tenant("webhooks"),
        params=(_ENDPOINT_ID,),
        responses={200: spec.Response("Rotated, with the new secret", WebhookEndpointWithSecret)},
        errors=(401, 404),
    ),
    ("GET", "/v1/webhooks/messages"): spec.Operation(
        tag="webhooks",
        summary="The webhook outbox, newest first (`?status=failed` for attention)",
        security=spec.tenant("webhooks"),
        params=(
            spec.query("status", type="string", enum=["pending", "delivered", "failed"]),
            spec.query("endpoint_id", type="string"),
            spec.query("limit", type="integer", minimum=1, maximum=500),
            spec.query(
                "before",
                "Page: the `next_before` of the previous page",
                type="string",
                format="date-time",
            ),
            BEFORE_ID,
        ),
        responses={200: spec.Response("A page of the outbox", WebhookMessageList)},
        errors=(401, 422),
    ),
    ("GET", "/v1/webhooks/messages/{id}"): spec.Operation(
        tag="webhooks",
        summary="One webhook message with every attempt",
        security=spec.tenant("webhooks"),
        params=(_MESSAGE_ID,),
        responses={200: spec.Response("Message", WebhookMessageDetail)},
        errors=(401, 404),
    ),
    ("POST", "/v1/webhooks/messages/{id}/replay"): spec.Operation(
        tag="webhooks",
        summary="Send a failed message again, now, with the same webhook-id",
        security=spec.tenant("webhooks"),
        params=(_MESSAGE_ID,),
        responses={200: spec.Response("Pending again", WebhookMessageView)},
        errors=(401, 404, 409),
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/webhooks/endpoints", create_endpoint)
    app.router.add_get("/v1/webhooks/endpoints", list_endpoints)
    app.router.add_get("/v1/webhooks/endpoints/{id}", get_endpoint)
    app.router.add_patch("/v1/webhooks/endpoints/{id}", patch_endpoint)
    app.router.add_delete("/v1/webhooks/endpoints/{id}", delete_endpoint)
    app.router.add_post("/v1/webhooks/endpoints/{id}/rotate-secret", rotate_secret)
    app.router.add_get("/v1/webhooks/messages", list_messages)
    app.router.add_get("/v1/webhooks/messages/{id}", get_message)
    app.router.add_post("/v1/webhooks/messages/{id}/replay", replay_message)
