"""How long /healthz takes while a 100,000-person directory batch is posted and applied.

The gateway runs in its own process (SQLite, API only); this process posts the batch
of ``tests/test_big_batch.py`` and asks /healthz every 10 ms until the batch is
answered, then prints one line of JSON (max, p99 and median latency). Not a test:
the figures depend on the machine. Run from the repository root:

    .venv/bin/python -m scripts.measure_batch_latency [SOURCE_ROOT]

``SOURCE_ROOT`` (default: this checkout) is put on the gateway's PYTHONPATH, so an
older checkout can be measured the same way (its body limit is raised to 64 MiB).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.test_big_batch import big_batch

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def measure(source: Path) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDBRINGER_")}
    env.update(
        PYTHONPATH=str(source),
        BUDBRINGER_STORE_URL=f"sqlite:///{tmp / 'budbringer.db'}",
        BUDBRINGER_SECRET_KEY="measure-secret-key-that-is-long-enough-0123",
        BUDBRINGER_PORT=str(port),
        BUDBRINGER_OUTBOX_DIR=str(tmp / "outbox"),
        BUDBRINGER_LOG_LEVEL="WARNING",
        BUDBRINGER_MAX_BODY_BYTES=str(64 * 1024 * 1024),
    )
    cli = [sys.executable, "-m", "gateway.cli"]
    created = subprocess.run(
        [*cli, "tenants", "create", "Måling"], env=env, cwd=tmp, capture_output=True, text=True
    )
    found = re.search(r"api key:\s+(\S+)", created.stdout)
    assert found, created.stderr
    server = subprocess.Popen([*cli, "serve", "--no-workers"], env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            body = big_batch(last_phone="+4790012345")
            latencies: list[float] = []
            done = asyncio.Event()

            async def poll() -> None:
                while not done.is_set():
                    start = time.perf_counter()
                    async with http.get(f"{url}/healthz") as resp:
                        await resp.read()
                    latencies.append(time.perf_counter() - start)
                    await asyncio.sleep(0.01)

            poller = asyncio.create_task(poll())
            start = time.perf_counter()
            headers = {"Authorization": f"Bearer {found[1]}", "Content-Type": "application/json"}
            async with http.post(f"{url}/v1/directory", data=body, headers=headers) as resp:
                status = resp.status
            batch_s = time.perf_counter() - start
            done.set()
            await poller
    finally:
        server.terminate()
        server.wait()
    latencies.sort()
    return {
        "status": status,
        "batch_s": round(batch_s, 1),
        "healthz_answers": len(latencies),
        "max_ms": round(latencies[-1] * 1000),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000),
        "median_ms": round(latencies[len(latencies) // 2] * 1000),
    }


if __name__ == "__main__":
    source = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    print(json.dumps(asyncio.run(measure(source))))
