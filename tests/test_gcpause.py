"""The collector of a gateway process (gateway/gcpause.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.gcpause import YOUNG_THRESHOLD, gc_paused, settle


@pytest.fixture
def restored() -> Iterator[None]:
    """Give the test process its collector back as it was."""
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    (gc.enable if enabled else gc.disable)()


@pytest.mark.usefixtures("restored")
def test_a_started_process_keeps_its_start_up_objects_out_of_collections() -> None:
    gc.unfreeze()
    made_at_start = [[n] for n in range(1000)]  # containers, tracked by the collector
    settle()
    assert gc.get_freeze_count() >= len(made_at_start)
    assert gc.get_threshold()[0] >= YOUNG_THRESHOLD
    # Cyclic garbage made afterwards is still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


@pytest.mark.usefixtures("restored")
def test_a_paused_collector_comes_back_after_nested_pauses() -> None:
    gc.enable()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
