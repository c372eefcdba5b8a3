"""A small run of ``budbringer bench`` so the benchmark cannot rot (the full run is not a test).

The whole pipeline runs as it does in ``make bench``: sinks and the gateway in processes
of their own, the directory and devices through the API, the emergency broadcast, the
absence path and the ceiling.
"""

from __future__ import annotations

import json
import platform

import pytest

from gateway.bench.redis_stats import CommandCounts, counts_of
from gateway.bench.run import JSON_KEYS, percentile
from gateway.bench.synth import generate
from gateway.cli import main
from tests.bench_cli import CLEAN_UP_S, run_bench

pytestmark = pytest.mark.slow


@pytest.mark.timeout(90 + CLEAN_UP_S + 30)
def test_a_small_municipality_end_to_end() -> None:
    argv = ["--children", "300", "--absence-events", "30", "--timeout", "40"]
    run = run_bench(argv, timeout=90)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(JSON_KEYS) <= set(result)
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    assert result["backend"] == "sqlite"
    assert result["children"] == 300
    expected = generate(300, 1).expected()
    assert result["deliveries"] == expected["push"] + expected["sms"] + expected["email"]
    assert result["inapp"] == expected["inapp"]
    assert result["seconds"] > 0  # its speed is the benchmark's figure, not a test
    # The loop thread's CPU over the hand-over: some, and at most about one core.
    assert 0 < result["loop_busy"] < 2
    # and how long it waited for a core meanwhile (None where the kernel keeps no schedstat)
    assert result["loop_waiting"] is None or 0 <= result["loop_waiting"] < 2
    assert 0 < result["absence_p50_ms"] <= result["absence_p99_ms"]
    assert result["absence_kind"].startswith(("absence.recorded", "absence-like"))
    assert all(result[f"{c}_ratio"] > 0 for c in ("push", "sms", "email"))
    assert "Emergency to every unit" in run.stdout
    assert result["scenario"] == "emergency"
    assert result["handover_s"] == result["seconds"] and result["ratio"] > 0
    assert result["cpu_s_per_1000"] > 0
    assert result["ceiling_cpu_s_per_1000"] > 0
    assert result["redis_commands_per_delivery"] is None  # SQLite
    assert result["python"] == platform.python_version()  # figures differ between versions


def test_sqlite_refuses_more_than_one_gateway_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--workers", "2"]) == 2
    assert "one writer" in capsys.readouterr().err


def test_the_municipality_is_deterministic_and_asker_sized() -> None:
    town = generate(12_000, seed=7)
    again = generate(12_000, seed=7)
    assert town.children == again.children and town.relations == again.relations
    assert [g.id for g in town.guardians] == [g.id for g in again.guardians]
    assert generate(12_000, seed=8).relations != town.relations
    assert len(town.children) == 12_000
    assert 18_000 <= len(town.guardians) <= 22_000
    assert sum(u["kind"] == "school" for u in town.units) == 25
    assert sum(u["kind"] == "kindergarten" for u in town.units) == 30
    with_app = sum(g.device_token is not None for g in town.guardians) / len(town.guardians)
    assert 0.77 < with_app < 0.83
    # siblings share guardians; some children have one, some a third without foreldreansvar
    per_child: dict[str, list[bool]] = {}
    for r in town.relations:
        per_child.setdefault(r["child_id"], []).append(r["parental_responsibility"])
    assert any(flags == [True] for flags in per_child.values())
    assert any(len(flags) == 3 and flags.count(False) == 1 for flags in per_child.values())
    guardians_of = {}
    for r in town.relations:
        guardians_of.setdefault(r["guardian_id"], set()).add(r["child_id"])
    assert any(len(children) > 1 for children in guardians_of.values())


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) == 0.0


@pytest.mark.timeout(150 + CLEAN_UP_S + 30)
def test_the_mixed_scenario_on_redis_with_two_workers_and_latency() -> None:
    """Urgent work posted during a general broadcast, every figure in the JSON line."""
    argv = ["--children", "200", "--absence-events", "20", "--timeout", "60"]
    argv += ["--scenario", "mixed", "--backend", "redis", "--workers", "2", "--latency", "5ms"]
    run = run_bench(argv, timeout=150)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(JSON_KEYS) <= set(result)
    assert result["scenario"] == "mixed"
    assert (result["lost"], result["duplicates"]) == (0, 0)
    assert result["broadcast_deliveries"] > 0 and result["emergency_deliveries"] > 0
    assert result["absence_events"] == 20
    assert 0 < result["urgent_p50_ms"] <= result["urgent_p99_ms"]
    assert result["handover_s"] > 0 and result["ratio"] > 0
    assert result["cpu_s_per_1000"] > 0
    assert result["ceiling_cpu_s_per_1000"] > 0
    # INFO commandstats delta: scripts' inner calls included, at least one script call
    assert result["redis_commands_per_delivery"] >= result["redis_scripts_per_delivery"] > 0
    assert result["latency"] == "5ms"
    assert "Posted during the broadcast" in run.stdout


def test_commandstats_are_summed_with_scripts_apart() -> None:
    stats = {
        "cmdstat_evalsha": {"calls": 3, "usec": 10},
        "cmdstat_hset": {"calls": 20},
        "cmdstat_info": {"calls": 5},
    }
    counts = counts_of(stats)
    assert (counts.total, counts.scripts) == (23, 3)
    assert counts - counts_of({"cmdstat_hset": {"calls": 3}}) == CommandCounts(20, 3)
