"""Operations: health, readiness, Prometheus metrics, the OpenAPI document, and the
two small pages that links in emails and SMS point to."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.context import CTX
from gateway.constants import JOB_WEBHOOK_SEND
from gateway.metrics import DELIVERIES, QUEUE_AGE, QUEUE_DEPTH, REGISTRY, WEBHOOK_BACKLOG


async def healthz(request: web.Request) -> web.Response:
    """The process runs and serves HTTP."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers: the gateway can accept events. 503 only then.

    The body also lists each channel's state (``ok``, ``degraded``, ``stopped``, since
    when, last error code); a failing channel never takes intake out of a load
    balancer: alert on ``budbringer_channel_state`` instead."""
    ctx = request.app[CTX]
    reasons: list[str] = []
    try:
        if not await ctx.store.ping():
            reasons.append("store_unavailable")
    except Exception:  # a failing ping is exactly what readiness reports
        reasons.append("store_unavailable")
    body: dict[str, Any] = {"status": "unavailable" if reasons else "ready"}
    if reasons:
        body["reasons"] = reasons
    if ctx.channel_health is not None:
        body["channels"] = ctx.channel_health.snapshot()
    return web.json_response(body, status=503 if reasons else 200)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; store-derived gauges are refreshed at scrape time."""
    ctx = request.app[CTX]
    deliveries = await ctx.store.delivery_stats()
    queues = await ctx.store.queue_stats(ctx.clock.now())
    # clear() first, so a (channel, status) that has gone to zero rows disappears.
    DELIVERIES.clear()
    for (channel, status), count in deliveries.items():
        DELIVERIES.labels(channel, status).set(count)
    QUEUE_DEPTH.clear()
    QUEUE_AGE.clear()
    for kind, (depth, age) in queues.items():
        QUEUE_DEPTH.labels(kind).set(depth)
        QUEUE_AGE.labels(kind).set(age)
    WEBHOOK_BACKLOG.set(queues.get(JOB_WEBHOOK_SEND, (0, 0.0))[0])
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@functools.cache
def openapi_document() -> bytes:
    """The committed OpenAPI document, read from the package data."""
    return resources.files("gateway").joinpath("openapi.json").read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/json")


_PAGE = """<!doctype html>
<html lang="nb">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – Budbringer</title>
<style>
body {{ font-family: system-ui, sans-serif; font-size: 1.125rem; line-height: 1.5;
       color: #1a1a1a; background: #fff; max-width: 40rem; margin: 0 auto; padding: 1rem; }}
</style>
</head>
<body>
<main>
<h1>{title}</h1>
<p>{text}</p>
</main>
</body>
</html>
"""


def _page(title: str, text: str) -> web.Response:
    return web.Response(text=_PAGE.format(title=title, text=text), content_type="text/html")


async def preferences_page(request: web.Request) -> web.Response:
    return _page(
        "Varslingsinnstillinger",
        "Du endrer hvordan og når du får varsler fra skolen og barnehagen i "
        "foreldreappen til skolen eller barnehagen. Åpne appen og gå til innstillinger.",
    )


async def app_page(request: web.Request) -> web.Response:
    return _page(
        "Foreldreappen",
        "Meldinger fra skolen og barnehagen, og innstillingene for varsler, finner du i "
        "foreldreappen til skolen eller barnehagen. Spør skolen eller barnehagen hvis du "
        "ikke har appen.",
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/preferences", preferences_page)
    app.router.add_get("/app", app_page)
