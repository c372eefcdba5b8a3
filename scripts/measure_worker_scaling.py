"""Worker scaling on unshared CPU: ``budbringer bench --backend redis`` with 1 and then 2
gateway processes, each held to the same CPU budget (``--worker-cpu``, a CFS quota in a
cgroup of its own), alternated ``--repeat`` times.

The factor is the 1-process hand-over time over the 2-process one (the same deliveries,
so the throughput of 2 over that of 1). It also prints, per run, how often the budget
ran out (near 1: the budget was the limit), the cores the rest of the bench used
(sinks, redis-server, the bench process: they must fit beside the budgets) and the load
average before it. Not a test: ``make bench-scaling``. Needs a writable cgroup cpu
controller (root). Run from the repository root:

    .venv/bin/python -m scripts.measure_worker_scaling [--worker-cpu 0.25] [--children 4000]
        [--latency 50ms:300ms] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.bench.run import share_text


def bench(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, "-m", "gateway.cli", "bench", "--backend", "redis"]
    argv += ["--workers", str(workers), "--worker-cpu", str(args.worker_cpu)]
    argv += ["--children", str(args.children), "--absence-events", "100"]
    argv += ["--latency", args.latency]
    run = subprocess.run(argv, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        sys.exit(f"budbringer bench failed ({run.returncode}):\n{run.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker-cpu", type=float, default=0.25)
    parser.add_argument("--children", type=int, default=4000)
    parser.add_argument("--latency", default="0ms")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    seconds: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeat):
        for workers in (1, 2):
            load = Path("/proc/loadavg").read_text().split()[0]
            r = bench(workers, args)
            seconds[workers].append(r["handover_s"])
            print(
                f"{workers} worker(s) at {args.worker_cpu:g} core: {r['deliveries']} "
                f"deliveries handed over in {r['handover_s']:.2f} s "
                f"({r['deliveries_per_s']:.0f}/s), budget used up in "
                f"{share_text(r['worker_throttled'])} of periods, the rest used "
                f"{r['others_cores']:.2f} cores, lost {r['lost']} duplicates "
                f"{r['duplicates']}, load before {load}",
                flush=True,
            )
    factor = statistics.mean(seconds[1]) / statistics.mean(seconds[2])
    print(f"scaling: 2 workers / 1 worker = x{factor:.2f} (latency {args.latency})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
