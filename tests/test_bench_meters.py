"""What the benchmark reads off the gateway's processes in ``/proc`` (gateway/bench/run.py).

The run-queue wait is checked with real processes: three busy ones on one core each
run about a third of the time and wait for the core the rest; a sleeping one does not
wait for a core at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.bench.run import Meters, run_queue_seconds

has_schedstat = pytest.mark.skipif(
    not Path("/proc/self/schedstat").exists(),
    reason="this kernel keeps no schedstat (CONFIG_SCHED_INFO): the figure reads None",
)
# one core this process may use (a cpuset may leave out core 0)
CORE = min(os.sched_getaffinity(0))
BUSY_ON_ONE_CORE = f"import os; os.sched_setaffinity(0, {{{CORE}}})\nwhile True: pass"


@has_schedstat
def test_three_busy_processes_on_one_core_each_wait_for_it() -> None:
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_ON_ONE_CORE]) for _ in range(3)]
    sleeping = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)  # both started and pinned
        before = [run_queue_seconds(p.pid) for p in (*busy, sleeping)]
        started = time.monotonic()
        time.sleep(1.5)
        after = [run_queue_seconds(p.pid) for p in (*busy, sleeping)]
        seconds = time.monotonic() - started
    finally:
        for process in (*busy, sleeping):
            process.kill()
            process.wait()
    waited = [(a or 0.0) - (b or 0.0) for a, b in zip(after, before, strict=True)]
    assert all(value is not None for value in (*before, *after))
    # Sharing one core, each was ready the whole time and ran about a third of it (less
    # where other work shares that core too): its time on the core is not the figure.
    assert all(0.5 * seconds < share < 1.05 * seconds for share in waited[:3])
    assert waited[3] < 0.05 * seconds


def test_a_process_that_is_gone_has_no_figure() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert run_queue_seconds(gone.pid) is None


def test_a_wait_unknown_on_either_side_stays_unknown() -> None:
    later = Meters(cpu_s=5.0, loop_cpu_s=3.0, loop_wait_s=1.5)
    assert (later - Meters(cpu_s=1.0, loop_cpu_s=1.0, loop_wait_s=0.5)).loop_wait_s == 1.0
    assert (later - Meters(loop_wait_s=None)).loop_wait_s is None
    assert (Meters(loop_wait_s=None) - later).loop_wait_s is None
