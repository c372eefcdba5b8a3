"""The hardware's own ceiling: the benchmark's traffic sent straight to the sinks.

A minimal client with nothing else — no store, no templates, no queue: bare aiohttp
POSTs of a pre-built FCM v1 body and a Twilio form, and aiosmtplib ``sendmail`` of a
pre-built multipart email. It mirrors the gateway's work: the same number of
requests per channel, in one mixed order (the gateway's order is random too: jobs
are claimed by id, a hash), with the same concurrency (the dispatcher's number of
sends in flight) over the same connection pools (FCM 64, Twilio's 100, and as many
SMTP connections as the gateway's pool).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime

import aiohttp
import aiosmtplib

PUSH_TEXT = "Skolen er stengt i dag på grunn av uvær. Hold barna hjemme."
SMS_TEXT = (
    "VIKTIG: Skolen er stengt i dag\n\nSkolen er stengt i dag på grunn av uvær. Hold barna "
    "hjemme. Mer informasjon kommer.\n\nInnstillinger: http://127.0.0.1/preferences"
)


@dataclass(frozen=True)
class Work:
    """What the ceiling sends: requests per channel, sends in flight, pool sizes."""

    push: int
    sms: int
    email: int
    concurrency: int
    # sends in flight per channel at most, as the gateway's DISPATCH__CHANNEL_CONCURRENCY
    limits: dict[str, int] = field(default_factory=dict)
    push_connections: int = 64
    sms_connections: int = 100
    smtp_connections: int = 32  # the gateway's SMTP__CONNECTIONS default
    seed: int = 1

    def order(self) -> list[str]:
        channels = ["push"] * self.push + ["sms"] * self.sms + ["email"] * self.email
        random.Random(self.seed).shuffle(channels)
        return channels


def push_body_template(project_link: str) -> str:
    """An FCM v1 body of the gateway's shape and size; ``@@ID@@`` marks the per-send parts."""
    message = {
        "message": {
            "token": "fcm-ceiling-@@ID@@",
            "notification": {"title": "VIKTIG: Skolen er stengt i dag", "body": PUSH_TEXT},
            "data": {
                "message_id": "0" * 32,
                "delivery_id": "@@ID@@",
                "link": f"{project_link}/app/messages/{'0' * 32}",
                "category": "emergency",
            },
            "android": {
                "collapse_key": "0" * 32,
                "priority": "high",
                "ttl": "900s",
                "notification": {
                    "title": "VIKTIG: Skolen er stengt i dag",
                    "body": PUSH_TEXT,
                    "channel_id": "emergency",
                    "tag": "0" * 32,
                    "default_sound": True,
                    "notification_priority": "PRIORITY_HIGH",
                    "visibility": "PUBLIC",
                },
            },
            "apns": {
                "headers": {
                    "apns-push-type": "alert",
                    "apns-priority": "10",
                    "apns-collapse-id": "0" * 32,
                    "apns-expiration": "1900000000",
                },
                "payload": {
                    "aps": {
                        "alert": {"title": "VIKTIG: Skolen er stengt i dag", "body": PUSH_TEXT},
                        "sound": "default",
                        "thread-id": "0" * 32,
                        "category": "emergency",
                        "interruption-level": "time-sensitive",
                    }
                },
            },
        }
    }
    return json.dumps(message)


def email_template(sender: str) -> bytes:
    """A multipart (text + HTML) email like the gateway's, flattened once."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = sender
    message["To"] = "xxtoxx@example.org"
    message["Subject"] = "VIKTIG: Skolen er stengt i dag"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = "<XXIDXX@bench.invalid>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(SMS_TEXT)
    message.add_alternative(f"<html><body><p>{PUSH_TEXT}</p></body></html>", subtype="html")
    message["Content-Language"] = "nb"
    return message.as_bytes()


async def run_ceiling(
    work: Work,
    *,
    fcm_url: str,
    twilio_url: str,
    smtp_port: int,
    account_sid: str,
    auth_token: str,
    project_id: str,
    sender_address: str = "varsel@bench.invalid",
) -> float:
    """Send all of ``work``; return the wall-clock start (``time.time()``)."""
    push_template = push_body_template("http://127.0.0.1")
    push_url = f"{fcm_url}/v1/projects/{project_id}/messages:send"
    sms_url = f"{twilio_url}/2010-04-01/Accounts/{account_sid}/Messages.json"
    basic = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
    sms_headers = {"Authorization": f"Basic {basic}"}
    mail = email_template(f"Bench <{sender_address}>")

    push_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=work.push_connections)
    )
    sms_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=work.sms_connections))
    smtp_clients = [
        aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, use_tls=False, start_tls=False)
        for _ in range(work.smtp_connections)
    ]
    try:
        async with push_session.post(
            f"{fcm_url}/token",
            data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "x"},
        ) as response:
            token = (await response.json())["access_token"]
        push_headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json; charset=UTF-8",
        }
        for client in smtp_clients:
            await client.connect()
        idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for client in smtp_clients:
            idle.put_nowait(client)

        async def send_push(n: int) -> None:
            body = push_template.replace("@@ID@@", f"ceiling-push-{n}").encode()
            async with push_session.post(push_url, data=body, headers=push_headers) as r:
                await r.read()
                r.raise_for_status()

        async def send_sms(n: int) -> None:
            form = {
                "To": f"+479{n:07d}",
                "From": "Enhet1",
                "Body": f"{SMS_TEXT} #{n}",
                "StatusCallback": "http://127.0.0.1/v1/providers/twilio/status",
            }
            async with sms_session.post(sms_url, data=form, headers=sms_headers) as r:
                await r.read()
                r.raise_for_status()

        async def send_email(n: int) -> None:
            client = await idle.get()
            try:
                address = f"ceiling{n}@example.org"
                raw = mail.replace(b"xxtoxx@example.org", address.encode()).replace(
                    b"XXIDXX", f"ceiling-email-{n}".encode()
                )
                await client.sendmail(sender_address, [address], raw)
            finally:
                idle.put_nowait(client)

        senders = {"push": send_push, "sms": send_sms, "email": send_email}
        limits = {c: asyncio.Semaphore(n) for c, n in work.limits.items()}
        jobs = iter(enumerate(work.order()))

        async def worker() -> None:
            for n, channel in jobs:
                limit = limits.get(channel)
                if limit is None:
                    await senders[channel](n)
                    continue
                async with limit:
                    await senders[channel](n)

        started = time.time()
        await asyncio.gather(*(worker() for _ in range(work.concurrency)))
        return started
    finally:
        await push_session.close()
        await sms_session.close()
        for client in smtp_clients:
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
