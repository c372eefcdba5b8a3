"""Python calls per delivery of the gateway's own send path: plan, claim, send, commit.

One gateway process in-process (``Service`` without its HTTP API, the SQLite store in a
temporary directory), the benchmark's municipality (``gateway/bench/synth.py``) and an
emergency to every unit, as ``budbringer bench`` sends it. The channels are stand-ins
that answer at once (one loop turn), so what is counted is the gateway's bookkeeping
around each send: the dispatcher, the outcome batcher, the store, planning and
rendering, not a provider client's. The Python-level calls (``sys.setprofile``) are the
same on every run, unlike time on a busy machine; ``--no-count`` times the run instead
(``time.process_time`` of this process, the SQLite threads included). One line of JSON.
Run it from a checkout's root, alternately from two checkouts, to compare them:

    .venv/bin/python -m scripts.measure_dispatch --children 1000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

from gateway.auth import create_tenant
from gateway.bench.synth import generate
from gateway.clock import SystemClock
from gateway.constants import JOB_PLAN
from gateway.event_loop import run
from gateway.gcpause import settle
from gateway.models import (
    Audience,
    Category,
    Delivery,
    Device,
    DirectoryBatch,
    Job,
    Message,
    Receipt,
    Rendered,
    derive_id,
)
from gateway.service import Service
from gateway.settings import Settings

# (group, substrings of a code object's file name), first match wins.
GROUPS = (
    ("dispatcher", ("gateway/dispatcher.py",)),
    ("outcomes", ("gateway/outcomes.py",)),
    ("gates, health", ("gateway/channel_gate.py", "gateway/channel_health.py")),
    ("recheck", ("gateway/recheck.py",)),
    ("planner", ("gateway/planner.py", "gateway/resolver.py", "gateway/protection.py")),
    ("store", ("gateway/store/",)),
    ("aiosqlite", ("aiosqlite",)),
    ("render", ("gateway/render.py", "gateway/readlinks.py", "jinja2", "babel", "markupsafe")),
    ("pydantic", ("pydantic",)),
    ("metrics", ("prometheus_client", "gateway/metrics.py")),
    ("json", ("json/",)),
    ("asyncio", ("asyncio/",)),
)


class Answering:
    """A channel that takes every delivery at once (a loop turn), like a sink at 0 ms."""

    max_body: ClassVar[int | None] = None
    rate_per_second: ClassVar[float | None] = None

    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]
        self.sent = 0

    async def start(self) -> None:
        return None

    async def send(self, delivery: Delivery, content: Rendered) -> Receipt:
        await asyncio.sleep(0)
        self.sent += 1
        return Receipt(provider_id=f"p-{self.sent}")

    async def aclose(self) -> None:
        return None


def _group(filename: str) -> str:
    for name, patterns in GROUPS:
        if any(p in filename for p in patterns):
            return name
    return "other"


async def _prepare(service: Service, children: int) -> tuple[str, list[str], int]:
    store = service.store
    clock = SystemClock()
    tenant, _, _ = await create_tenant(store, "Målekommune", clock.now())
    town = generate(children, seed=1)
    batch = DirectoryBatch.model_validate(
        {
            "units": town.units,
            "groups": town.groups,
            "persons": town.children + list(town.guardian_rows()),
            "relations": town.relations,
        }
    )
    await store.apply_directory(tenant.id, batch)
    for guardian in town.guardians:
        if guardian.device_token:
            device = Device(id="d1", token=guardian.device_token, platform="android")
            await store.upsert_device(tenant.id, guardian.id, device)
    expected = town.expected()
    return tenant.id, town.unit_ids, expected["push"] + expected["sms"] + expected["email"]


async def _emergency(service: Service, tenant_id: str, units: list[str]) -> Message:
    now = SystemClock().now()
    event_id = f"measure-{time.time_ns()}"
    message = Message(
        id=derive_id(tenant_id, event_id),
        tenant_id=tenant_id,
        event_id=event_id,
        event_type="message.created",
        body_hash="h-" + event_id,
        category=Category.emergency,
        sender_name="Kommunedirektøren",
        subject="Skolen er stengt i dag",
        body="Alle skoler og barnehager er stengt i dag på grunn av uvær. Hold barna hjemme.",
        audience=Audience(units=units),
        created_at=now,
    )
    job = Job(
        id=f"{JOB_PLAN}:{message.id}",
        tenant_id=tenant_id,
        kind=JOB_PLAN,
        ref=message.id,
        due_at=now,
        urgent=True,
    )
    return await service.store.accept_message(message, job)


async def measure(children: int, count: bool, top: int = 0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            store_url=f"sqlite:///{Path(tmp) / 'gateway.db'}",
            secret_key="measure-" + "x" * 40,
            public_url="https://varsel.example.no",
            outbox_dir=Path(tmp) / "outbox",
        )
        channels = {name: Answering(name) for name in ("push", "sms", "email")}
        service = Service(settings, api=False, workers=False, channels=channels)  # type: ignore[arg-type]
        await service.start()
        try:
            tenant_id, units, sends = await _prepare(service, children)
            calls: collections.Counter[str] = collections.Counter()
            functions: collections.Counter[str] = collections.Counter()

            def profile(frame: FrameType, event: str, arg: Any) -> None:
                if event == "call":
                    code = frame.f_code
                    calls[_group(code.co_filename)] += 1
                    if top:
                        functions[f"{code.co_filename}:{code.co_firstlineno}:{code.co_name}"] += 1

            settle()  # as a running gateway (gateway/service.py)
            gc_seconds = 0.0
            gc_started = 0.0

            def collected(phase: str, info: dict[str, int]) -> None:
                nonlocal gc_seconds, gc_started
                if phase == "start":
                    gc_started = time.perf_counter()
                else:
                    gc_seconds += time.perf_counter() - gc_started

            gc.callbacks.append(collected)
            await _emergency(service, tenant_id, units)
            started = time.process_time()
            if count:
                sys.setprofile(profile)
            worker = asyncio.create_task(service.dispatcher.run())
            while sum(c.sent for c in channels.values()) < sends:
                await asyncio.sleep(0.01)
            # Until the last outcomes are stored: the queue holds no send job then.
            while (await service.store.queue_stats(SystemClock().now())).get("send", (0,))[0]:
                await asyncio.sleep(0.01)
            sys.setprofile(None)
            cpu = time.process_time() - started
            gc.callbacks.remove(collected)
            service.dispatcher.stop()
            await worker
        finally:
            await service.stop()
    total = sum(calls.values())
    result: dict[str, Any] = {"children": children, "sends": sends}
    if count:
        result["calls_per_send"] = round(total / sends, 1)
        result["by_group"] = {k: round(v / sends, 1) for k, v in calls.most_common()}
        if top:
            result["top"] = {k: round(v / sends, 2) for k, v in functions.most_common(top)}
    else:
        result["cpu_us_per_send"] = round(cpu * 1e6 / sends, 1)
        result["gc_us_per_send"] = round(gc_seconds * 1e6 / sends, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("--no-count", action="store_true", help="time the run instead")
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--top", type=int, default=0, help="also the N most called functions")
    args = parser.parse_args()
    print(
        json.dumps(
            run(measure(args.children, not args.no_count, args.top), args.event_loop),
            indent=1 if args.top else None,
        )
    )


if __name__ == "__main__":
    main()
