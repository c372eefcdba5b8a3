"""Redis commands a scenario cost, from ``INFO commandstats`` before and after.

Redis counts the commands a Lua script runs (``redis.call``) in commandstats as well
as the ``EVALSHA`` that ran it, so the total includes the scripts' inner calls, and the
script calls alone are the round trips that ran a script. The figures are for the
whole server: on a shared Redis, other clients' commands are counted too (measure
against a Redis of the benchmark's own, ``--redis-url``).
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
    calls: dict[str, int] = field(default_factory=dict, compare=False)  # per command

    def __sub__(self, other: CommandCounts) -> CommandCounts:
        calls = {k: v - other.calls.get(k, 0) for k, v in self.calls.items()}
        return CommandCounts(
            self.total - other.total,
            self.scripts - other.scripts,
            {k: v for k, v in calls.items() if v},
        )

    def top(self, per: int, n: int = 8) -> dict[str, float]:
        """The ``n`` most called commands, calls per ``per`` (deliveries)."""
        ranked = sorted(self.calls.items(), key=lambda kv: -kv[1])[:n]
        return {name: round(calls / max(per, 1), 2) for name, calls in ranked}


def counts_of(commandstats: dict[str, Any]) -> CommandCounts:
    """Sum ``INFO commandstats`` (as redis-py parses it: ``cmdstat_get: {calls: ..}``)."""
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
    return CommandCounts(total, scripts, calls_of)


async def snapshot(redis_url: str) -> CommandCounts:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        return counts_of(await client.info("commandstats"))
    finally:
        await client.aclose()
