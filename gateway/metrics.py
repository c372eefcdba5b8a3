"""Prometheus metrics, defined once and observed where things happen."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

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
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class LoopHistogram(Collector):
    """A histogram observed only on the event loop, per send: what prometheus_client's
    ``Histogram`` shows, kept as plain numbers (the library's takes two locks and about
    six Python calls per observation; issue 18), turned into a metric family when
    scraped (:meth:`collect`, on the same loop)."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self._name, self._documentation, self._labels = name, documentation, tuple(labels)
        self._bounds = (*sorted(buckets), math.inf)
        # The le labels as prometheus_client writes them (Go's float format: "1.0", "+Inf").
        self._les = tuple("+Inf" if b == math.inf else repr(float(b)) for b in self._bounds)
        # label values -> observations per bucket (not cumulative), then their sum.
        self._tallies: dict[tuple[str, ...], list[float]] = {}
        if not self._labels:
            self._new(())  # shown from the start, as the library's own does

    def observe(self, value: float, key: tuple[str, ...] = ()) -> None:
        """One observation of ``value``, for the label values ``key``."""
        tally = self._tallies.get(key) or self._new(key)
        tally[bisect_left(self._bounds, value)] += 1  # the first bucket with le >= value
        tally[-1] += value

    def _new(self, key: tuple[str, ...]) -> list[float]:
        tally = self._tallies[key] = [0.0] * (len(self._bounds) + 1)
        return tally

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labels)
        for key, tally in list(self._tallies.items()):
            family.add_metric(list(key), list(_cumulative(self._les, tally)), sum_value=tally[-1])
        return [family]


class SendMeters(Collector):
    """``budbringer_provider_latency_seconds`` (a :class:`LoopHistogram`) and
    ``budbringer_sends_total`` (a counter kept the same way), by channel and outcome:
    every send observes both."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self._latency = LoopHistogram(
            "budbringer_provider_latency_seconds",
            "Time a channel's send took, by channel and outcome.",
            ("channel", "outcome"),
            buckets,
        )
        self._sends: dict[tuple[str, str], int] = {}

    def observe(self, channel: str, outcome: str, seconds: float) -> None:
        """One send that took ``seconds``: counted, and its latency observed."""
        key = (channel, outcome)
        self._latency.observe(seconds, key)
        self._sends[key] = self._sends.get(key, 0) + 1

    def count(self, channel: str, outcome: str) -> None:
        """One send without a latency to observe (a digest's)."""
        key = (channel, outcome)
        self._sends[key] = self._sends.get(key, 0) + 1

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "budbringer_sends",
            "Send attempts by channel and outcome "
            "(sent, transient, permanent, unavailable, lease_short).",
            labels=("channel", "outcome"),
        )
        for (channel, outcome), sends in list(self._sends.items()):
            family.add_metric([channel, outcome], sends)
        return [*self._latency.collect(), family]


def _cumulative(les: Sequence[str], tally: list[float]) -> Iterator[tuple[str, float]]:
    """(le, observations up to it): the histogram's buckets as exposed."""
    total = 0.0
    for le, observed in zip(les, tally, strict=False):  # the tally's last item is its sum
        total += observed
        yield le, total


SEND_METERS = SendMeters()
REGISTRY.register(SEND_METERS)
SMS_SEGMENTS = LoopHistogram(
    "budbringer_sms_segments",
    "Segments of each SMS handed to the provider (its _sum is the segments billed).",
    (),
    (1, 2, 3, 4, 6, 10),
)
REGISTRY.register(SMS_SEGMENTS)
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
LEASE_OVERRUNS = Counter(
    "budbringer_lease_overruns_total",
    "Jobs that ended after their lease (their worker stalled): another worker may have"
    " taken one over and done it too.",
    registry=REGISTRY,
)
LEASE_TAKEOVERS = Counter(
    "budbringer_lease_takeovers_total",
    "Jobs claimed after the lease of the claim before had ended (its worker stopped or"
    " stalled): that worker may have done them already.",
    registry=REGISTRY,
)
CALLBACKS_PARKED = Counter(
    "budbringer_callbacks_parked_total",
    "Provider status callbacks whose message id was not known yet: parked, later applied,"
    " or given up after the wait.",
    ["outcome"],
    registry=REGISTRY,
)
