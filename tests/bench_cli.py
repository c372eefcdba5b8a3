"""``budbringer bench`` run by a test in a process of its own, and stopped cleanly.

``subprocess.run(timeout=...)`` kills its child outright, so the bench's own clean-up
(its gateways, sinks and redis-server, each in a session of its own, and the cgroups
of ``--worker-cpu``) never runs and they outlive the test. Past its time the bench
gets SIGTERM instead, which it turns into that clean-up, and only then, if it still
runs, SIGKILL.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CLEAN_UP_S = 30.0  # what the bench gets to stop what it started after SIGTERM


def run_bench(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """The bench's result; the test fails (after the clean-up) past ``timeout`` seconds.
    The test's own pytest timeout must exceed ``timeout + CLEAN_UP_S``."""
    command = [sys.executable, "-m", "gateway.cli", "bench", *argv]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=CLEAN_UP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"the bench did not finish in {timeout:g} s:\n{err[-2000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)
