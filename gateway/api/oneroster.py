"""``POST /v1/directory/oneroster``: the platform uploads a zipped OneRoster CSV export.

Tenant API key (``Authorization: Bearer bbk_...``); the body is the zip itself
(``Content-Type: application/zip``), at most ``settings.max_body_bytes``. The
import options are query parameters. The mapping is :mod:`gateway.oneroster`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel

from gateway.api import spec
from gateway.api.body import read_raw
from gateway.api.body_slices import big_parts, free_in_pieces
from gateway.api.context import CTX, AppContext
from gateway.api.limits import body_limit
from gateway.api.responses import respond_json
from gateway.auth import AuthStore, authenticate_bearer
from gateway.constants import DEFAULT_PHONE_REGION, DEFAULT_TIME_ZONE
from gateway.errors import ValidationFailed
from gateway.gcpause import gc_paused
from gateway.models import Scope
from gateway.oneroster import (
    DEFAULT_RESPONSIBILITY_ROLES,
    ImportOptions,
    ImportStore,
    apply_oneroster,
    counts,
    load_oneroster_zip,
    parse_phone_region,
    parse_responsibility_roles,
)

ZIP = "application/zip"


class _Ports(AuthStore, ImportStore, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


class OneRosterApplied(BaseModel):
    """Response of ``POST /v1/directory/oneroster``."""

    applied: dict[str, int]  # rows per kind written (would be written, on a dry run)
    skipped: dict[str, int]  # rows or links left out, per reason
    warnings: list[str]  # one line each, without personal data
    dry_run: bool = False


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError("expected true or false")


QUERY: dict[str, Callable[[str], Any]] = {
    "phone_region": parse_phone_region,
    "assume_minor": _flag,
    "skip_invalid_contacts": _flag,
    "responsibility_roles": parse_responsibility_roles,
    "dry_run": _flag,
}


def _query(query: Mapping[str, str]) -> dict[str, Any]:
    """The import options in the query string; every wrong one named in a 422."""
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for name, value in query.items():
        parse = QUERY.get(name)
        if parse is None:
            errors.append({"loc": ["query", name], "message": "unknown parameter", "type": "extra"})
            continue
        try:
            values[name] = parse(value)
        except ValueError as exc:
            errors.append({"loc": ["query", name], "message": str(exc), "type": "value_error"})
    if errors:
        raise ValidationFailed("the query is not valid", errors=errors)
    return values


async def post_oneroster(request: web.Request) -> web.Response:
    """Import a zipped OneRoster 1.1/1.2 export, all or nothing.

    200 ``{"applied", "skipped", "warnings", "dry_run"}``; 422 with one row per
    problem, ``loc`` = ``[file, row, field]`` (never the value); 415 for another
    Content-Type.
    """
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.directory)
    if request.content_type.lower() != ZIP:
        raise web.HTTPUnsupportedMediaType()  # the JSON error says unsupported_media_type
    query = _query(request.query)
    raw = await read_raw(request, body_limit(request))
    options = ImportOptions(
        phone_region=query.get("phone_region", DEFAULT_PHONE_REGION),
        assume_minor=query.get("assume_minor", False),
        skip_invalid_contacts=query.get("skip_invalid_contacts", False),
        responsibility_roles=query.get("responsibility_roles", DEFAULT_RESPONSIBILITY_ROLES),
        today=ctx.clock.now().astimezone(ZoneInfo(DEFAULT_TIME_ZONE)).date(),
    )
    dry_run = bool(query.get("dry_run", False))
    # A municipality's export is a big batch (see post_directory): parsed in a thread,
    # no full GC passes meanwhile, written in chunks by the store, freed in pieces.
    with gc_paused():
        result = await asyncio.to_thread(
            load_oneroster_zip, raw, options, limits=ctx.settings.archive
        )
        applied = (
            counts(result.batch)
            if dry_run
            else await apply_oneroster(_store(ctx), tenant.id, result.batch, ctx.clock.now())
        )
        body = OneRosterApplied(
            applied=applied, skipped=result.skipped, warnings=result.warnings, dry_run=dry_run
        )
        await asyncio.to_thread(free_in_pieces, big_parts(result.batch))
    return respond_json(body)


def _switch(name: str, description: str) -> spec.Param:
    return spec.query(name, description, type="boolean", default=False)


OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("POST", "/v1/directory/oneroster"): spec.Operation(
        tag="directory",
        summary="Import a zipped OneRoster 1.1/1.2 CSV export, validated all or nothing",
        description=(
            "The body is a zip of `manifest.csv` and the bulk CSV files. Errors name"
            " `[file, row, field]` (row: the line in the CSV, header = 1), never the"
            " value. New relations of parents and guardians get parental"
            " responsibility; existing relations, protection and manual flags are kept."
        ),
        security=spec.tenant("directory"),
        params=(
            spec.query(
                "phone_region",
                "Region of numbers without a country code",
                type="string",
                default="NO",
                pattern="^[A-Za-z]{2}$",
            ),
            _switch("assume_minor", "Placeholder birth date (age 10) for students without"),
            _switch("skip_invalid_contacts", "Leave invalid phones/emails out, with warnings"),
            spec.query(
                "responsibility_roles",
                "Roles whose new relations get parental responsibility",
                type="string",
                default="parent,guardian",
            ),
            _switch("dry_run", "Validate only; write nothing"),
        ),
        body=spec.Body(spec.BINARY, ("application/zip",)),
        responses={
            200: spec.Response("Imported; counts per kind, skipped, warnings", OneRosterApplied)
        },
        errors=(401, *spec.BODY_ERRORS, 422),
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/directory/oneroster", post_oneroster)
