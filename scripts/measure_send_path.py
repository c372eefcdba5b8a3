"""CPU and Python calls per send of the push or SMS channel alone, on either event loop.

The channel (``channels/push.py`` or ``channels/sms.py``, as in the checkout it is run
from) sends to the benchmark's FCM or Twilio sink, which runs in a process of its own,
64 sends in flight. After 500 sends to warm up it counts the Python-level calls of
300 sends (``sys.setprofile``: the same on every run, unlike time on a busy machine),
then times N sends (``time.process_time`` of this process only). One line of JSON. Not
a test: the CPU figure depends on the machine and its load. Run from a checkout's root:

    .venv/bin/python -m scripts.measure_send_path push --sends 4000 --event-loop uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import uvloop

from channels.push import PushChannel
from channels.sms import SmsChannel
from gateway.bench.sinks import ACCOUNT_SID, AUTH_TOKEN, SinkProcess, write_service_account
from gateway.models import Delivery, Rendered, Role
from gateway.settings import FcmSettings, TwilioSettings

IN_FLIGHT = 64
WARM_UP = 500
COUNTED = 300
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
CONTENT = Rendered(
    subject="Skolen er stengt",
    text="Skolen er stengt i dag på grunn av uvær. Hent barna før klokka 12. " * 2,
    short="Skolen er stengt i dag.",
)


def _delivery(i: int, channel: str) -> Delivery:
    address = f"fcm-token-{i}" if channel == "push" else f"+4740{i:06d}"
    return Delivery(
        id=f"d-{i}",
        tenant_id="t1",
        message_id="m" + "0" * 31,
        recipient_id="g1",
        recipient_role=Role.guardian,
        channel=channel,
        target="device-1",
        address=address,
        language="nb",
        context={"category": "emergency"},
        created_at=NOW,
        updated_at=NOW,
    )


def _channel(kind: str, url: str, work: Path) -> PushChannel | SmsChannel:
    if kind == "push":
        account = write_service_account(work / "service-account.json", f"{url}/token")
        settings = FcmSettings(service_account_file=account, base_url=url, token_url=f"{url}/token")
        return PushChannel(settings, "http://127.0.0.1:9")
    twilio = TwilioSettings(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, base_url=url, default_sender="Budbringer"
    )
    return SmsChannel(twilio, "http://127.0.0.1:9")


async def measure(kind: str, sends: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "sink.log", "wb") as log:
        sink = SinkProcess("fcm" if kind == "push" else "twilio", log)
        await sink.start()
        channel = _channel(kind, f"http://127.0.0.1:{sink.port}", Path(tmp))
        await channel.start()
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def one(i: int) -> None:
            async with slots:
                await channel.send(_delivery(i, kind), CONTENT)

        async def batch(first: int, count: int) -> None:
            await asyncio.gather(*(one(i) for i in range(first, first + count)))

        try:
            await batch(0, WARM_UP)
            calls = {"call": 0, "c_call": 0}

            def count(frame: FrameType, event: str, arg: Any) -> None:
                if event in calls:
                    calls[event] += 1

            sys.setprofile(count)
            await batch(WARM_UP, COUNTED)
            sys.setprofile(None)
            cpu, wall = time.process_time(), time.monotonic()
            await batch(WARM_UP + COUNTED, sends)
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        finally:
            await channel.aclose()
            await sink.stop()
    return {
        "channel": kind,
        "python_calls_per_send": round(calls["call"] / COUNTED, 1),
        "c_calls_per_send": round(calls["c_call"] / COUNTED, 1),
        "cpu_s_per_1000": round(cpu / sends * 1000, 3),
        "sends_per_s": round(sends / wall),
        "load": open("/proc/loadavg").read().split()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.measure_send_path")
    parser.add_argument("channel", choices=("push", "sms"))
    parser.add_argument("--sends", type=int, default=4000)
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    factory: Callable[[], asyncio.AbstractEventLoop] = (
        uvloop.new_event_loop if args.event_loop == "uvloop" else asyncio.new_event_loop
    )
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(measure(args.channel, args.sends))
    print(json.dumps({"event_loop": args.event_loop, **result}))


if __name__ == "__main__":
    main()
