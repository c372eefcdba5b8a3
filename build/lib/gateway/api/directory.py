"""Directory routes: the platform loads units, groups, persons and relations; staff set
the manual relation flags; the platform asks for guardian tokens for the parent app.

All routes here take the tenant API key (``Authorization: Bearer bbk_...``).
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel

from gateway.api.body import read_model
from gateway.api.context import CTX
from gateway.api.guardian import mandatory_channel_errors
from gateway.auth import authenticate_bearer
from gateway.constants import ADULT_AGE, DEFAULT_TIME_ZONE, SCOPE_PROTECTED
from gateway.errors import Forbidden, NotFound, ValidationFailed
from gateway.models import DirectoryBatch, DirectoryDeletion, FlagChange, Person, Protection, Role
from gateway.tokens import issue_guardian_token

FLAGS = frozenset({"information_granted", "blocked"})


class GuardianToken(BaseModel):
    """Response of ``POST /v1/guardians/{guardian_id}/tokens``."""

    token: str
    expires_at: datetime


async def post_directory(request: web.Request) -> web.Response:
    """Upsert a batch, all or nothing: 200 ``{"applied": counts}``, or 422 naming row and field."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, ctx.store)
    batch = await read_model(request, DirectoryBatch, ctx.settings.max_body_bytes)
    errors = [
        err
        for guardian_id, prefs in batch.preferences.items()
        for err in mandatory_channel_errors(prefs, ["preferences", guardian_id])
    ]
    if errors:
        raise ValidationFailed("the body is not valid", errors=errors)
    counts = await ctx.store.apply_directory(tenant.id, batch)
    return web.json_response({"applied": counts})


async def post_directory_delete(request: web.Request) -> web.Response:
    """Delete rows by id, all or nothing: 200 ``{"deleted": counts}``; unknown ids are 422."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, ctx.store)
    deletion = await read_model(request, DirectoryDeletion, ctx.settings.max_body_bytes)
    counts = await ctx.store.delete_directory(tenant.id, deletion)
    return web.json_response({"deleted": counts})


async def put_relation_flag(request: web.Request) -> web.Response:
    """Set ``information_granted`` or ``blocked`` with a reason: the only way flags change."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, ctx.store)
    flag = request.match_info["flag"]
    if flag not in FLAGS:
        raise NotFound("unknown flag; use information_granted or blocked")
    change = await read_model(request, FlagChange, ctx.settings.max_body_bytes)
    flags = await ctx.store.set_relation_flag(
        tenant.id,
        request.match_info["child_id"],
        request.match_info["guardian_id"],
        flag,
        change.value,
        change.reason,
        change.actor,
        ctx.clock.now(),
    )
    return web.json_response(flags.model_dump(mode="json"))


async def get_person(request: web.Request) -> web.Response:
    """One person record of this tenant (404 for another tenant's)."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, ctx.store)
    person = await ctx.store.get_person(tenant.id, request.match_info["person_id"])
    if person is None:
        raise NotFound("person not found")
    # A protected address (rule 4): the record is shown only to keys with that scope,
    # as in the message status, where such persons appear as pseudonyms.
    if person.protection is not Protection.none and SCOPE_PROTECTED not in (
        await ctx.store.get_tenant_scopes(tenant.id)
    ):
        raise Forbidden("this person has a protected address; the key needs the protected scope")
    return web.json_response(person.model_dump(mode="json"))


def _age(birth_date: date, now: datetime) -> int:
    today = now.astimezone(ZoneInfo(DEFAULT_TIME_ZONE)).date()
    before_birthday = (today.month, today.day) < (birth_date.month, birth_date.day)
    return today.year - birth_date.year - before_birthday


def may_use_parent_app(person: Person, now: datetime) -> bool:
    """Guardians, adult-education learners, and pupils of 18 or more use the parent app."""
    if person.role in (Role.guardian, Role.learner):
        return True
    return (
        person.role is Role.child
        and person.birth_date is not None
        and _age(person.birth_date, now) >= ADULT_AGE
    )


async def post_guardian_token(request: web.Request) -> web.Response:
    """A short-lived token for the parent app: 201 ``{"token", "expires_at"}``.

    404 if the person is not in this tenant; 403 if they may not use the app
    (staff, children under 18).
    """
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, ctx.store)
    person = await ctx.store.get_person(tenant.id, request.match_info["guardian_id"])
    if person is None:
        raise NotFound("person not found")
    now = ctx.clock.now()
    if not may_use_parent_app(person, now):
        raise Forbidden("this person may not use the parent app")
    token, expires_at = issue_guardian_token(
        ctx.secret, tenant.id, person.id, now, ctx.settings.guardian_token_ttl
    )
    return web.json_response({"token": token, "expires_at": expires_at.isoformat()}, status=201)


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/directory", post_directory)
    app.router.add_post("/v1/directory/delete", post_directory_delete)
    app.router.add_put("/v1/relations/{child_id}/{guardian_id}/flags/{flag}", put_relation_flag)
    app.router.add_get("/v1/persons/{person_id}", get_person)
    app.router.add_post("/v1/guardians/{guardian_id}/tokens", post_guardian_token)
