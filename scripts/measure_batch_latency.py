"""How long /healthz and event intake take while a 100,000-person directory batch is
posted and applied.

The gateway runs in its own process (API only, SQLite or Redis); this process posts a
small seed directory, then the batch of ``tests/test_big_batch.py``, and meanwhile asks
/healthz every 10 ms and posts a ``message.created`` event (to the seed child) every
50 ms until the batch is answered. It prints one line of JSON: the batch's status and
time, and p50, p99 and max latency of /healthz and of the events (and of 20 of each
before the batch, ``idle``). Not a test: the
figures depend on the machine (``make bench-batch``). Run from the repository root:

    .venv/bin/python -m scripts.measure_batch_latency [--backend redis] [SOURCE_ROOT]

``SOURCE_ROOT`` (default: this checkout) is put on the gateway's PYTHONPATH, so an
older checkout can be measured the same way. ``--backend redis`` uses the Redis at
``--redis-url`` (default ``redis://127.0.0.1:6379/0``) under a key prefix of its own,
deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis

from tests.test_big_batch import big_batch

ROOT = Path(__file__).resolve().parents[1]
SEED = {
    "units": [{"id": "seed-u", "kind": "school", "name": "Seed skole"}],
    "persons": [
        {
            "id": "seed-c",
            "role": "child",
            "given_name": "Kari",
            "birth_date": "2015-03-01",
            "unit_ids": ["seed-u"],
        },
        {"id": "seed-p", "role": "guardian", "given_name": "Ola", "email": "ola@example.org"},
    ],
    "relations": [{"child_id": "seed-c", "guardian_id": "seed-p"}],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def gateway_env(source: Path, tmp: Path, store_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDBRINGER_")}
    env.update(
        PYTHONPATH=str(source),
        BUDBRINGER_STORE_URL=store_url,
        BUDBRINGER_SECRET_KEY="measure-secret-key-that-is-long-enough-0123",
        BUDBRINGER_PORT=str(free_port()),
        BUDBRINGER_OUTBOX_DIR=str(tmp / "outbox"),
        BUDBRINGER_LOG_LEVEL="WARNING",
        BUDBRINGER_MAX_BODY_BYTES=str(64 * 1024 * 1024),
    )
    return env


def summary(latencies: list[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds."""
    if not latencies:
        return {"n": 0}
    ordered = sorted(latencies)

    def ms(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 1)

    return {"n": len(ordered), "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0)}


async def until(done: asyncio.Event, every: float, call: Callable[[], Awaitable[None]]) -> None:
    while not done.is_set():
        await call()
        await asyncio.sleep(every)


async def wait_ready(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(300):
        try:
            async with http.get(f"{url}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the gateway did not start")


async def during_batch(url: str, key: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        await wait_ready(http, url)
        async with http.post(f"{url}/v1/directory", json=SEED, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        body = big_batch(last_phone="+4790012345")
        healthz: list[float] = []
        events: list[float] = []
        statuses: dict[int, int] = {}
        numbers = itertools.count()

        async def ask_healthz() -> None:
            start = time.perf_counter()
            async with http.get(f"{url}/healthz") as resp:
                await resp.read()
            healthz.append(time.perf_counter() - start)

        async def post_event() -> None:
            event = {
                "id": f"measure-{next(numbers)}",
                "type": "message.created",
                "data": {
                    "audience": {"children": ["seed-c"]},
                    "category": "general",
                    "subject": "Måling",
                    "body": "Under en stor katalogbatch.",
                },
            }
            start = time.perf_counter()
            async with http.post(f"{url}/v1/events", json=event, headers=headers) as resp:
                await resp.read()
            events.append(time.perf_counter() - start)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1

        for _ in range(20):  # the same events with no batch running, for comparison
            await post_event()
            await ask_healthz()
        idle = {"healthz": summary(healthz), "events": summary(events)}
        healthz.clear()
        events.clear()
        statuses.clear()
        done = asyncio.Event()
        probes = [
            asyncio.create_task(until(done, 0.01, ask_healthz)),
            asyncio.create_task(until(done, 0.05, post_event)),
        ]
        start = time.perf_counter()
        async with http.post(f"{url}/v1/directory", data=body, headers=headers) as resp:
            status = resp.status
        batch_s = time.perf_counter() - start
        done.set()
        await asyncio.gather(*probes)
    return {
        "status": status,
        "batch_s": round(batch_s, 1),
        "healthz": summary(healthz),
        "events": {**summary(events), "statuses": statuses},
        "idle": idle,
    }


async def measure(source: Path, backend: str, redis_url: str) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    prefix = f"measure-{uuid.uuid4().hex[:8]}"
    store_url = (
        f"sqlite:///{tmp / 'budbringer.db'}"
        if backend == "sqlite"
        else f"{redis_url}{'&' if '?' in redis_url else '?'}prefix={prefix}"
    )
    env = gateway_env(source, tmp, store_url)
    cli = [sys.executable, "-m", "gateway.cli"]
    created = subprocess.run(
        [*cli, "tenants", "create", "Måling"], env=env, cwd=tmp, capture_output=True, text=True
    )
    found = re.search(r"api key:\s+(\S+)", created.stdout)
    assert found, created.stderr
    server = subprocess.Popen([*cli, "serve", "--no-workers"], env=env, cwd=tmp)
    try:
        result = await during_batch(f"http://127.0.0.1:{env['BUDBRINGER_PORT']}", found[1])
    finally:
        server.terminate()
        server.wait()
        if backend == "redis":
            forget(redis_url, prefix)
    return {"backend": backend, **result}


def forget(redis_url: str, prefix: str) -> None:
    """Delete every key of this measurement's prefix."""
    with redis.Redis.from_url(redis_url.split("?")[0]) as client:
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", default=str(ROOT), help="checkout to run")
    parser.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    source = Path(args.source).resolve()
    print(json.dumps(asyncio.run(measure(source, args.backend, args.redis_url))))


if __name__ == "__main__":
    main()
