"""Store contract: a batch of send outcomes (``finish_sends``) ends exactly as the same
outcomes committed one at a time (``finish_send``), whatever the batch holds — several
moves of one delivery, a repeated outcome, a move backwards, a provider id on a refused
move. The Redis backend applies a batch in one script call per tenant and sums the
counters per call; this is the check that summing changes nothing.
"""

from __future__ import annotations

from datetime import datetime

from gateway.models import Delivery, DeliveryStatus
from gateway.store import SendOutcome, Store

from .builders import accepted, at, delivery, job, message

S = DeliveryStatus
# (recipient, status, at seconds, detail, reason, provider id, segments), in commit order
STEPS: list[tuple[str, DeliveryStatus, float, str | None, str | None, str | None, int | None]] = [
    ("p0", S.sending, 1, None, None, None, None),
    ("p0", S.sent, 2, None, None, "P0", 2),
    ("p0", S.delivered, 3, None, None, None, None),
    ("p1", S.sent, 2, None, None, "P1", 1),
    ("p1", S.sent, 2, None, None, "P1", 1),  # the same outcome again
    ("p2", S.failed, 2, "bad number", "invalid_address", None, None),
    ("p2", S.sent, 3, None, None, "P2", None),  # backwards: refused
    ("p3", S.delivered, 2, None, None, None, None),
    ("p3", S.sent, 3, None, None, "P3", None),  # behind: refused, its provider id kept
    ("p4", S.sending, 1, None, None, None, None),
]
RECIPIENTS = sorted({step[0] for step in STEPS})


async def _deliveries(store: Store, event: str) -> dict[str, Delivery]:
    msg = await accepted(store, message(event=event))
    ds = {p: delivery(msg, p, "sms", address=f"+47912345{n:02}") for n, p in enumerate(RECIPIENTS)}
    await store.add_deliveries(list(ds.values()), [job(f"send:{d.id}") for d in ds.values()])
    return ds


def _outcomes(ds: dict[str, Delivery]) -> list[SendOutcome]:
    return [
        SendOutcome(f"send:{ds[p].id}", ds[p].id, status, at(t), detail, reason, pid, segs)
        for p, status, t, detail, reason, pid, segs in STEPS
    ]


async def _state(store: Store, ds: dict[str, Delivery]) -> list[tuple[object, ...]]:
    ids = [ds[p].id for p in RECIPIENTS]
    stored = await store.get_deliveries(ids)
    history = await store.history(ids)
    rows: list[tuple[object, ...]] = []
    for p in RECIPIENTS:
        d = stored[ds[p].id]
        changes: list[tuple[DeliveryStatus, datetime, str | None]] = [
            (c.status, c.at, c.detail) for c in history[d.id]
        ]
        rows.append((p, d.status, d.reason, d.provider_id, d.segments, d.updated_at, changes))
    return rows


async def test_a_batch_of_outcomes_ends_as_one_at_a_time(store: Store) -> None:
    batched, single = await _deliveries(store, "e1"), await _deliveries(store, "e2")
    claimed = await store.claim_jobs(["send"], 100, at(0), 30)
    assert len(claimed) == 2 * len(RECIPIENTS)

    moved = await store.finish_sends(_outcomes(batched))
    moved_one_by_one = 0
    for o in _outcomes(single):
        moved_one_by_one += await store.finish_send(
            o.job_id,
            o.delivery_id,
            o.status,
            o.at,
            detail=o.detail,
            reason=o.reason,
            provider_id=o.provider_id,
            segments=o.segments,
        )

    assert moved == moved_one_by_one == 7
    assert await _state(store, batched) == await _state(store, single)
    counts = await store.count_by_status(batched["p0"].tenant_id, batched["p0"].message_id)
    assert counts == await store.count_by_status(single["p0"].tenant_id, single["p0"].message_id)
    assert counts == {"delivered": 2, "sent": 1, "failed": 1, "sending": 1}
    stats = await store.delivery_stats()
    assert stats == {("sms", status): 2 * n for status, n in counts.items()}
    assert await store.claim_jobs(["send"], 100, at(3600), 30) == []  # every job ended
