"""What the staff and parent pages share: their texts, rendering with the read page's
templates and stylesheet, the security headers, session cookies and CSRF-checked forms.

Every page is server-rendered from templates/pages/ (the one stylesheet is
read.css), works without JavaScript, is sent with the read page's strict
Content-Security-Policy and no caching, and names no person in its URL: only
opaque ids and tokens.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from babel.dates import format_date, format_time

from gateway.api import spec
from gateway.api.body import read_form
from gateway.api.context import CTX, AppContext
from gateway.api.readlinks import DEFAULT_TEMPLATES, PAGES, SECURITY_HEADERS, ReadPages
from gateway.constants import DEFAULT_TIME_ZONE
from gateway.errors import ConfigError, LinkInvalid
from gateway.locales import catalogue_dir
from gateway.locales import load as load_locales
from gateway.models import Person
from gateway.sessions import PageSession, new_session, open_session

CSRF_FIELD = "csrf"


def load_texts(
    templates_dir: Path | None, name: str, area: str | None = None, locale_dir: Path | None = None
) -> dict[str, Any]:
    """``templates/pages/<name>`` (TOML) from the configured templates, else the built-in;
    with ``area``, each language's texts come from the catalogues (gateway/locales.py)
    and the TOML file keeps only the bilingual problem pages."""
    toml = _load_toml(templates_dir, name)
    if area is None:
        return toml
    return toml | load_locales(locale_dir, catalogue_dir(templates_dir))[area]


def _load_toml(templates_dir: Path | None, name: str) -> dict[str, Any]:
    dirs = [d for d in (templates_dir, DEFAULT_TEMPLATES) if d is not None]
    found = next((d / "pages" / name for d in dirs if (d / "pages" / name).is_file()), None)
    if found is None:
        raise ConfigError(f"templates/pages/{name} is missing")
    try:
        return tomllib.loads(found.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"templates/pages/{name} is not valid") from exc


def read_pages(app: web.Application) -> ReadPages:
    """The read page's templates (loaded by the read-link module, or here)."""
    pages = app.get(PAGES)
    if pages is None:
        settings = app[CTX].settings
        pages = app[PAGES] = ReadPages.load(settings.templates_dir, settings.locale_dir)
    return pages


def render(pages: ReadPages, name: str, root: str, **variables: Any) -> str:
    """Render a page; ``root`` is the relative way back to the application root from
    the page's URL (``"../../"`` from ``/staff/messages/x``), so it works behind a
    proxy with a path prefix too."""
    return pages.env.get_template(name).render(static_prefix=root, root=root, **variables)


def respond(html: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def problem(pages: ReadPages, texts: dict[str, str], status: int, root: str) -> web.Response:
    """A page in Bokmål and English (before sign-in the person's language is unknown)."""
    html = render(pages, "pages/problem.html", root, lang="nb", title=texts["nb_title"], p=texts)
    return respond(html, status)


def when(at: datetime, lang: str) -> str:
    """``27. november 2026 10:00`` in Norwegian time, in the page's language."""
    local = at.astimezone(ZoneInfo(DEFAULT_TIME_ZONE))
    return f"{format_date(local, 'long', locale=lang)} {format_time(local, 'short', locale=lang)}"


def clock_time(at: datetime, lang: str) -> str:
    local = at.astimezone(ZoneInfo(DEFAULT_TIME_ZONE))
    return format_time(local, "short", locale=lang)


def full_name(person: Person) -> str:
    return " ".join(p for p in (person.given_name, person.family_name) if p)


def set_session_cookie(
    response: web.StreamResponse,
    ctx: AppContext,
    cookie: str,
    salt: str,
    session: tuple[str, str],
    ttl: timedelta,
    path: str,
    generation: str = "",
) -> None:
    """A fresh signed session for (tenant, person) of this session ``generation``
    (staff: gateway/api/staff_pages.py): HttpOnly, SameSite=Lax (the sign-in link is
    opened from another site), Secure when served over https."""
    tenant_id, person_id = session
    value, _ = new_session(
        ctx.secret, salt, (tenant_id, person_id, generation), ctx.clock.now(), ttl
    )
    response.set_cookie(
        cookie,
        value,
        max_age=int(ttl.total_seconds()),
        path=path,
        httponly=True,
        samesite="Lax",
        secure=ctx.settings.public_url.startswith("https://"),
    )


def session_from(request: web.Request, cookie: str, salt: str) -> PageSession:
    """The session in the cookie; raises LinkInvalid (none, forged) or LinkExpired."""
    ctx = request.app[CTX]
    value = request.cookies.get(cookie)
    if not value:
        raise LinkInvalid("no session")
    return open_session(ctx.secret, salt, value, ctx.clock.now())


async def checked_form(request: web.Request, session: PageSession) -> dict[str, list[str]] | None:
    """The posted form (every value of each field) when its CSRF field belongs to this
    session and the browser does not say it comes from another site; None otherwise."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") == "cross-site":
        return None
    form = await read_form(request)  # a malformed body: 400
    if not session.csrf_valid(request.app[CTX].secret, form.get(CSRF_FIELD)):
        return None
    fields: dict[str, list[str]] = {}
    for key, value in form.items():
        if isinstance(value, str):
            fields.setdefault(key, []).append(value)
    return fields


# The OpenAPI description the page routes share (gateway/api/spec.py).
CSRF_SCHEMA: dict[str, Any] = {"type": "string", "description": "The hidden field of the form"}
FORM_CSRF: dict[str, Any] = {
    "type": "object",
    "properties": {"csrf": CSRF_SCHEMA},
    "required": ["csrf"],
}
BAD_FORM = spec.page("Page: missing or wrong form field")


def page_get(
    summary: str,
    description: str,
    params: tuple[spec.Param, ...],
    responses: dict[int, spec.Response],
) -> spec.Operation:
    """A page anyone may fetch (its session cookie, if any, is checked by the handler)."""
    return spec.Operation(
        tag="pages",
        summary=summary,
        description=description,
        security=spec.PUBLIC,
        params=params,
        responses=responses,
    )


def page_post(
    summary: str,
    schema: Mapping[str, Any],
    responses: dict[int, spec.Response],
    params: tuple[spec.Param, ...] | None = None,
) -> spec.Operation:
    """A page's form post (CSRF-checked by :func:`read_page_form`)."""
    return spec.Operation(
        tag="pages",
        summary=summary,
        security=spec.PUBLIC,
        params=params,
        body=spec.form(schema),
        responses=responses,
    )
