"""``budbringer bench``'s entry: runs a :class:`~gateway.bench.run.Bench` with the
scenarios it may run, prints the table and the JSON line.

It sits above both ``run`` (the bench and the emergency scenario) and ``mixed`` (the
scenario that drives a ``Bench``), so neither has to import the other's importer.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

from gateway.bench.cpu_quota import CpuQuotaError
from gateway.bench.mixed import run_mixed
from gateway.bench.run import Bench, BenchError, Options, table
from gateway.event_loop import run


async def _main(bench: Bench) -> dict[str, Any]:
    try:
        return await bench.run()
    finally:
        await bench.cleanup()


def run_bench(options: Options) -> dict[str, Any]:
    """Run the benchmark; always stop every process it started. Returns the result dict."""
    bench = Bench(options, mixed=run_mixed)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        # The ceiling client runs in this process: on the gateway's kind of loop.
        return run(_main(bench), options.event_loop)
    finally:
        signal.signal(signal.SIGTERM, previous)
        bench.kill_everything()


def main(options: Options) -> int:
    """Print the table and the JSON line; 0 if nothing was lost or duplicated."""
    try:
        result = run_bench(options)
    except (BenchError, CpuQuotaError) as exc:
        print(f"budbringer bench: {exc}", file=sys.stderr)
        return 2
    print(table(result))
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["lost"] == 0 and result["duplicates"] == 0 else 1
