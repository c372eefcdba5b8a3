"""Statements, rows and writer time per delivery in the SQLite store (issue 18).

Drives the send path's store calls the way a broadcast does — plan batches of
deliveries with their send jobs, claims of a dispatch round, the claimed deliveries
read back, outcome batches — against a fresh SQLite file, and counts what the writer
connection runs. Run from a checkout: ``python -m scripts.store_writes [--deliveries N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.constants import JOB_SEND
from gateway.models import Delivery, DeliveryStatus, Job, Role
from gateway.store.records import SendOutcome
from gateway.store.sqlite import SqliteStore

CHANNELS = ("push", "sms", "email")


def _deliveries(n: int, now: datetime) -> tuple[list[Delivery], list[Job]]:
    deliveries, jobs = [], []
    for i in range(n):
        channel = CHANNELS[i % 3]
        d = Delivery(
            id=f"d{i:08d}-0123456789abcdef0123",
            tenant_id="t1",
            message_id="m1",
            recipient_id=f"p{i // 3:07d}",
            recipient_role=Role.guardian,
            channel=channel,
            target="dev" if channel == "push" else "",
            address=f"addr{i}",
            language="nb",
            child_ids=[f"c{i // 3}"],
            context={
                "children": ["Kari"],
                "unit": "Skole",
                "sender": None,
                "category": "emergency",
            },
            status=DeliveryStatus.queued,
            created_at=now,
            updated_at=now,
        )
        deliveries.append(d)
        jobs.append(
            Job(
                id=f"{JOB_SEND}:{d.id}",
                tenant_id="t1",
                kind=JOB_SEND,
                ref=d.id,
                due_at=now,
                urgent=True,
            )
        )
    return deliveries, jobs


def _kind(sql: str) -> str:
    words = re.sub(r"\s+", " ", sql.strip()).split(" ")
    head = " ".join(words[:3]).upper()
    for table in ("deliveries", "status_history", "jobs", "webhook_feed"):
        if table in sql:
            return f"{head.split(' ')[0]} {table}"
    return head


async def main(n: int, claim: int, outcome_batch: int, extra: list[str], count: bool) -> None:
    path = Path(tempfile.mkdtemp()) / "store.db"
    store = SqliteStore(path)
    await store.open()
    writer = store._db._writer
    assert writer is not None
    for sql in extra:
        await writer.execute(sql)
    counts: collections.Counter[str] = collections.Counter()

    def trace(sql: str) -> None:
        counts[_kind(sql)] += 1

    if count:
        await writer._execute(writer._conn.set_trace_callback, trace)
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    deliveries, jobs = _deliveries(n, now)
    spent: collections.Counter[str] = collections.Counter()
    reader = store._db._reader
    assert reader is not None

    async def cpu(conn: Any) -> float:
        # CPU time of the connection's own thread (aiosqlite runs each call there).
        return float(await conn._execute(time.thread_time))

    start = await cpu(writer)
    for i in range(0, n, 1000):
        t = await cpu(writer)
        await store.add_deliveries(deliveries[i : i + 1000], jobs[i : i + 1000])
        spent["plan"] += await cpu(writer) - t
    done = 0
    while done < n:
        t = await cpu(writer)
        claimed = await store.claim_jobs([JOB_SEND], claim, now + timedelta(seconds=1), 60)
        spent["claim"] += await cpu(writer) - t
        t = await cpu(reader)
        found = await store.get_deliveries([j.ref for j in claimed])
        spent["read (reader)"] += await cpu(reader) - t
        outcomes = [
            SendOutcome(j.id, j.ref, DeliveryStatus.sent, now, provider_id=f"pid-{j.ref}")
            for j in claimed
            if j.ref in found
        ]
        for k in range(0, len(outcomes), outcome_batch):
            t = await cpu(writer)
            await store.finish_sends(outcomes[k : k + outcome_batch])
            spent["outcomes"] += await cpu(writer) - t
        done += len(claimed)
    total = await cpu(writer) - start
    await store.close()
    print(f"{n} deliveries, claims of {claim}, outcome batches of {outcome_batch}")
    for name, seconds in spent.items():
        print(f"  {name:14s} {seconds * 1e6 / n:8.1f} µs CPU per delivery")
    print(f"  writer total   {total * 1e6 / n:8.1f} µs CPU per delivery")
    statements = sum(counts.values())
    print(f"statements (with trigger bodies): {statements / n:.2f} per delivery")
    for kind, count in counts.most_common():
        print(f"  {kind:28s} {count / n:6.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=15000)
    parser.add_argument("--claim", type=int, default=144)
    parser.add_argument("--outcome-batch", type=int, default=48)
    parser.add_argument("--sql", action="append", default=[], help="run first (experiments)")
    parser.add_argument("--no-count", action="store_true", help="no statement trace")
    args = parser.parse_args(sys.argv[1:])
    asyncio.run(main(args.deliveries, args.claim, args.outcome_batch, args.sql, not args.no_count))
