"""The benchmark's ceiling client alone, against its sinks: what paces it under latency.

    .venv/bin/python -m scripts.ceiling_only --push 900 --sms 1130 --email 960 --latency 200ms
    .venv/bin/python -m scripts.ceiling_only --push 900 --sms 0 --email 0 --latency 200ms

Starts the three sinks (gateway/bench/sinks.py) with ``--latency``, sends that traffic
with the ceiling client (gateway/bench/ceiling.py: one random interleaving, the
gateway's per-channel in-flight limits and its total) and prints one JSON line: per
channel the hand-overs, the seconds to the last one and the rate. No gateway and no
municipality, so it takes seconds, and with a latency of 100 ms or more it needs little
CPU: its figures hold on a busy machine too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time

from gateway.bench import ceiling
from gateway.bench.latency import argument as latency_argument
from gateway.bench.run import FCM_CONNECTIONS, SMTP_CONNECTIONS, TWILIO_CONNECTIONS
from gateway.bench.sinks import ACCOUNT_SID, AUTH_TOKEN, PROJECT_ID, SinkProcess
from gateway.settings import DispatchSettings

SINK_OF = {"push": "fcm", "sms": "twilio", "email": "smtp"}


async def run(args: argparse.Namespace) -> dict[str, object]:
    settings = DispatchSettings()
    work = ceiling.Work(
        push=args.push,
        sms=args.sms,
        email=args.email,
        concurrency=settings.concurrency,
        limits={channel: settings.in_flight_limit(channel) for channel in SINK_OF},
        push_connections=FCM_CONNECTIONS,
        sms_connections=TWILIO_CONNECTIONS,
        smtp_connections=args.smtp_connections,
    )
    with tempfile.TemporaryFile() as log:
        sinks = {kind: SinkProcess(kind, log, args.latency) for kind in SINK_OF.values()}
        await asyncio.gather(*(sink.start() for sink in sinks.values()))
        try:
            cpu = time.process_time()
            started = await ceiling.run_ceiling(
                work,
                fcm_url=sinks["fcm"].url,
                twilio_url=sinks["twilio"].url,
                smtp_port=sinks["smtp"].port,
                account_sid=ACCOUNT_SID,
                auth_token=AUTH_TOKEN,
                project_id=PROJECT_ID,
            )
            out: dict[str, object] = {
                "latency": str(args.latency),
                "smtp_connections": args.smtp_connections,
                "limits": work.limits,
                "client_cpu_s": round(time.process_time() - cpu, 2),
            }
            for channel, kind in SINK_OF.items():
                times = (await sinks[kind].records()).values()
                seconds = max(times, default=started) - started
                rate = len(times) / seconds if seconds > 0 else 0.0
                out[channel] = {"sent": len(times), "s": round(seconds, 2), "per_s": round(rate)}
            return out
        finally:
            for sink in sinks.values():
                await sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--push", type=int, default=900)
    parser.add_argument("--sms", type=int, default=1130)
    parser.add_argument("--email", type=int, default=960)
    parser.add_argument("--smtp-connections", type=int, default=SMTP_CONNECTIONS)
    parser.add_argument("--latency", type=latency_argument, default="200ms")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
