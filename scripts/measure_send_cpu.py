"""CPU per render and per email send, in-process (``time.process_time``).

    .venv/bin/python -m scripts.measure_send_cpu [--sends 4000] [--renders 4000]
        [--event-loop asyncio|uvloop]   (--renders 0: the sends alone)

Renders an emergency for email, SMS and push (2,400 families of one to three children,
Bokmål, English and Arabic, personal read links) and sends 4,000 emails through
``EmailChannel`` (16 connections, 32 in flight) to the benchmark's SMTP sink, which
runs in a process of its own so only the gateway side is counted. Run it from two
checkouts, alternately, to compare them (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from channels.email import EmailChannel
from gateway.bench.sinks import SinkProcess
from gateway.models import Audience, Category, Delivery, DeliveryStatus, Message, Rendered, Role
from gateway.readlinks import read_link_maker
from gateway.render import Renderer
from gateway.settings import SmtpSettings

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
URL = "https://varsel.example.no"
NOW = datetime(2026, 12, 6, tzinfo=UTC)
NAMES = ["Ola", "Kari", "Nora", "Emil", "Sara", "Mia", "Noah", "Ella", "Jonas", "Ida", "Åse"]
# One emergency, the message every measurement renders.
MESSAGE = Message(
    id="m1",
    tenant_id="t1",
    event_id="e1",
    event_type="message.created",
    body_hash="h",
    category=Category.emergency,
    subject="Stengt skole i dag",
    body="Alle skoler er stengt.\n\nHold barna hjemme – «viktig».",
    audience=Audience(children=["c1"]),
    created_at=NOW,
)


def delivery(n: int, channel: str, language: str, children: list[str]) -> Delivery:
    return Delivery(
        id=f"{n:032x}",
        tenant_id="t1",
        message_id="m1",
        recipient_id=f"p{n}",
        recipient_role=Role.guardian,
        channel=channel,
        address=f"foresatt{n}@example.no",
        language=language,
        child_ids=["c1"],
        context={
            "children": children,
            "unit": "Solvang skole",
            "sender": "Rektor Hansen",
            "sms_sender": "Solvang",
            "category": "emergency",
        },
        status=DeliveryStatus.queued,
        created_at=NOW,
        updated_at=NOW,
    )


def measure_renders(count: int) -> None:
    link_for = read_link_maker(b"s" * 32, URL, timedelta(days=30))
    renderer = Renderer(TEMPLATES, URL, link_for=link_for)
    message = MESSAGE
    rng = random.Random(2)
    families = [rng.sample(NAMES, rng.choice([1, 1, 2, 3])) for _ in range(2400)]
    for channel in ("email", "sms", "push"):
        languages = ["nb"] * 8 + ["en", "ar"]
        deliveries = [
            delivery(n, channel, rng.choice(languages), families[n % len(families)])
            for n in range(count)
        ]
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for one in deliveries:
                renderer.render(message, one)
            best = min(best, (time.process_time() - start) / count)
        print(f"render {channel}: {best * 1e6:.1f} µs (best of 3)")


async def measure_sends(count: int) -> None:
    text = (
        "Solvang skole\n\nGjelder: Kari og Ola\n\n"
        + "Dette er en viktig melding om skolen i dag. " * 4
        + "\n\n"
    ) * 6
    html = "<html><body>" + "<p>Dette er en viktig melding om skolen i dag.</p>\n" * 40
    content = Rendered(
        subject="Viktig: skolen er stengt i dag",
        text=text + f"Les: {URL}/r/" + "A" * 64 + "\n",
        html=html + "</body></html>\n",
        language="nb",
        unsubscribe_url=f"{URL}/u/" + "A" * 64,
    )
    with tempfile.TemporaryFile() as log:
        sink = SinkProcess("smtp", log)
        await sink.start()
        try:
            settings = SmtpSettings(
                host="127.0.0.1",
                port=sink.port,
                tls="none",
                sender="Asker kommune <varsel@asker.kommune.no>",
                connections=16,
                timeout=10,
            )
            channel = EmailChannel(settings, URL)
            await channel.start()
            deliveries = [delivery(n, "email", "nb", ["Kari"]) for n in range(count + 64)]
            await asyncio.gather(*(channel.send(one, content) for one in deliveries[:64]))
            room = asyncio.Semaphore(32)

            async def send(one: Delivery) -> None:
                async with room:
                    await channel.send(one, content)

            start = time.process_time()
            await asyncio.gather(*(send(one) for one in deliveries[64:]))
            spent = time.process_time() - start
            print(f"email send: {spent / count * 1e6:.1f} µs ({count} sends)")
            await channel.aclose()
        finally:
            await sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=4000)
    parser.add_argument("--sends", type=int, default=4000)
    parser.add_argument(
        "--event-loop", choices=("asyncio", "uvloop"), default="asyncio", help="for the sends"
    )
    args = parser.parse_args()
    if args.renders:
        measure_renders(args.renders)
    if args.event_loop == "uvloop":  # the gateway's default loop (BUDBRINGER_EVENT_LOOP)
        import uvloop

        uvloop.run(measure_sends(args.sends))
    else:
        asyncio.run(measure_sends(args.sends))


if __name__ == "__main__":
    main()
