"""``budbringer bench --scenario mixed``: urgent work posted during a general broadcast.

A general notice to every unit (about 20,000 guardians with the default municipality)
is posted (``--scenario urgent``: an emergency to every unit, so the urgent work below
shares the urgent lane with it: gateway/store/lanes.py); as soon as its first
hand-over reaches a sink, an emergency to one unit and the absence events (at
``--absence-events`` / ``absence_rate``) follow while the broadcast is still being
sent. It measures what a school feels: how long the urgent work waits behind the
broadcast (absence 202 -> SMS and push handed over, and the emergency's last
hand-over), and the broadcast's own time to hand-over.

Hand-overs are matched to the planned deliveries at the end (push and email by
delivery id, SMS by the SID stored as provider id), so the sinks are never reset
in the middle of the scenario.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from typing import TYPE_CHECKING, Any

from gateway.bench.run import _SINK_OF as SINK_OF
from gateway.bench.run import CHANNELS, BenchError, percentile
from gateway.bench.run import _hand_overs as hand_overs

if TYPE_CHECKING:
    from gateway.bench.run import Bench

FIRST_HAND_OVER_WAIT = 30.0  # seconds the broadcast may take to reach its first sink


def _message(category: str, units: list[str], subject: str, tag: str) -> dict[str, Any]:
    return {
        "id": f"bench-{tag}-{secrets.token_hex(4)}",
        "type": "message.created",
        "data": {
            "sender_name": "Kommunedirektøren",
            "audience": {"units": units},
            "category": category,
            "urgency": "high" if category == "emergency" else "normal",
            "subject": subject,
            "body": "Informasjon fra kommunen til alle foresatte. Les mer i appen.",
        },
    }


async def _first_hand_over(bench: Bench) -> None:
    deadline = time.monotonic() + FIRST_HAND_OVER_WAIT
    while time.monotonic() < deadline:
        stats = [await bench.sinks[s].stats() for s in SINK_OF.values()]
        if any(s["distinct"] for s in stats):
            return
        await asyncio.sleep(0.02)
    raise BenchError("mixed: the broadcast reached no sink in time")


async def quiet(bench: Bench, still: float = 1.0) -> None:
    """Until the queues are empty and no sink got a new hand-over for ``still`` seconds:
    the point to read the meters, before the store reads of :func:`settle` (which would
    count as Redis commands)."""
    deadline = time.monotonic() + bench.o.timeout
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = sum([(await bench.sinks[s].stats())["distinct"] for s in SINK_OF.values()])
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since >= still:
            await bench.wait_idle()
            return
        await asyncio.sleep(0.1)
    raise BenchError("mixed: the sinks did not come to rest in time")


async def settle(bench: Bench, message_ids: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """The messages' deliveries and the sinks' records once every provider delivery was
    handed over, every in-app one delivered, and no new one was planned meanwhile (a job
    in progress is not in the queue depth that ``wait_idle`` reads; a SMS's SID is known
    once its outcome is committed). Every message here has deliveries."""
    deadline = time.monotonic() + bench.o.timeout
    while True:
        deliveries = await bench.deliveries(message_ids)
        provider = [d for d in deliveries if d.channel in CHANNELS]
        records = {c: await bench.sinks[s].records() for c, s in SINK_OF.items()}
        matched = sum(len(v) for v in hand_overs(provider, records).values())
        inapp_done = all(d.channel != "inapp" or d.status.value == "delivered" for d in deliveries)
        if deliveries and matched >= len(provider) and inapp_done:
            await asyncio.sleep(0.3)  # planning in progress would add some meanwhile
            if len(await bench.deliveries(message_ids)) == len(deliveries):
                return deliveries, records
        if time.monotonic() > deadline:
            raise BenchError("mixed: not every delivery was handed over in time")
        await asyncio.sleep(0.2)


async def run_mixed(bench: Bench) -> dict[str, Any]:
    """The scenario; returns the figures ``Bench._mixed_result`` reports."""
    assert bench.town is not None
    town, o = bench.town, bench.o
    rng = random.Random(o.seed + 1)
    children = town.children_told()
    picked = rng.sample(children, min(o.absence_events, len(children)))
    real = await bench.absence_is_real(picked[0])
    await bench.wait_idle()
    if bench.probe_id:  # its hand-overs must not land in the scenario's records
        await settle(bench, [bench.probe_id])
    for sink in bench.sinks.values():
        await sink.reset()
    before = await bench.meters()
    if o.scenario == "urgent":  # urgent work during an emergency to every unit
        general = _message("emergency", town.unit_ids, "Skolene stenger i dag", "all")
    else:
        general = _message("general", town.unit_ids, "Foreldremøte neste uke", "general")
    profiler = bench.start_profiler()
    broadcast_id, broadcast_at = await bench.post_event(general)
    await _first_hand_over(bench)
    bench.say(f"broadcast under way; emergency to one unit and {len(picked)} absence events")
    urgent = _message("emergency", town.unit_ids[:1], "Skolen stenger kl. 12", "unit")
    emergency_id, emergency_at = await bench.post_event(urgent)
    absence_at: dict[str, float] = {}
    start, interval = time.monotonic(), 1 / o.absence_rate
    posts = []
    for n, child_id in enumerate(picked):
        await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
        posts.append(
            asyncio.ensure_future(bench.post_event(bench.absence_event(n, child_id, real)))
        )
    for message_id, at in await asyncio.gather(*posts):
        absence_at[message_id] = at
    await bench.wait_idle()
    await quiet(bench)
    after = await bench.meters()
    deliveries, records = await settle(bench, [broadcast_id, emergency_id, *absence_at])
    provider = [d for d in deliveries if d.channel in CHANNELS]
    await bench.stop_profiler(profiler)
    await asyncio.sleep(0.5)  # a late duplicate would show up now
    stats = {c: await bench.sinks[s].stats() for c, s in SINK_OF.items()}
    handed = hand_overs(provider, records)
    matched = {c: len(handed[c]) for c in CHANNELS}
    inapp = [d for d in deliveries if d.channel == "inapp"]
    lost = len(provider) - sum(matched.values())
    lost += sum(1 for d in inapp if d.status.value != "delivered")
    repeated = {c: int(stats[c]["duplicates"]) for c in CHANNELS}
    unmatched = {c: int(stats[c]["distinct"]) - matched[c] for c in CHANNELS}
    duplicates = sum(repeated.values()) + sum(unmatched.values())
    if duplicates:
        bench.say(f"repeated hand-overs {repeated}; matching no planned delivery {unmatched}")

    def last_of(message_id: str, channels: tuple[str, ...] = CHANNELS) -> float | None:
        times = [
            handed[d.channel][d.id]
            for d in provider
            if d.message_id == message_id and d.channel in channels and d.id in handed[d.channel]
        ]
        return max(times, default=None)

    bcast = [d for d in provider if d.message_id == broadcast_id]
    b_last = {
        c: max(
            (handed[c][d.id] for d in bcast if d.channel == c and d.id in handed[c]), default=0.0
        )
        for c in CHANNELS
    }
    b_count = {c: sum(1 for d in bcast if d.channel == c) for c in CHANNELS}
    latencies = []
    for message_id, at in absence_at.items():
        last = last_of(message_id, ("push", "sms"))
        if last is not None:
            latencies.append(last - at)
    emergency_last = last_of(emergency_id)
    all_last = max((t for per in handed.values() for t in per.values()), default=broadcast_at)
    return {
        "absence_kind": "absence.recorded" if real else "absence-like",
        "absence_events": len(picked),
        "absence_p50_ms": percentile(latencies, 50) * 1000,
        "absence_p99_ms": percentile(latencies, 99) * 1000,
        "emergency_deliveries": sum(1 for d in provider if d.message_id == emergency_id),
        "emergency_s": (emergency_last - emergency_at) if emergency_last else 0.0,
        "broadcast_counts": b_count,
        "broadcast_seconds": {
            c: (b_last[c] - broadcast_at) if b_count[c] else 0.0 for c in CHANNELS
        },
        "broadcast_inapp": sum(1 for d in inapp if d.message_id == broadcast_id),
        "deliveries": len(provider),
        "seconds": all_last - broadcast_at,
        "lost": lost,
        "duplicates": duplicates,
        "meters": after - before,
    }
