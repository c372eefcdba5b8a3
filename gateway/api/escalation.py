"""``/v1/settings/escalation``: the tenant's escalation policy (tenant API key).

``GET`` gives the policy in force: the gateway's settings with the tenant's
override laid over them. ``PUT`` stores a new override: any part of the policy
(``{"after_minutes": {"general": 120}}`` changes only that delay); ``{}`` removes
the override. Both answer with the policy in force.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from gateway.api import spec
from gateway.api.body import parse_json, read_raw, to_model
from gateway.api.context import CTX, AppContext
from gateway.api.responses import respond_json
from gateway.auth import AuthStore, authenticate_bearer
from gateway.errors import ValidationFailed
from gateway.escalation import merge_override, policy_in_force
from gateway.models import Scope
from gateway.settings import EscalationSettings
from gateway.store.ports import PolicyStore


class _Ports(AuthStore, PolicyStore, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


async def get_escalation(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.admin)
    override = await _store(ctx).get_escalation_override(tenant.id)
    policy = policy_in_force(ctx.settings.escalation, override, tenant.id)
    return respond_json(policy)


async def put_escalation(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.admin)
    override = parse_json(await read_raw(request, ctx.settings.max_body_bytes))
    if not isinstance(override, dict):
        raise ValidationFailed(
            "the body is not valid",
            errors=[{"loc": [], "message": "must be a JSON object", "type": "dict_type"}],
        )
    # Validated as the whole policy it makes, so errors name the same fields.
    policy = to_model(EscalationSettings, merge_override(ctx.settings.escalation, override))
    await _store(ctx).set_escalation_override(tenant.id, override or None)
    return respond_json(policy)


_POLICY = spec.Response(
    "The policy in force (settings with the override over them)", EscalationSettings
)
OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("GET", "/v1/settings/escalation"): spec.Operation(
        tag="settings",
        summary="The tenant's escalation policy in force",
        security=spec.tenant("admin"),
        responses={200: _POLICY},
        errors=(401,),
    ),
    ("PUT", "/v1/settings/escalation"): spec.Operation(
        tag="settings",
        summary="Override any part of the escalation policy (`{}` removes the override)",
        security=spec.tenant("admin"),
        body=spec.Body(EscalationSettings),
        responses={200: _POLICY},
        errors=(401, *spec.BODY_ERRORS, 422),
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/settings/escalation", get_escalation)
    app.router.add_put("/v1/settings/escalation", put_escalation)
