"""Prometheus metrics, defined once and observed where things happen."""

from __future__ import annotations

import functools

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

REGISTRY = CollectorRegistry(auto_describe=True)
# prometheus-client's defaults: process_* (CPU, memory, open fds), python_gc_*, python_info.
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

DELIVERIES = Gauge(
    "budbringer_deliveries",
    "Deliveries by channel and current status (read from the store at scrape time).",
    ["channel", "status"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "budbringer_queue_depth",
    "Jobs waiting, by kind (on Redis also work handed over in its process until its lease ends).",
    ["kind"],
    registry=REGISTRY,
)
QUEUE_AGE = Gauge(
    "budbringer_queue_oldest_age_seconds",
    "Age of the oldest due time among the jobs claimable now (not of the next job in "
    "the lane's rank-adjusted order), by kind; 0 when none.",
    ["kind"],
    registry=REGISTRY,
)
PROVIDER_LATENCY = Histogram(
    "budbringer_provider_latency_seconds",
    "Time a channel's send took, by channel and outcome.",
    ["channel", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
SENDS = Counter(
    "budbringer_sends_total",
    "Send attempts by channel and outcome (sent, transient, permanent, unavailable).",
    ["channel", "outcome"],
    registry=REGISTRY,
)
SMS_SEGMENTS = Histogram(
    "budbringer_sms_segments",
    "Segments of each SMS handed to the provider (its _sum is the segments billed).",
    buckets=(1, 2, 3, 4, 6, 10),
    registry=REGISTRY,
)
EVENTS = Counter(
    "budbringer_events_total",
    "Events received, by type and outcome (accepted, duplicate, conflict, rejected).",
    ["type", "outcome"],
    registry=REGISTRY,
)
CHANNEL_STATE = Gauge(
    "budbringer_channel_state",
    "1 for the state each channel is in (ok, degraded, stopped), 0 for the others.",
    ["channel", "state"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "budbringer_http_requests_total",
    "HTTP requests by method, route template (e.g. /r/{token}) and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "budbringer_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "budbringer_webhook_attempts_total",
    "Outbound webhook attempts by outcome (delivered, retrying, failed, gone).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_BACKLOG = Gauge(
    "budbringer_webhook_backlog",
    "Outbound webhook messages waiting to be delivered (read at scrape time).",
    registry=REGISTRY,
)
REACHED = Counter(
    "budbringer_reached_total",
    "Subjects (a child, or a recipient) a message reached for the first time.",
    registry=REGISTRY,
)
ESCALATED = Counter(
    "budbringer_escalated_deliveries_total",
    "Deliveries planned by escalation, by kind (step: unread in time; failover: a failed send).",
    ["kind"],
    registry=REGISTRY,
)
CALLBACKS_PARKED = Counter(
    "budbringer_callbacks_parked_total",
    "Provider status callbacks whose message id was not known yet: parked, later applied,"
    " or given up after the wait.",
    ["outcome"],
    registry=REGISTRY,
)


@functools.lru_cache(maxsize=64)
def send_meters(channel: str, outcome: str) -> tuple[Histogram, Counter]:
    """The latency histogram and send counter of one (channel, outcome): looked up once,
    not twice per send (``labels`` takes a lock and builds the key each time)."""
    return PROVIDER_LATENCY.labels(channel, outcome), SENDS.labels(channel, outcome)
