"""Contract: a webhook change is captured atomically with the fact it reports.

A crash is injected right after the store call that records the fact: the process
does nothing more (the next store call dies). After a restart and the retry the
platform's side of the contract must hold: the fact is stored once and its change
is in the feed once; neither is lost, nothing is doubled.

Before this test, an absence report that reached no staff stored its record in one
transaction and recorded ``absence.unrouted`` in a second (``webhooks.emit``): a
crash in between lost the change for good, since the retry found the report known.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.absence import Absences
from gateway.clock import ManualClock
from gateway.constants import WEBHOOK_ABSENCE_UNROUTED
from gateway.models import AbsenceReported, DirectoryBatch, Tenant, WebhookEndpoint
from gateway.settings import Settings
from gateway.store import Store

from .builders import child, guardian, rel, unit
from .conftest import Backend

T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
A = "tenant-a"


class Crash(BaseException):
    """The process dies (BaseException: no handler of ours catches it)."""


class CrashAfter:
    """The store as the flow sees it, dying on the first call after ``fact``."""

    def __init__(self, store: Store, fact: str) -> None:
        self._store = store
        self._fact = fact
        self._armed = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if not callable(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self._armed:
                raise Crash(f"crashed before {name}")
            result = await method(*args, **kwargs)
            if name == self._fact:
                self._armed = True
            return result

        return call


def report() -> AbsenceReported:
    return AbsenceReported.model_validate(
        {
            "id": "rep-1",
            "type": "absence.reported",
            "data": {"child_id": "c1", "guardian_id": "p1", "date": "2026-11-30", "kind": "sick"},
        }
    )


async def prepare(store: Store) -> None:
    await store.create_tenant(
        Tenant(id=A, name="Skole A", api_key_hash="h", webhook_secret="whsec_x", created_at=T0)
    )
    # No staff at the unit: the report is unrouted.
    await store.apply_directory(
        A,
        DirectoryBatch(
            units=[unit("u1")],
            persons=[child("c1", units=("u1",)), guardian("p1")],
            relations=[rel("c1", "p1")],
        ),
    )
    await store.create_webhook_endpoint(
        WebhookEndpoint(
            id="ep1",
            tenant_id=A,
            url="https://platform.example/hook",
            event_types=[WEBHOOK_ABSENCE_UNROUTED],
            secret="whsec_" + "A" * 32,
            created_at=T0,
            updated_at=T0,
        )
    )


async def test_a_crash_after_an_unrouted_report_loses_neither_record_nor_change(
    backend: Backend,
) -> None:
    settings = Settings(store_url="sqlite:///unused.db")
    async with backend.open() as store:
        await prepare(store)
        crashing = Absences(CrashAfter(store, "claim_absence"), ManualClock(T0), settings)  # type: ignore[arg-type]
        with pytest.raises(Crash):
            await crashing.report(A, report(), "hash-1")
    async with backend.open() as store:  # the restart; the platform retries the event
        await Absences(store, ManualClock(T0), settings).report(A, report(), "hash-1")
        record = await store.find_absence(A, event_id="rep-1")
        assert record is not None
        changes, _ = await store.changes_since(0, 100)
        unrouted = [c for c in changes if c.type == WEBHOOK_ABSENCE_UNROUTED]
        assert len(unrouted) == 1
        assert unrouted[0].data["message_id"] == record.message_id
        assert unrouted[0].data["reason"] == "no_staff"
