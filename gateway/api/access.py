"""Access log and HTTP metrics: one line and one count per request.

Logged: method, route template (``/r/{token}``, never the raw path: paths carry
tokens and ids), status, duration, the tenant (when the request authenticated) and the
API key id (``request[KEY_ID]``, when set). Never query strings, headers or bodies.
``BUDBRINGER_ACCESS_LOG=false`` switches the log line off; the metrics stay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.auth import KEY_ID, TENANT_ID
from gateway.logs import route_of
from gateway.metrics import HTTP_DURATION, HTTP_REQUESTS

log = logging.getLogger("budbringer.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def access_middleware(enabled: bool) -> Middleware:
    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = route_of(request)
            HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
            HTTP_DURATION.labels(route).observe(elapsed)
            if enabled:
                extra: dict[str, object] = {
                    "method": request.method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                }
                tenant_id = request.get(TENANT_ID)
                if tenant_id is not None:
                    extra["tenant_id"] = tenant_id
                key_id = request.get(KEY_ID)
                if key_id is not None:
                    extra["key_id"] = key_id
                log.info("request", extra=extra)

    return access
