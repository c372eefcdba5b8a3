"""``budbringer bench --worker-cpu``: a CFS quota per gateway process (gateway/bench/cpu_quota.py).

The budget itself is checked on a real cgroup with a busy child process; that needs a
writable cpu controller (root). Elsewhere that test skips and says why, except under CI
(``CI=true``, as ``make test`` sets), whose machine runs as root: there it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.bench.cpu_quota import CpuQuotaError, CpuQuotas, check_fraction, hierarchies
from gateway.bench.run import cpu_seconds
from gateway.cli import main
from tests.bench_cli import CLEAN_UP_S, run_bench


def _writable() -> bool:
    return os.geteuid() == 0 and any(os.access(h.root, os.W_OK) for h in hierarchies())


needs_cgroups = pytest.mark.skipif(
    not _writable() and os.environ.get("CI", "").lower() != "true",
    reason="no writable cgroup cpu controller here (not root, or /sys/fs/cgroup read-only)",
)


@pytest.mark.parametrize("fraction", [0.0, 0.001, -0.5, (os.cpu_count() or 1) + 1])
def test_a_budget_outside_one_percent_to_the_whole_machine_is_refused(fraction: float) -> None:
    with pytest.raises(CpuQuotaError, match="--worker-cpu is a fraction of one core"):
        check_fraction(fraction)


def test_the_bench_refuses_a_bad_budget_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "--backend", "redis", "--workers", "2", "--worker-cpu", "0"]) == 2
    assert "--worker-cpu is a fraction of one core" in capsys.readouterr().err


def test_without_a_cpu_controller_it_says_what_is_missing(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    with pytest.raises(CpuQuotaError, match="no cgroup hierarchy with the cpu controller"):
        CpuQuotas.create(0.25, mounts)


def test_an_unwritable_hierarchy_is_named_with_the_reason(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    missing = tmp_path / "not-mounted"  # mkdir under it fails as on a read-only mount
    mounts.write_text(f"cgroup {missing} cgroup rw,cpu,cpuacct 0 0\n")
    with pytest.raises(CpuQuotaError) as raised:
        CpuQuotas.create(0.25, mounts)
    assert "writable cgroup cpu controller" in str(raised.value)
    assert f"{missing} (cgroup v1)" in str(raised.value)


@pytest.mark.slow
@needs_cgroups
def test_a_confined_process_runs_at_most_its_budget_and_the_groups_go_again() -> None:
    quotas = CpuQuotas.create(0.2)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        group = quotas.confine(busy.pid, "busy")
        quotas.limit()
        where = f":/{group.relative_to(quotas.hierarchy.root)}\n"
        assert where in Path(f"/proc/{busy.pid}/cgroup").read_text()
        before, started = cpu_seconds(busy.pid), time.monotonic()
        time.sleep(2.0)
        share = (cpu_seconds(busy.pid) - before) / (time.monotonic() - started)
        periods, throttled = quotas.periods()
    finally:
        busy.kill()
        busy.wait()
        left = quotas.remove()
    assert 0 < share <= 0.2 * 1.25  # a tick of /proc/stat's resolution either way
    assert periods > 0 and throttled / periods > 0.5  # it wanted more than its budget
    assert left == []
    assert not quotas.top.exists()


@pytest.mark.slow
@needs_cgroups
def test_a_process_still_running_is_moved_out_so_its_group_can_go() -> None:
    quotas = CpuQuotas.create(0.5)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        quotas.confine(sleeper.pid, "sleeper")
        assert quotas.remove() == []
        assert not quotas.top.exists()
        assert sleeper.poll() is None  # moved, not killed
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
@needs_cgroups
@pytest.mark.timeout(150 + CLEAN_UP_S + 30)
def test_the_bench_holds_two_workers_to_their_budget_and_removes_the_groups() -> None:
    argv = ["--children", "200", "--absence-events", "20", "--timeout", "60"]
    argv += ["--backend", "redis", "--workers", "2", "--worker-cpu", "0.5"]
    run = run_bench(argv, timeout=150)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert (result["lost"], result["duplicates"]) == (0, 0)
    assert result["worker_cpu"] == 0.5
    assert 0 <= result["worker_throttled"] <= 1  # periods were counted in both groups
    assert result["others_cores"] > 0
    assert "each gateway process limited to 0.5 of a core" in run.stdout
    made = [line for line in run.stderr.splitlines() if "of a core once set up" in line]
    assert len(made) == 1
    top = Path(made[0].rsplit(" ", 1)[1].rstrip(")"))
    assert not top.exists()


@needs_cgroups
def test_the_groups_of_a_killed_benchmark_go_with_the_next_one() -> None:
    """A bench killed outright (SIGKILL) could not remove its groups; the next one does,
    so their high weight does not outlive them."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    first = CpuQuotas.create(0.5)
    stale = first.hierarchy.root / f"budbringer-bench-{dead.pid}-abcdef"
    (stale / "serve-0").mkdir(parents=True)
    try:
        second = CpuQuotas.create(0.5)
        assert not stale.exists()
        assert first.top.exists()  # its process (this one) is alive: kept
        second.remove()
    finally:
        first.remove()
        for group in (stale / "serve-0", stale):
            if group.exists():
                group.rmdir()
