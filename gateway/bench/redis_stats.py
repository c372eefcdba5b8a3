"""Redis commands a scenario cost, from ``INFO commandstats`` before and after.

Redis counts the commands a Lua script runs (``redis.call``) in commandstats as well
as the ``EVALSHA`` that ran it, so the total includes the scripts' inner calls, and the
script calls alone are the round trips that ran a script. Round trips of any kind are
counted as the server's socket reads (``INFO stats`` ``total_reads_processed``): one per
command or pipeline a client sends, more when a long pipeline arrives in several reads,
so an upper bound. The figures are for the whole server: on a shared Redis, other
clients' commands are counted too (the benchmark starts a Redis of its own unless given
``--redis-url``: gateway/bench/redis_server.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")
OWN_COMMANDS = ("info",)  # the snapshots themselves


@dataclass(frozen=True)
class CommandCounts:
    total: int = 0  # every command, scripts' inner calls included
    scripts: int = 0  # EVALSHA and friends: one round trip each
    reads: int = 0  # socket reads: round trips of any kind (upper bound)
    cpu_s: float = 0.0  # the server's CPU seconds (user + system, INFO cpu)
    calls: dict[str, int] = field(default_factory=dict, compare=False)  # per command

    def __sub__(self, other: CommandCounts) -> CommandCounts:
        calls = {k: v - other.calls.get(k, 0) for k, v in self.calls.items()}
        return CommandCounts(
            self.total - other.total,
            self.scripts - other.scripts,
            self.reads - other.reads,
            self.cpu_s - other.cpu_s,
            {k: v for k, v in calls.items() if v},
        )

    def top(self, per: int, n: int = 12) -> dict[str, float]:
        """The ``n`` most called commands, calls per ``per`` (deliveries)."""
        ranked = sorted(self.calls.items(), key=lambda kv: -kv[1])[:n]
        return {name: round(calls / max(per, 1), 2) for name, calls in ranked}


def counts_of(commandstats: dict[str, Any], reads: int = 0, cpu_s: float = 0.0) -> CommandCounts:
    """Sum ``INFO commandstats`` (as redis-py parses it: ``cmdstat_get: {calls: ..}``);
    ``reads`` is ``total_reads_processed`` of ``INFO stats``, ``cpu_s`` the server's
    CPU seconds from ``INFO cpu``."""
    total = scripts = 0
    calls_of: dict[str, int] = {}
    for key, value in commandstats.items():
        name = key.removeprefix("cmdstat_").lower()
        calls = int(value.get("calls", 0)) if isinstance(value, dict) else 0
        if name in OWN_COMMANDS:
            continue
        total += calls
        calls_of[name] = calls
        if name in SCRIPT_COMMANDS:
            scripts += calls
    return CommandCounts(total, scripts, reads, cpu_s, calls_of)


async def snapshot(redis_url: str) -> CommandCounts:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        reads = int((await client.info("stats")).get("total_reads_processed", 0))
        cpu = await client.info("cpu")
        cpu_s = float(cpu.get("used_cpu_user", 0)) + float(cpu.get("used_cpu_sys", 0))
        return counts_of(await client.info("commandstats"), reads, cpu_s)
    finally:
        await client.aclose()
