"""A redis-server of the benchmark's own (``--backend redis`` without ``--redis-url``).

``INFO commandstats`` counts every client of a server; on a Redis shared with anything
else the benchmark's "commands per delivery" would include their commands. A private
server on a free port makes the figures the gateway's alone. It keeps nothing on disk
(no RDB, no AOF) and stops with the benchmark.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import IO

from gateway.bench.sinks import free_port, kill_group, spawn


def available() -> bool:
    """Whether a ``redis-server`` binary is on the PATH."""
    return shutil.which("redis-server") is not None


class RedisServer:
    """One redis-server child process; :meth:`start` returns its URL."""

    def __init__(self, work: Path, log: IO[bytes]) -> None:
        self.work = work
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> str:
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.work)]
        argv += ["--logfile", str(self.work / "redis.log")]
        # As docs/redis.md recommends: a delivery hash stays a compact listpack.
        argv += ["--hash-max-listpack-value", "512"]
        self.proc = spawn(argv, None, self.log)
        url = f"redis://127.0.0.1:{port}/0"
        await self._wait_ready(port)
        return url

    async def _wait_ready(self, port: int) -> None:
        for _ in range(200):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.write(b"PING\r\n")
            answer = await reader.readline()
            writer.close()
            if answer.startswith(b"+PONG"):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the benchmark's redis-server did not start in 10 s")

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None
