"""The image: production by default, and a healthcheck that asks the configured port."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from pathlib import Path

from aiohttp.test_utils import TestClient

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


def healthcheck_code() -> str:
    [line] = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("HEALTHCHECK")]
    command = shlex.split(line.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"]
    return command[2]


async def run_healthcheck(port: int) -> int:
    env = {**os.environ, "BUDBRINGER_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", healthcheck_code(), env=env, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(proc.wait(), timeout=20)


async def test_the_healthcheck_asks_the_port_the_gateway_listens_on(
    app_client: TestClient,
) -> None:
    port = app_client.server.port
    assert port is not None and port != 8080
    assert await run_healthcheck(port) == 0


def test_the_image_runs_in_production() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ENV BUDBRINGER_ENVIRONMENT=production", text, re.M)
