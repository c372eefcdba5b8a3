"""SIGTERM: ``budbringer serve`` stops intake, lets in-flight sends finish within the
shutdown timeout, exits 0; what it had not started is done at the next start."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.models import derive_id
from tests.peers.smtp import SmtpPeer
from tests.test_crash_restart import (
    create_tenant,
    directory,
    event,
    gateway_env,
    message_ids,
    serving,
    wait_final,
)

pytestmark = pytest.mark.slow

GUARDIANS = 16
TIMEOUT = 3  # seconds: the HTTP drain and the send drain each take at most this


def email_statuses(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, status FROM deliveries WHERE channel = 'email'").fetchall()
    return {row[0]: row[1] for row in rows}


async def test_sigterm_drains_in_flight_sends_and_resumes_the_rest(tmp_path: Path) -> None:
    async with SmtpPeer() as smtp:
        gw = gateway_env(
            tmp_path,
            smtp=smtp,
            BUDBRINGER_DISPATCH__CONCURRENCY="4",
            BUDBRINGER_SMTP__CONNECTIONS="4",
            BUDBRINGER_DISPATCH__SHUTDOWN_TIMEOUT=str(TIMEOUT),
        )
        tenant_id, api_key, _ = await create_tenant(gw)
        smtp.answer_slowly(0.4)
        headers = {"Authorization": f"Bearer {api_key}"}
        async with serving(gw) as proc:
            async with aiohttp.ClientSession(headers=headers) as http:
                async with http.post(gw.url + "/v1/directory", json=directory(GUARDIANS)) as r:
                    assert r.status == 200
                async with http.post(gw.url + "/v1/events", json=event()) as r:
                    assert r.status == 202
            deadline = time.monotonic() + 20
            while not smtp.received:  # the first batch is through: the next is in flight
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.15)  # the next batch is now inside its 0.4 s DATA
            proc.send_signal(signal.SIGTERM)
            stopping = time.monotonic()
            at_signal = len(smtp.received)

            # Intake stops first: new connections are refused while sends still drain.
            refused = False
            # A new connection per request: the listening socket is what must close.
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as http:
                while proc.returncode is None and time.monotonic() - stopping < 2 * TIMEOUT:
                    try:
                        async with http.get(gw.url + "/healthz") as resp:
                            await resp.read()
                    except aiohttp.ClientConnectionError:
                        refused = True
                        break
                    await asyncio.sleep(0.01)
            _, err = await asyncio.wait_for(proc.communicate(), timeout=15)
            took = time.monotonic() - stopping

        assert proc.returncode == 0, err.decode()[-2000:]
        assert refused
        assert took < 2 * TIMEOUT + 2
        # Every email the server took was recorded as sent: nothing cut off half-way...
        statuses = email_statuses(gw.db)
        sent = {d for d, s in statuses.items() if s == "sent"}
        assert set(message_ids(smtp)) == sent
        assert len(sent) > at_signal  # sends in flight at the signal finished after it
        # ... and the rest waits, unstarted, for the next start (no new send was started
        # after the signal, however long the HTTP side took to drain).
        assert 0 < len(sent) < GUARDIANS
        assert set(statuses.values()) == {"sent", "queued"}
        with sqlite3.connect(gw.db) as conn:
            leased = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE leased_until > ?", (time.time_ns() // 1000,)
            ).fetchone()[0]
        assert leased == 0  # no job was left holding a lease

        smtp.answer_slowly(0)
        async with serving(gw):
            status = await wait_final(gw, api_key, derive_id(tenant_id, "evt-1"))

    assert {d["status"] for d in status["deliveries"]} == {"sent", "delivered"}
    received = message_ids(smtp)
    assert len(received) == GUARDIANS
    assert set(received.values()) == {1}  # a graceful stop sends nothing twice
