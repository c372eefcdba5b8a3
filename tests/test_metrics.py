"""gateway/metrics.py: the send meters expose what prometheus_client's own types would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.metrics import LATENCY_BUCKETS, LoopHistogram, SendMeters

SECONDS = [0.0, 0.004, 0.005, 0.0051, 0.3, 1, 2.5, 29.9, 30, 31, 600]


def _lines(registry: CollectorRegistry) -> list[str]:
    """The exposition without the _created series (the library's own types add them)."""
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_the_send_meters_expose_what_a_histogram_and_a_counter_would() -> None:
    theirs = CollectorRegistry()
    latency = Histogram(
        "budbringer_provider_latency_seconds",
        "Time a channel's send took, by channel and outcome.",
        ["channel", "outcome"],
        buckets=LATENCY_BUCKETS,
        registry=theirs,
    )
    sends = Counter(
        "budbringer_sends_total",
        "Send attempts by channel and outcome "
        "(sent, transient, permanent, unavailable, lease_short).",
        ["channel", "outcome"],
        registry=theirs,
    )
    ours = CollectorRegistry()
    meters = SendMeters()
    ours.register(meters)
    for n, seconds in enumerate(SECONDS):
        channel, outcome = ("sms", "sent") if n % 3 else ("email", "transient")
        latency.labels(channel, outcome).observe(seconds)
        sends.labels(channel, outcome).inc()
        meters.observe(channel, outcome, seconds)
    sends.labels("push", "sent").inc()  # a digest's send: counted, no latency
    meters.count("push", "sent")
    assert _lines(ours) == _lines(theirs)
    assert 'budbringer_sends_total{channel="sms",outcome="sent"} 7.0' in _lines(ours)


def test_a_histogram_without_labels_is_shown_from_the_start_as_the_librarys() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    doc = "Segments of each SMS handed to the provider (its _sum is the segments billed)."
    segments = Histogram(
        "budbringer_sms_segments", doc, buckets=(1, 2, 3, 4, 6, 10), registry=theirs
    )
    mine = LoopHistogram("budbringer_sms_segments", doc, (), (1, 2, 3, 4, 6, 10))
    ours.register(mine)
    assert _lines(ours) == _lines(theirs)
    for n in (1, 1, 2, 5, 10, 11):
        segments.observe(n)
        mine.observe(n)
    assert _lines(ours) == _lines(theirs)
    assert "budbringer_sms_segments_sum 30.0" in _lines(ours)
