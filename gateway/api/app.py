"""The aiohttp application: routes from each resource module, one error shape."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import quote

from aiohttp import web

from gateway.api import (
    absence,
    attachments,
    directory,
    escalation,
    events,
    guardian,
    keys,
    oneroster,
    ops,
    parent_pages,
    providers,
    readlinks,
    staff_absence,
    staff_pages,
    status,
    unsubscribe,
    voice,
    webhooks,
)
from gateway.api.access import access_middleware
from gateway.api.context import CTX, AppContext
from gateway.api.limits import body_deadline
from gateway.api.responses import Error, respond_json
from gateway.api.spec import Operation, Route
from gateway.errors import InputError, StoreError
from gateway.logs import route_of

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RouteModule(Protocol):
    """A module of routes: ``setup`` registers them, ``OPERATIONS`` describes each one
    for gateway/openapi.json (gateway/api/spec.py)."""

    OPERATIONS: dict[Route, Operation]

    def setup(self, app: web.Application) -> None: ...


ROUTES: tuple[RouteModule, ...] = (
    ops,
    events,
    directory,
    oneroster,
    status,
    escalation,
    guardian,
    providers,
    voice,
    readlinks,
    unsubscribe,
    webhooks,
    absence,
    keys,
    staff_pages,
    staff_absence,
    parent_pages,
    attachments,
)
"""Every module with routes, in the order they are registered."""


# Direction marks: a link in a right-to-left SMS or email is wrapped in an isolate
# (U+2068 ... U+2069, gateway/render.py), and a phone may take the closing mark into the
# link it opens.
_MARKS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_PERSONAL = ("/r/", "/p/", "/u/")


@web.middleware
async def link_marks(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A personal link that came with invisible direction marks after it: to the link
    without them (308, so a form's POST is kept), instead of "this link does not work"."""
    path = request.path
    if not (path.startswith(_PERSONAL) and path.endswith(tuple(_MARKS))):
        response: web.StreamResponse = await handler(request)
        return response
    last = path.rpartition("/")[2].rstrip(_MARKS)
    if last:
        # Relative, as every redirect of the pages: right behind a proxy's path prefix.
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPPermanentRedirect(location=quote(last) + query)
    response = await handler(request)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON: ``{"error": code, "message": ..., "errors": [...]}``."""
    try:
        return await handler(request)
    except InputError as exc:
        return web.json_response(exc.to_json(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        answer = respond_json(
            Error(error=exc.reason.lower().replace(" ", "_"), message=exc.reason), exc.status
        )
        answer.headers.update({k: v for k, v in exc.headers.items() if k.lower() == "allow"})
        return answer
    except StoreError as exc:
        # The store failed or would not answer consistently (e.g. the directory kept
        # changing while it was read): transient, so 503 with Retry-After, not a 500.
        # The class only: a store message may name keys.
        log.warning(
            "store unavailable",
            extra={
                "route": route_of(request),
                "method": request.method,
                "error": type(exc).__name__,
            },
        )
        answer = respond_json(
            Error(error="unavailable", message="the store is unavailable; try again shortly"), 503
        )
        answer.headers["Retry-After"] = "1"
        return answer
    except Exception:
        log.exception(
            "unhandled error", extra={"route": route_of(request), "method": request.method}
        )
        return respond_json(
            Error(error="internal", message="internal error; it has been logged"), 500
        )


def create_app(ctx: AppContext) -> web.Application:
    app = web.Application(
        # access outermost: it sees the status error_middleware made of an exception
        middlewares=[
            access_middleware(ctx.settings.access_log),
            error_middleware,
            link_marks,
            body_deadline,
        ],
        client_max_size=ctx.settings.max_body_bytes,
    )
    app[CTX] = ctx
    for module in ROUTES:
        module.setup(app)
    return app
