"""``/v1/keys``: a tenant's API keys — create, list, revoke — for rotation without downtime.

A key with the ``admin`` scope manages the tenant's keys. It can only hand out
scopes it has itself, so no key can make a stronger one. Only the key's sha256 is
stored; the key itself is in the 201 answer and nowhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Protocol

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from gateway.api import spec
from gateway.api.body import read_model
from gateway.api.context import CTX, AppContext
from gateway.api.responses import Instant, respond_json
from gateway.auth import (
    KEY_SCOPES,
    AuthStore,
    authenticate_bearer,
    create_api_key,
    key_expiry_problem,
)
from gateway.errors import Forbidden, NotFound, ValidationFailed
from gateway.models import ApiKey, Scope, Strict


class _Ports(AuthStore, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


class KeyCreate(Strict):
    """Body of ``POST /v1/keys``."""

    name: Annotated[str, Field(max_length=100)] = ""
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(Scope))]
    expires_at: AwareDatetime | None = None


class KeyView(BaseModel):
    """A tenant API key as the API shows it: never the key, never its hash."""

    id: str
    name: str
    scopes: list[Scope]
    created_at: Instant
    expires_at: Instant | None
    revoked_at: Instant | None
    active: bool  # neither revoked nor expired


class KeyCreated(KeyView):
    key: str  # shown this once


class KeyList(BaseModel):
    keys: list[KeyView]


def key_view(key: ApiKey, now: datetime) -> KeyView:
    """A key as the API shows it: never the key, never its hash."""
    return KeyView(
        id=key.id,
        name=key.name,
        scopes=sorted(key.scopes),
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        active=key.usable(now),
    )


async def post_key(request: web.Request) -> web.Response:
    """201 with the new key, shown this once; 403 for scopes the calling key lacks."""
    ctx = request.app[CTX]
    now = ctx.clock.now()
    tenant = await authenticate_bearer(request, _store(ctx), now, Scope.admin)
    body = await read_model(request, KeyCreate, ctx.settings.max_body_bytes)
    problem = key_expiry_problem(body.expires_at, now)
    if problem is not None:
        raise ValidationFailed(
            "the body is not valid",
            errors=[{"loc": ["expires_at"], "message": problem, "type": "expires_at"}],
        )
    granted: frozenset[Scope] = request[KEY_SCOPES]
    missing = sorted(set(body.scopes) - granted)
    if missing:
        raise Forbidden(
            "a key cannot grant scopes it lacks: " + ", ".join(s.value for s in missing)
        )
    record, api_key = await create_api_key(
        _store(ctx), tenant.id, body.scopes, now, name=body.name, expires_at=body.expires_at
    )
    return respond_json(KeyCreated(**dict(key_view(record, now)), key=api_key), status=201)


async def list_keys(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    now = ctx.clock.now()
    tenant = await authenticate_bearer(request, _store(ctx), now, Scope.admin)
    keys = await _store(ctx).list_api_keys(tenant.id)
    return respond_json(KeyList(keys=[key_view(k, now) for k in keys]))


async def delete_key(request: web.Request) -> web.Response:
    """Revoke a key: it stops working at once. 204; 404 for an unknown id."""
    ctx = request.app[CTX]
    now = ctx.clock.now()
    tenant = await authenticate_bearer(request, _store(ctx), now, Scope.admin)
    if await _store(ctx).revoke_api_key(tenant.id, request.match_info["key_id"], now) is None:
        raise NotFound("no such API key")
    return web.Response(status=204)


OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("POST", "/v1/keys"): spec.Operation(
        tag="keys",
        summary="Another API key for the tenant, with its scopes and optional expiry",
        description=(
            "The key is in the answer and nowhere else (only its hash is stored). A"
            " key can grant only scopes it has itself (403 otherwise). Rotate by"
            " creating a new key, moving the clients, and revoking the old one."
        ),
        security=spec.tenant("admin"),
        body=spec.Body(KeyCreate),
        responses={201: spec.Response("The new key, shown this once", KeyCreated)},
        errors=(401, 403, *spec.BODY_ERRORS, 422),
    ),
    ("GET", "/v1/keys"): spec.Operation(
        tag="keys",
        summary="The tenant's keys, revoked and expired ones included (never the keys)",
        security=spec.tenant("admin"),
        responses={200: spec.Response("Keys, oldest first", KeyList)},
        errors=(401, 403),
    ),
    ("DELETE", "/v1/keys/{key_id}"): spec.Operation(
        tag="keys",
        summary="Revoke a key: it is refused from now on",
        security=spec.tenant("admin"),
        params=(spec.path("key_id", "Key id (from POST or GET /v1/keys)"),),
        responses={204: spec.Response("Revoked")},
        errors=(401, 403, 404),
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/keys", post_key)
    app.router.add_get("/v1/keys", list_keys)
    app.router.add_delete("/v1/keys/{key_id}", delete_key)
