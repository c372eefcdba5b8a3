"""Operations: health, readiness, Prometheus metrics, the OpenAPI document, and the
two small pages that links in emails and SMS point to."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Literal, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from gateway.api import spec
from gateway.api.context import CTX, AppContext
from gateway.api.responses import Absent, Instant, omitted, respond_json
from gateway.constants import JOB_WEBHOOK_SEND
from gateway.metrics import DELIVERIES, QUEUE_AGE, QUEUE_DEPTH, REGISTRY, WEBHOOK_BACKLOG
from gateway.store.ports import DeliveryReport, JobQueue, Lifecycle


class _Ports(Lifecycle, DeliveryReport, JobQueue, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


class Health(BaseModel):
    status: Literal["ok"]


class ChannelStatus(BaseModel):
    state: Literal["ok", "degraded", "stopped"]
    since: Instant
    last_error: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    reasons: list[str] = Field(
        default=[],
        exclude_if=lambda reasons: not reasons,
        description="Only `store_unavailable` makes a 503.",
    )
    channels: dict[str, ChannelStatus] | Absent = omitted(
        description="Each channel's state from the workers' circuit breaker (absent in an "
        "API-only process). A failing channel never makes /readyz 503: alert on "
        "`budbringer_channel_state` instead.",
    )


async def healthz(request: web.Request) -> web.Response:
    """The process runs and serves HTTP."""
    return respond_json(Health(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers: the gateway can accept events. 503 only then.

    The body also lists each channel's state (``ok``, ``degraded``, ``stopped``, since
    when, last error code); a failing channel never takes intake out of a load
    balancer: alert on ``budbringer_channel_state`` instead."""
    ctx = request.app[CTX]
    reasons: list[str] = []
    try:
        if not await _store(ctx).ping():
            reasons.append("store_unavailable")
    except Exception:  # a failing ping is exactly what readiness reports
        reasons.append("store_unavailable")
    channels = ctx.channel_health.snapshot() if ctx.channel_health is not None else None
    body = Readiness(
        status="unavailable" if reasons else "ready",
        reasons=reasons,
        channels=None if channels is None else {n: ChannelStatus(**c) for n, c in channels.items()},
    )
    return respond_json(body, status=503 if reasons else 200)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; store-derived gauges are refreshed at scrape time."""
    ctx = request.app[CTX]
    deliveries = await _store(ctx).delivery_stats()
    queues = await _store(ctx).queue_stats(ctx.clock.now())
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


OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("GET", "/healthz"): spec.Operation(
        tag="operations",
        summary="Liveness: the process runs",
        security=spec.PUBLIC,
        responses={200: spec.Response("Alive", Health)},
    ),
    ("GET", "/readyz"): spec.Operation(
        tag="operations",
        summary="Readiness: the store answers (events can be accepted); channel states",
        security=spec.PUBLIC,
        responses={
            200: spec.Response("Ready", Readiness),
            503: spec.Response("The store does not answer; `reasons` lists the codes", Readiness),
        },
    ),
    ("GET", "/metrics"): spec.Operation(
        tag="operations",
        summary="Prometheus metrics (text exposition format)",
        security=spec.PUBLIC,
        responses={200: spec.Response("Metrics", spec.TEXT, "text/plain")},
    ),
    ("GET", "/openapi.json"): spec.Operation(
        tag="operations",
        summary="This document",
        security=spec.PUBLIC,
        responses={200: spec.Response("OpenAPI document", {"type": "object"})},
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
