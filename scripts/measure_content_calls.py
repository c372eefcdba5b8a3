"""Python calls per delivery on the content path: render, then the channel's own content.

    .venv/bin/python -m scripts.measure_content_calls [--deliveries 2000]

Renders an emergency for email, SMS and push (the families, languages and read links of
``scripts/measure_send_cpu.py``), then builds what the channel sends: the email's bytes
(``email_bytes``), the SMS text and its segments (``SmsChannel.choose_text``), the push
request (``PushChannel.request_body``). After one pass to warm the caches it counts the
Python-level calls of a second pass over new deliveries of the same families
(``sys.setprofile``: the same on every run, whatever the machine's load). One line of
JSON per channel. Run it from two checkouts to compare them (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from channels.email import email_bytes
from channels.push import PushChannel
from channels.sms import SmsChannel
from gateway.bench.sinks import ACCOUNT_SID, AUTH_TOKEN, write_service_account
from gateway.models import Delivery, Rendered
from gateway.readlinks import read_link_maker
from gateway.render import Renderer
from gateway.settings import FcmSettings, TwilioSettings
from scripts.measure_send_cpu import MESSAGE, NAMES, TEMPLATES, URL, delivery

SENDER = "Asker kommune <varsel@asker.kommune.no>"


def _channel_step(channel: str, work: Path) -> Callable[[Delivery, Rendered], object]:
    if channel == "email":
        return lambda one, content: email_bytes(one, content, SENDER, URL)
    if channel == "sms":
        twilio = TwilioSettings(
            account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, default_sender="Budbringer"
        )
        sms = SmsChannel(twilio, URL)
        return lambda one, content: sms.choose_text(content)
    account = write_service_account(work / "service-account.json", "http://127.0.0.1:9/token")
    fcm = FcmSettings(service_account_file=account, base_url="http://127.0.0.1:9")
    push = PushChannel(fcm, URL)
    return push.request_body


def _calls(work: Callable[[], None]) -> dict[str, int]:
    calls = {"call": 0, "c_call": 0}

    def count(frame: FrameType, event: str, arg: Any) -> None:
        if event in calls:
            calls[event] += 1

    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


def measure(channel: str, count: int, work: Path) -> dict[str, Any]:
    renderer = Renderer(
        TEMPLATES, URL, link_for=read_link_maker(b"s" * 32, URL, timedelta(days=30))
    )
    message = MESSAGE
    step = _channel_step(channel, work)
    rng = random.Random(2)
    families = [rng.sample(NAMES, rng.choice([1, 1, 2, 3])) for _ in range(count)]
    languages = ["nb"] * 8 + ["en", "ar"]
    langs = [rng.choice(languages) for _ in range(count)]

    def batch(first: int) -> list[Delivery]:
        return [
            delivery(first + n, channel, langs[n], families[n]).model_copy(
                update={"address": f"fcm-{n}" if channel == "push" else f"f{first + n}@example.no"}
            )
            for n in range(count)
        ]

    def run(deliveries: list[Delivery]) -> Callable[[], None]:
        def go() -> None:
            for one in deliveries:
                step(one, renderer.render(message, one))

        return go

    run(batch(0))()  # warm: every family's stencils and names
    counted = batch(count)
    render_only = _calls(lambda: [renderer.render(message, one) for one in counted] and None)
    whole = _calls(run(batch(2 * count)))
    return {
        "channel": channel,
        "python_calls_per_render": round(render_only["call"] / count, 1),
        "python_calls_per_delivery": round(whole["call"] / count, 1),
        "c_calls_per_delivery": round(whole["c_call"] / count, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for channel in ("email", "sms", "push"):
            print(json.dumps(measure(channel, args.deliveries, Path(tmp))))


if __name__ == "__main__":
    main()
