"""Contract: every backend obeys the forward-only rule of gateway.models.can_transition,
for every (old, new) status pair, and for any sequence of moves (hypothesis). The Redis
scripts get the rule as a table generated from the same Python function, so this test
is what ties the two together."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.models import DeliveryStatus, can_transition
from gateway.store import Store

from .builders import A, at, delivery, message, plan_job
from .conftest import Backend

STATUSES = list(DeliveryStatus)
PAIRS = list(itertools.product(STATUSES, STATUSES))


async def test_every_status_pair_follows_can_transition(store: Store) -> None:
    msg = message(A, "ev-pairs")
    await store.accept_message(msg, plan_job(msg))
    made = {
        (old, new): delivery(msg, f"r-{old.value}-{new.value}", status=old) for old, new in PAIRS
    }
    await store.add_deliveries(list(made.values()), [])
    for (old, new), d in made.items():
        moved = await store.transition(d.id, new, at(1))
        assert moved == can_transition(old, new), (old, new)
        stored = await store.get_delivery(d.id)
        assert stored is not None
        assert stored.status == (new if moved else old), (old, new)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(moves=st.lists(st.sampled_from(STATUSES), min_size=1, max_size=8))
def test_any_sequence_of_moves_ends_where_the_rule_says(
    backend: Backend, moves: list[DeliveryStatus]
) -> None:
    expected = DeliveryStatus.planned
    for new in moves:
        if can_transition(expected, new):
            expected = new

    async def run() -> DeliveryStatus:
        async with backend.open() as store:
            msg = message(A, "ev-" + "-".join(m.value for m in moves))
            await store.accept_message(msg, plan_job(msg))
            d = delivery(msg, "r1")
            await store.add_deliveries([d], [])
            for i, new in enumerate(moves):
                await store.transition(d.id, new, at(i + 1))
            stored = await store.get_delivery(d.id)
            assert stored is not None
            return stored.status

    assert asyncio.run(run()) == expected
