"""What the SQLite store writes per delivery (issue 18). It indexes provider ids and
addresses of the lookup channels alone (gateway.constants.LOOKUP_CHANNELS), and a
database of an older version, whose indexes held every channel's rows, loses those on
open and still answers every lookup: an SMS callback by provider id, an inbound SMS by
address. The writer checkpoints the WAL less often than SQLite's default."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.models import DeliveryStatus
from gateway.store.sqlite import SqliteStore
from tests.contract.builders import T0, A, at, delivery, message

OLD_INDEXES = (
    "CREATE INDEX deliveries_by_provider_id ON deliveries (channel, provider_id) "
    "WHERE provider_id IS NOT NULL",
    "CREATE INDEX deliveries_by_address ON deliveries (channel, address, created_at) "
    "WHERE address IS NOT NULL",
)


def lookup_indexes(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'deliveries' AND (name LIKE 'deliveries_by_provider_id%' "
            "OR name LIKE 'deliveries_by_address%')"
        ).fetchall()
    conn.close()
    return dict(rows)


def make_older_database(path: Path) -> None:
    """This version's file with the older version's indexes in place of its own."""
    with sqlite3.connect(path) as conn:
        for name in lookup_indexes(path):
            conn.execute(f'DROP INDEX "{name}"')
        for statement in OLD_INDEXES:
            conn.execute(statement)
    conn.close()


async def test_an_older_database_keeps_its_lookups_with_the_lookup_indexes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    msg = message()
    sms = delivery(msg, "p1", "sms", address="+4791234567")
    push = delivery(msg, "p1", "push", address="token-1")
    store = SqliteStore(path)
    await store.open()
    await store.add_deliveries([sms, push], [])
    await store.close()
    make_older_database(path)
    assert set(lookup_indexes(path)) == {"deliveries_by_provider_id", "deliveries_by_address"}

    store = SqliteStore(path)
    await store.open()
    try:
        for d, provider_id in ((sms, "SM1"), (push, "fcm-1")):
            assert await store.transition(d.id, DeliveryStatus.sent, at(1), provider_id=provider_id)
        found = await store.delivery_by_provider_id("sms", "SM1")
        assert found is not None and found.id == sms.id
        assert await store.delivery_by_provider_id("push", "fcm-1") is None
        latest = await store.latest_delivery_to(A, "sms", "+4791234567")
        assert latest is not None and latest.id == sms.id
        assert await store.tenant_for_address("sms", "+4791234567") == A
    finally:
        await store.close()

    indexes = lookup_indexes(path)
    assert set(indexes) == {"deliveries_by_provider_id_sms", "deliveries_by_address_sms"}
    assert all("channel IN ('sms')" in sql for sql in indexes.values())


async def test_rows_of_other_channels_stay_out_of_the_lookup_indexes(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    msg = message()
    rows = [
        delivery(msg, f"p{i}", channel, address=f"a{i}")
        for i, channel in enumerate(("sms", "push", "email"))
    ]
    store = SqliteStore(path)
    await store.open()
    try:
        await store.add_deliveries(rows, [])
        for i, d in enumerate(rows):
            await store.transition(d.id, DeliveryStatus.sent, T0, provider_id=f"pid{i}")
    finally:
        await store.close()
    # ANALYZE counts each index's entries (the first number of sqlite_stat1's stat).
    with sqlite3.connect(path) as conn:
        conn.execute("ANALYZE")
        stats = dict(conn.execute("SELECT idx, stat FROM sqlite_stat1").fetchall())
    conn.close()
    counts = {name: int(stats[name].split()[0]) for name in lookup_indexes(path)}
    # The SMS delivery's address and provider id alone.
    assert counts == {"deliveries_by_provider_id_sms": 1, "deliveries_by_address_sms": 1}


async def test_the_writer_leaves_the_wal_unchecked_past_a_thousand_pages(tmp_path: Path) -> None:
    """Commits past SQLite's default of 1,000 WAL pages are not checkpointed yet (the
    writer checkpoints every WAL_AUTOCHECKPOINT_PAGES), and all of them read back."""
    path = tmp_path / "store.db"
    msg = message()
    rows = [delivery(msg, f"p{i}", "push", address=f"token-{i}" * 40) for i in range(2000)]
    store = SqliteStore(path)
    await store.open()
    try:
        for i in range(0, len(rows), 100):
            await store.add_deliveries(rows[i : i + 100], [])
        with sqlite3.connect(path) as conn:
            # A passive checkpoint reports the frames in the WAL: none were reset.
            _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        conn.close()
        assert frames > 1000
        assert len(await store.list_deliveries(A, msg.id)) == len(rows)
    finally:
        await store.close()
