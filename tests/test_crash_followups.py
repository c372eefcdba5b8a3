"""Issue 12: follow-ups are atomic with the outcome that causes them.

A crash is injected right after the store committed an outcome: the SQLite file is
copied at that instant (the backup API reads exactly the committed state), which is
what a ``kill -9`` there would leave. A fresh store on the copy must hold the follow-up
— the failover job of a failed send or callback, the ``message.reached`` and
``absence.explained`` webhook changes — and a fresh escalator must fail over from it.
Before, each follow-up was a second step after the commit, and the copy had none."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import create_app
from gateway.api.context import AppContext
from gateway.clock import ManualClock
from gateway.constants import JOB_ESCALATE
from gateway.escalation import Escalator
from gateway.models import AbsenceExplanation, AbsenceKind, DeliveryStatus, WebhookEndpoint
from gateway.settings import EscalationSettings, Settings, TwilioSettings
from gateway.store import SendOutcome, Store
from gateway.store.sqlite import SqliteStore
from gateway.tracker import ESCALATION_KEY, record_read
from tests.conftest import TenantCreds
from tests.peers.fcm import FcmServer
from tests.peers.smtp import SmtpPeer
from tests.peers.twilio import TwilioPeer
from tests.test_dispatcher import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC_URL,
    directory,
    family,
    make_rig,
)

PROJECT = "budbringer-test"


@pytest.fixture
async def peers() -> AsyncIterator[tuple[SmtpPeer, TwilioPeer, FcmServer]]:
    async with (
        SmtpPeer() as smtp,
        TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio,
        FcmServer(project_id=PROJECT) as fcm,
    ):
        yield smtp, twilio, fcm


class SnapshotAfter:
    """The real store; right after ``method`` returns, the database is copied to ``copy``
    (the state a crash at that instant leaves behind). Nothing else is changed."""

    def __init__(
        self,
        store: SqliteStore,
        source: Path,
        method: str,
        copy: Path,
        when: Callable[..., bool] = lambda *args, **kwargs: True,
    ) -> None:
        self._store = store
        self._source = source
        self._method = method
        self._when = when
        self.copy = copy
        self.taken = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._store, name)
        if name != self._method:
            return real

        async def then_snapshot(*args: Any, **kwargs: Any) -> Any:
            result = await real(*args, **kwargs)
            if self.taken == 0 and self._when(*args, **kwargs):
                self.snapshot()
                self.taken += 1
            return result

        return then_snapshot

    def snapshot(self) -> None:
        with sqlite3.connect(self._source) as src, sqlite3.connect(self.copy) as dst:
            src.backup(dst)


@asynccontextmanager
async def reopened(copy: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(copy))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def fail_over(store: Store, clock: ManualClock) -> int:
    """What the next start does with the escalate jobs it finds: run them."""
    escalator = Escalator(store, clock, EscalationSettings())
    jobs = await store.claim_jobs([JOB_ESCALATE], 100, clock.now(), 60)
    for job in jobs:
        await escalator.run(job)
    return len(jobs)


@pytest.fixture
def wrapped(store: Store, settings: Settings, tmp_path: Path) -> Callable[..., SnapshotAfter]:
    def wrap(method: str, when: Callable[..., bool] = lambda *a, **k: True) -> SnapshotAfter:
        return SnapshotAfter(
            cast(SqliteStore, store), settings.sqlite_path, method, tmp_path / "crashed.db", when
        )

    return wrap


async def test_a_crash_right_after_a_failed_send_keeps_its_failover(
    wrapped: Callable[..., SnapshotAfter],
    clock: ManualClock,
    tenant: TenantCreds,
    settings: Settings,
    peers: tuple[SmtpPeer, TwilioPeer, FcmServer],
    tmp_path: Path,
) -> None:
    smtp, twilio, fcm = peers

    def failure(outcomes: list[SendOutcome]) -> bool:
        return any(o.status is DeliveryStatus.failed for o in outcomes)

    crashing = wrapped("finish_sends", failure)
    rig, channels = await make_rig(
        cast(Store, crashing), clock, tenant, settings, smtp, twilio, fcm, tmp_path
    )
    try:
        await rig.load(directory(family(1, email=True, phone=True)))
        # SMS only for this guardian: the failover goes to email.
        await rig.store.set_preferences(rig.tenant_id, "p1", _prefs({"general": ["sms"]}))
        twilio.fail_next(400, code=21617, message="The concatenated message body is too long")
        message = await rig.post("e1", {"groups": ["g1"]})
        await rig.dispatcher.run_until_idle()
    finally:
        for channel in channels:
            await channel.aclose()
    assert crashing.taken >= 1
    async with reopened(crashing.copy) as after:
        [sms] = [
            d for d in await after.list_deliveries(rig.tenant_id, message.id) if d.channel == "sms"
        ]
        assert sms.status is DeliveryStatus.failed
        assert await fail_over(after, clock) == 1
        email = [
            d
            for d in await after.list_deliveries(rig.tenant_id, message.id)
            if d.channel == "email"
        ]
        assert [d.context.get(ESCALATION_KEY) for d in email] == ["failover:sms"]


def _prefs(channels: dict[str, list[str]]) -> Any:
    from gateway.models import Preferences

    return Preferences.model_validate({"channels": channels})


async def _endpoint(store: Store, tenant_id: str, clock: ManualClock) -> None:
    await store.create_webhook_endpoint(
        WebhookEndpoint(
            id="ep1",
            tenant_id=tenant_id,
            url="https://platform.example/hook",
            event_types=["message.reached", "absence.explained"],
            secret="whsec_" + "A" * 32,
            created_at=clock.now(),
            updated_at=clock.now(),
        )
    )


async def _changes(store: Store) -> list[str]:
    changes, _ = await store.changes_since(0, 1000)
    return [c.type for c in changes]


async def test_a_crash_right_after_a_read_keeps_its_reached_webhook(
    wrapped: Callable[..., SnapshotAfter],
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    settings: Settings,
    peers: tuple[SmtpPeer, TwilioPeer, FcmServer],
    tmp_path: Path,
) -> None:
    smtp, twilio, fcm = peers
    rig, channels = await make_rig(store, clock, tenant, settings, smtp, twilio, fcm, tmp_path)
    try:
        await rig.load(directory(family(1, email=True)))
        await _endpoint(store, rig.tenant_id, clock)
        message = await rig.post("e1", {"groups": ["g1"]})
        await rig.dispatcher.run_until_idle()
    finally:
        for channel in channels:
            await channel.aclose()
    crashing = wrapped("add_reached")
    assert await record_read(
        cast(Store, crashing), rig.tenant_id, "p1", message.id, clock.now(), "inapp"
    )
    async with reopened(crashing.copy) as after:
        assert "message.reached" in await _changes(after)


async def test_a_crash_right_after_an_explanation_keeps_its_webhook(
    wrapped: Callable[..., SnapshotAfter], store: Store, clock: ManualClock, tenant: TenantCreds
) -> None:
    await _endpoint(store, tenant.tenant.id, clock)
    crashing = wrapped("add_absence_explanation")
    explanation = AbsenceExplanation(
        id="x1",
        tenant_id=tenant.tenant.id,
        message_id="m1",
        child_id="c1",
        person_id="p1",
        kind=AbsenceKind.sick,
        text="Syk",
        via="inapp",
        at=clock.now(),
    )
    add: Callable[..., Awaitable[bool]] = crashing.add_absence_explanation
    assert await add(explanation, change={"explanation_id": "x1", "message_id": "m1"})
    async with reopened(crashing.copy) as after:
        assert await _changes(after) == ["absence.explained"]


async def test_a_crash_right_after_an_undelivered_callback_keeps_its_failover(
    wrapped: Callable[..., SnapshotAfter],
    store: Store,
    clock: ManualClock,
    tenant: TenantCreds,
    settings: Settings,
    peers: tuple[SmtpPeer, TwilioPeer, FcmServer],
    tmp_path: Path,
) -> None:
    smtp, twilio, fcm = peers
    rig, channels = await make_rig(store, clock, tenant, settings, smtp, twilio, fcm, tmp_path)
    try:
        await rig.load(directory(family(1, email=True, phone=True)))
        await store.set_preferences(rig.tenant_id, "p1", _prefs({"general": ["sms"]}))
        message = await rig.post("e1", {"groups": ["g1"]})
        await rig.dispatcher.run_until_idle()
    finally:
        for channel in channels:
            await channel.aclose()
    [sid] = twilio.messages
    crashing = wrapped("transition")
    twilio_settings = settings.model_copy(
        update={
            "public_url": PUBLIC_URL,
            "twilio": TwilioSettings(
                account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, default_sender="Skolen"
            ),
        }
    )
    ctx = AppContext(settings=twilio_settings, store=cast(Store, crashing), clock=clock)
    client = TestClient(TestServer(create_app(ctx)))
    await client.start_server()
    try:
        via = str(client.make_url("/"))
        result = await twilio.send_status(sid, "undelivered", error_code=30003, via=via)
        assert result.status == 200
    finally:
        await client.close()
    assert crashing.taken == 1
    async with reopened(crashing.copy) as after:
        found = await after.list_deliveries(rig.tenant_id, message.id)
        [sms] = [d for d in found if d.channel == "sms"]
        assert sms.status is DeliveryStatus.undelivered
        assert await fail_over(after, clock) >= 1
        again = await after.list_deliveries(rig.tenant_id, message.id)
        email = [d for d in again if d.channel == "email"]
        assert [d.context.get(ESCALATION_KEY) for d in email] == ["failover:sms"]
