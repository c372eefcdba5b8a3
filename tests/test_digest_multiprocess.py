"""Issue 16, the daily digest with two real worker processes on one Redis: three
messages held for an 18:00 digest are sent as ONE email, whichever process gets there.

The messages are accepted and planned by a gateway in the test's own process on a
ManualClock (Saturday 24 October 2026, 20:00 in Oslo): the digest job is due on Sunday
at 18:00 Oslo time, after the clocks went back (17:00 UTC), and nothing goes a second
before that. Then two ``budbringer worker`` subprocesses (tests/test_redis_multiprocess.py
starts them the same way) run on the same key prefix with the system clock, long past
that time: both race for the digest job, and the SMTP peer receives exactly one digest.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.digest_plan import DIGEST_KEY
from gateway.models import DirectoryBatch, Preferences
from gateway.settings import Settings
from tests.conftest import DIRECTORY, SECRET_KEY
from tests.contract.conftest import REDIS_URL, forget_keys, require_redis
from tests.harness import running
from tests.peers.smtp import SmtpPeer
from tests.test_digest import SATURDAY_EVENING, SENDER, SUNDAY_1800

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2


def worker_env(prefix: str, smtp: SmtpPeer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUDBRINGER_", "TWILIO_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        BUDBRINGER_STORE_URL=f"{REDIS_URL}?prefix={prefix}",
        BUDBRINGER_SECRET_KEY=SECRET_KEY,
        BUDBRINGER_LOG_LEVEL="WARNING",
        BUDBRINGER_CHANNELS='["inapp", "email"]',
        BUDBRINGER_DISPATCH__POLL_INTERVAL="0.05",
        BUDBRINGER_SMTP__HOST=smtp.host,
        BUDBRINGER_SMTP__PORT=str(smtp.port),
        BUDBRINGER_SMTP__TLS="none",
        BUDBRINGER_SMTP__SENDER=SENDER,
    )
    return env


async def test_two_worker_processes_send_the_digest_once(tmp_path: Path) -> None:
    require_redis()
    prefix = f"bbtest-digestmp-{secrets.token_hex(4)}"
    clock = ManualClock(SATURDAY_EVENING)
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with AsyncExitStack() as stack:
            smtp = await stack.enter_async_context(SmtpPeer())
            settings = Settings(
                store_url=f"{REDIS_URL}?prefix={prefix}",
                outbox_dir=tmp_path / "outbox",
                secret_key=SECRET_KEY,
                channels=["inapp", "email"],
                smtp={"host": smtp.host, "port": smtp.port, "tls": "none", "sender": SENDER},
            )
            async with running(settings, clock) as gw:
                store = gw.service.store
                tenant, key, _ = await create_tenant(store, "Asker kommune", clock.now())
                await store.apply_directory(tenant.id, DirectoryBatch.model_validate(DIRECTORY))
                digest = {"general": "18:00", "reminder": "18:00"}
                await store.set_preferences(tenant.id, "p1", Preferences(digest=digest))
                ids = []
                for n, (subject, category) in enumerate(
                    [("Tur mandag", "general"), ("Husk gymtøy", "reminder"), ("Møte", "general")]
                ):
                    event = {
                        "id": f"evt-{n}",
                        "type": "message.created",
                        "data": {
                            "audience": {"groups": ["g1"]},
                            "category": category,
                            "subject": subject,
                            "body": "Se meldingen.",
                        },
                    }
                    ids.append(await gw.post_event(key, event))
                clock.set(SUNDAY_1800 - timedelta(seconds=1))
                await gw.run()
                assert smtp.received == []  # held: the digest is not due yet
                held = [
                    d
                    for d in await store.list_deliveries(tenant.id, ids[0])
                    if d.channel == "email"
                ]
                digest_id = held[0].context[DIGEST_KEY]
                assert held[0].not_before == SUNDAY_1800
                assert (await store.get_jobs([digest_id]))[digest_id].due_at == SUNDAY_1800

                env = worker_env(prefix, smtp)
                for _ in range(WORKERS):
                    procs.append(
                        await asyncio.create_subprocess_exec(
                            sys.executable,
                            "-m",
                            "gateway.cli",
                            "worker",
                            env=env,
                            cwd=tmp_path,
                            stdout=asyncio.subprocess.DEVNULL,
                            stderr=asyncio.subprocess.PIPE,
                        )
                    )
                deadline = time.monotonic() + 120  # a guard against hanging, not a speed goal
                while await store.get_jobs([digest_id]) or not smtp.received:
                    assert all(p.returncode is None for p in procs), "a worker exited"
                    assert time.monotonic() < deadline, "the digest was not sent"
                    await asyncio.sleep(0.05)
                # The job is gone: no process can claim it again, so this is final.
                subjects = [m.message["Subject"] for m in smtp.received]
                assert subjects == ["Dagens meldinger (3)"]
                for message_id in ids:
                    statuses = {
                        d.channel: d.status.value
                        for d in await store.list_deliveries(tenant.id, message_id)
                    }
                    assert statuses["email"] == "sent"
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.communicate(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.communicate()
        forget_keys(prefix)
