"""Prometheus metrics, defined once and observed where things happen."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

DELIVERIES = Gauge(
    "budbringer_deliveries",
    "Deliveries by channel and current status (read from the store at scrape time).",
    ["channel", "status"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("budbringer_queue_depth", "Jobs waiting, by kind.", ["kind"], registry=REGISTRY)
QUEUE_AGE = Gauge(
    "budbringer_queue_oldest_age_seconds",
    "Age of the oldest due job, by kind.",
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
EVENTS = Counter(
    "budbringer_events_total",
    "Events received, by type and outcome (accepted, duplicate, conflict, rejected).",
    ["type", "outcome"],
    registry=REGISTRY,
)
CALLBACKS_PARKED = Counter(
    "budbringer_callbacks_parked_total",
    "Provider status callbacks whose message id was not known yet: parked, later applied,"
    " or given up after the wait.",
    ["outcome"],
    registry=REGISTRY,
)
