"""Directory routes: the platform loads units, groups, persons and relations; staff set
the manual relation flags; the platform asks for guardian tokens for the parent app.

All routes here take a tenant API key with the ``directory`` scope.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, Field

from gateway.api import spec
from gateway.api.body import read_model
from gateway.api.body_slices import big_parts, free_in_pieces, read_big_model
from gateway.api.context import CTX, AppContext
from gateway.api.guardian import mandatory_channel_errors
from gateway.api.limits import body_limit
from gateway.api.responses import Instant, respond_json
from gateway.auth import AuthStore, authenticate_bearer, key_has
from gateway.constants import ADULT_AGE, DEFAULT_TIME_ZONE
from gateway.errors import Forbidden, NotFound, ValidationFailed
from gateway.gcpause import gc_paused
from gateway.models import (
    Audience,
    DirectoryBatch,
    DirectoryDeletion,
    FlagChange,
    Person,
    Protection,
    ProtectionChange,
    RelationFlags,
    Role,
    Scope,
    birth_date_problem,
)
from gateway.protection import RANK, ProtectionHistoryEntry
from gateway.resolver import blocked_everywhere
from gateway.store.ports import AudienceReader, DirectoryStore
from gateway.tokens import issue_guardian_token

FLAGS = frozenset({"information_granted", "blocked"})


class _Ports(AuthStore, AudienceReader, DirectoryStore, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


class GuardianToken(BaseModel):
    """Response of ``POST /v1/guardians/{guardian_id}/tokens``."""

    token: str
    expires_at: Instant


class DirectoryApplied(BaseModel):
    applied: dict[str, int]


class DirectoryDeleted(BaseModel):
    deleted: dict[str, int]


class ProtectionHistoryView(BaseModel):
    level: Protection
    previous: Protection
    reason: str
    actor: str  # "import" when a directory import raised it
    at: Instant


class ProtectionView(BaseModel):
    """A person's protection level and every change of it."""

    person_id: str
    protection: Protection
    history: list[ProtectionHistoryView]


class FlagHistoryView(BaseModel):
    flag: str = Field(description="`information_granted` or `blocked`")
    value: bool
    reason: str
    actor: str
    at: Instant


class RelationFlagsView(BaseModel):
    """A relation's manual flags now and every change of them (who, when, why)."""

    child_id: str
    guardian_id: str
    relation: bool = Field(
        description="Whether the relation is in the directory now (flags outlive its deletion)"
    )
    flags: RelationFlags | None = Field(description="The flags now; null without a relation")
    history: list[FlagHistoryView] = Field(description="Every change, oldest first")


def birth_date_errors(batch: DirectoryBatch, now: datetime) -> list[dict[str, Any]]:
    """A row error for each impossible birth date (:func:`birth_date_problem`), by the
    date in Norway."""
    today = now.astimezone(ZoneInfo(DEFAULT_TIME_ZONE)).date()
    return [
        {"loc": ["persons", i, "birth_date"], "message": problem, "type": "implausible_date"}
        for i, person in enumerate(batch.persons)
        if person.birth_date is not None
        and (problem := birth_date_problem(person.birth_date, today)) is not None
    ]


async def post_directory(request: web.Request) -> web.Response:
    """Upsert a batch validated all or nothing: 200 ``{"applied": counts}``, or 422 naming
    row and field (nothing written). Written in chunks: see store/directory_apply.py."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.directory)
    # Millions of objects for a big batch: full GC passes would stall the event loop.
    with gc_paused():
        batch = await read_big_model(request, DirectoryBatch, body_limit(request))
        errors = [
            err
            for guardian_id, prefs in batch.preferences.items()
            for err in mandatory_channel_errors(prefs, ["preferences", guardian_id])
        ]
        errors.extend(birth_date_errors(batch, ctx.clock.now()))
        if errors:
            raise ValidationFailed("the body is not valid", errors=errors)
        try:
            counts = await _store(ctx).apply_directory(tenant.id, batch, ctx.clock.now())
        finally:
            # Freeing it at once would hold the GIL as long as a full GC pass.
            await asyncio.to_thread(free_in_pieces, big_parts(batch))
    return respond_json(DirectoryApplied(applied=counts))


async def post_directory_delete(request: web.Request) -> web.Response:
    """Delete rows by id, all or nothing: 200 ``{"deleted": counts}``; unknown ids are 422."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.directory)
    deletion = await read_model(request, DirectoryDeletion, ctx.settings.max_body_bytes)
    counts = await _store(ctx).delete_directory(tenant.id, deletion)
    return respond_json(DirectoryDeleted(deleted=counts))


async def put_relation_flag(request: web.Request) -> web.Response:
    """Set ``information_granted`` or ``blocked`` with a reason: the only way flags change."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.directory)
    flag = request.match_info["flag"]
    if flag not in FLAGS:
        raise NotFound("unknown flag; use information_granted or blocked")
    change = await read_model(request, FlagChange, ctx.settings.max_body_bytes)
    flags = await _store(ctx).set_relation_flag(
        tenant.id,
        request.match_info["child_id"],
        request.match_info["guardian_id"],
        flag,
        change.value,
        change.reason,
        change.actor,
        ctx.clock.now(),
    )
    return respond_json(flags)


async def get_relation_flags(request: web.Request) -> web.Response:
    """A relation's manual flags and their history, for the privacy officer's audit: who
    blocked or granted whom, when and why (a reason may cite a court order). A protected
    child or guardian: only with the ``protected`` scope, as ``GET /v1/persons/{id}``."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.directory)
    child_id, guardian_id = request.match_info["child_id"], request.match_info["guardian_id"]
    persons = [await _store(ctx).get_person(tenant.id, pid) for pid in (child_id, guardian_id)]
    history = await _store(ctx).flag_history(tenant.id, child_id, guardian_id)
    if None in persons and not history:
        raise NotFound("no such relation, and no flag was ever set on it")
    # A person deleted since may have been protected: their flags' reasons (a court
    # order) are then for the protected scope too.
    protected = any(p is None or p.protection is not Protection.none for p in persons)
    if protected and not key_has(request, Scope.protected):
        raise Forbidden(
            "a protected or deleted person is part of this relation; the key needs the"
            " protected scope"
        )
    snapshot = await _store(ctx).load_audience(tenant.id, Audience(children=[child_id]))
    relation = next(
        (r for r in snapshot.relations if (r.child_id, r.guardian_id) == (child_id, guardian_id)),
        None,
    )
    return respond_json(
        RelationFlagsView(
            child_id=child_id,
            guardian_id=guardian_id,
            relation=relation is not None,
            flags=relation.flags if relation is not None else None,
            history=[
                FlagHistoryView(flag=h.flag, value=h.value, reason=h.reason, actor=h.actor, at=h.at)
                for h in history
            ],
        )
    )


def require_scope_for(request: web.Request, person: Person) -> None:
    """A protected address (rule 4): the person's record, history and parent-app token are
    only for keys with the ``protected`` scope, as in the message status, where such
    persons appear as pseudonyms."""
    if person.protection is not Protection.none and not key_has(request, Scope.protected):
        raise Forbidden("this person has a protected address; the key needs the protected scope")


async def get_person(request: web.Request) -> web.Response:
    """One person record of this tenant (404 for another tenant's)."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.directory)
    person = await _store(ctx).get_person(tenant.id, request.match_info["person_id"])
    if person is None:
        raise NotFound("person not found")
    require_scope_for(request, person)
    return respond_json(person)


def _protection_view(
    person_id: str, level: Protection, history: list[ProtectionHistoryEntry]
) -> ProtectionView:
    return ProtectionView(
        person_id=person_id,
        protection=level,
        history=[
            ProtectionHistoryView(
                level=h.level, previous=h.previous, reason=h.reason, actor=h.actor, at=h.at
            )
            for h in history
        ],
    )


async def put_person_protection(request: web.Request) -> web.Response:
    """Set a person's protection level with a reason and an actor; the history is kept.

    An import can only raise protection; this call is the only way to lower it, and
    lowering needs a key with the ``protected`` scope (a key that may not see a
    protected person may not expose one either)."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.directory)
    person_id = request.match_info["person_id"]
    change = await read_model(request, ProtectionChange, ctx.settings.max_body_bytes)
    person = await _store(ctx).get_person(tenant.id, person_id)
    if person is None:
        raise NotFound("person not found")
    lowering = RANK[change.level] < RANK[person.protection]
    if lowering and not key_has(request, Scope.protected):
        raise Forbidden("lowering protection needs a key with the protected scope")
    await _store(ctx).set_protection(
        tenant.id, person_id, change.level, change.reason, change.actor, ctx.clock.now()
    )
    # The history (reasons: court orders, ...) only for keys that may see protected persons.
    full = change.level is Protection.none or key_has(request, Scope.protected)
    history = await _store(ctx).protection_history(tenant.id, person_id) if full else []
    return respond_json(_protection_view(person_id, change.level, history))


async def get_person_protection(request: web.Request) -> web.Response:
    """A person's protection level and every change of it (who, when, why); for a
    protected person only with the ``protected`` scope (as ``GET /v1/persons/{id}``)."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.directory)
    person_id = request.match_info["person_id"]
    person = await _store(ctx).get_person(tenant.id, person_id)
    if person is None:
        raise NotFound("person not found")
    require_scope_for(request, person)
    history = await _store(ctx).protection_history(tenant.id, person_id)
    return respond_json(_protection_view(person_id, person.protection, history))


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
    (staff, children under 18, a guardian blocked on every relation), or have a
    protected address and the key lacks the ``protected`` scope.
    """
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.directory)
    person = await _store(ctx).get_person(tenant.id, request.match_info["guardian_id"])
    if person is None:
        raise NotFound("person not found")
    # The token opens the person's inbox and devices: their children, schools, texts.
    require_scope_for(request, person)
    now = ctx.clock.now()
    if not may_use_parent_app(person, now):
        raise Forbidden("this person may not use the parent app")
    if person.role is Role.guardian:
        snapshot = await _store(ctx).load_audience(tenant.id, Audience(guardians=[person.id]))
        mine = [r for r in snapshot.relations if r.guardian_id == person.id]
        if blocked_everywhere(mine):
            raise Forbidden(
                "this guardian is blocked on every relation and may not use the parent app"
            )
    token, expires_at = issue_guardian_token(
        ctx.secret, tenant.id, person.id, now, ctx.settings.guardian_token_ttl
    )
    return respond_json(GuardianToken(token=token, expires_at=expires_at), status=201)


OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("POST", "/v1/directory"): spec.Operation(
        tag="directory",
        summary="Upsert a directory batch, validated all or nothing, written in chunks",
        security=spec.tenant("directory"),
        body=spec.Body(DirectoryBatch),
        responses={200: spec.Response("Applied; counts per kind", DirectoryApplied)},
        errors=(401, *spec.BODY_ERRORS, 422),
    ),
    ("POST", "/v1/directory/delete"): spec.Operation(
        tag="directory",
        summary="Delete directory rows by id, all or nothing",
        security=spec.tenant("directory"),
        body=spec.Body(DirectoryDeletion),
        responses={200: spec.Response("Deleted; counts per kind", DirectoryDeleted)},
        errors=(401, *spec.BODY_ERRORS, 422),
    ),
    ("PUT", "/v1/relations/{child_id}/{guardian_id}/flags/{flag}"): spec.Operation(
        tag="directory",
        summary="Set a manual relation flag with a reason (survives re-imports)",
        security=spec.tenant("directory"),
        params=(
            spec.path("child_id", "Child id", **spec.ID),
            spec.path("guardian_id", "Guardian id", **spec.ID),
            spec.path("flag", "Which flag", enum=["information_granted", "blocked"]),
        ),
        body=spec.Body(FlagChange),
        responses={200: spec.Response("The relation's flags after the change", RelationFlags)},
        errors=(401, 404, *spec.BODY_ERRORS, 422),
    ),
    ("GET", "/v1/relations/{child_id}/{guardian_id}/flags"): spec.Operation(
        tag="directory",
        summary="A relation's manual flags and their history (who, when, why)",
        description=(
            "For the privacy officer's audit. A relation with a protected child or"
            " guardian only with the `protected` scope. Flags outlive a deletion of the"
            " relation: `relation` false, `flags` null, the history kept."
        ),
        security=spec.tenant("directory"),
        params=(
            spec.path("child_id", "Child id", **spec.ID),
            spec.path("guardian_id", "Guardian id", **spec.ID),
        ),
        responses={200: spec.Response("Flags and history", RelationFlagsView)},
        errors=(401, 403, 404),
    ),
    ("GET", "/v1/persons/{person_id}"): spec.Operation(
        tag="directory",
        summary="One person record (a protected person: only with the protected scope)",
        security=spec.tenant("directory"),
        params=(spec.path("person_id", "Person id"),),
        responses={200: spec.Response("The person", Person)},
        errors=(401, 403, 404),
    ),
    ("GET", "/v1/persons/{person_id}/protection"): spec.Operation(
        tag="directory",
        summary="A person's protection level and its history (who, when, why)",
        description="For a protected person only with the `protected` scope.",
        security=spec.ANY_TENANT,
        params=(spec.path("person_id", "Person id"),),
        responses={200: spec.Response("Level and history", ProtectionView)},
        errors=(401, 403, 404),
    ),
    ("PUT", "/v1/persons/{person_id}/protection"): spec.Operation(
        tag="directory",
        summary="Set protection with a reason: the only way to lower it",
        description=(
            "Imports (directory batch, OneRoster) only ever raise protection; an"
            " absent or lower level keeps the stored one. This call sets any level and"
            " keeps the change in the history; lowering needs a key with the"
            " `protected` scope, and the history is shown only to such a key."
        ),
        security=spec.ANY_TENANT,
        params=(spec.path("person_id", "Person id"),),
        body=spec.Body(ProtectionChange),
        responses={200: spec.Response("Level and history after the change", ProtectionView)},
        errors=(401, 403, 404, *spec.BODY_ERRORS, 422),
    ),
    ("POST", "/v1/guardians/{guardian_id}/tokens"): spec.Operation(
        tag="directory",
        summary="Issue a short-lived guardian token for the parent app (a protected person:"
        " only with the protected scope)",
        security=spec.tenant("directory"),
        params=(spec.path("guardian_id", "Guardian (or adult pupil) id"),),
        responses={201: spec.Response("Token issued", GuardianToken)},
        errors=(401, 403, 404),
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/directory", post_directory)
    app.router.add_post("/v1/directory/delete", post_directory_delete)
    app.router.add_put("/v1/relations/{child_id}/{guardian_id}/flags/{flag}", put_relation_flag)
    app.router.add_get("/v1/relations/{child_id}/{guardian_id}/flags", get_relation_flags)
    app.router.add_get("/v1/persons/{person_id}", get_person)
    app.router.add_put("/v1/persons/{person_id}/protection", put_person_protection)
    app.router.add_get("/v1/persons/{person_id}/protection", get_person_protection)
    app.router.add_post("/v1/guardians/{guardian_id}/tokens", post_guardian_token)
