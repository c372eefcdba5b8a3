"""``budbringer demo``: a small municipality, end to end, through the real HTTP API.

Seeds a school and an adult-education unit with the edge cases of the
resolution rules, registers a few parent-app devices, posts a signed message
to two classes and a course, waits until every delivery is final and prints
who was told on which channel, and who was left out and why.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as wall_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from standardwebhooks import Webhook

from gateway.absence import part_message_id
from gateway.auth import create_api_key, create_tenant
from gateway.constants import DEFAULT_TIME_ZONE
from gateway.models import FINAL, Scope
from gateway.readlinks import PARENT_PATH, READ_PATH, UNSUBSCRIBE_PATH, make_read_token
from gateway.service import Service
from gateway.settings import load_settings

DEMO_FILE = Path(__file__).resolve().parent.parent / "config" / "demo-directory.json"


# Birth dates in the file are for this year; the demo moves them by whole years, so
# the 15-year-olds stay 15 and the pupils who turned 18 stay adults.
DEMO_FILE_YEAR = 2026


def demo_directory(today: date) -> dict[str, Any]:
    """The demo municipality: ``config/demo-directory.json``, a complete
    ``POST /v1/directory`` body (README, "The directory"), with birth dates moved to
    ``today``'s year.

    It holds ordinary two-guardian families; siblings sharing guardians; a guardian
    with children in both classes; fathers without parental responsibility (one later
    granted information, barneloven § 47); a parent later blocked by a court order; a
    guardian and child with a strictly confidential address; a foster child (daily
    care without parental responsibility); pupils of 18 and 19 (one consenting to
    guardians being told); a contact teacher; an adult learner; and language and
    channel preferences.
    """
    batch: dict[str, Any] = json.loads(DEMO_FILE.read_text(encoding="utf-8"))
    shift = today.year - DEMO_FILE_YEAR
    for person in batch["persons"]:
        born = person.get("birth_date")
        if born:
            day = date.fromisoformat(born)
            person["birth_date"] = day.replace(year=day.year + shift).isoformat()
    return batch


FLAGS = [
    ("c26", "p26b", "blocked", "Court order (demo)"),
    ("c25", "p25c", "information_granted", "Right to information, barneloven § 47 (demo)"),
]
# Who the printed page links are for: the contact teacher of 10A and a guardian in 10A.
DEMO_STAFF = "s-10a"
DEMO_PARENT = "p01a"
DEVICES = ["p01a", "p02a", "p03a", "p06a", "p07b", "p10a", "p12b", "p27a", "p28f"]


def demo_pdf(line: str) -> bytes:
    """A one-page PDF saying ``line`` (ASCII), for the demo's attachment."""
    text = line.replace("\\", "").replace("(", "").replace(")", "")
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


class DemoClient:
    def __init__(self, base: str, api_key: str, whsec: str, tenant_id: str) -> None:
        self.base = base
        self.auth = {"Authorization": f"Bearer {api_key}"}
        self.webhook = Webhook(whsec)
        self.tenant_id = tenant_id
        self.http = aiohttp.ClientSession()

    async def call(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> Any:
        async with self.http.request(
            method, self.base + path, json=body, headers=headers or self.auth
        ) as resp:
            data = await resp.json() if resp.content_type == "application/json" else None
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {data}")
            return data

    async def post_signed_event(self, event: dict[str, Any]) -> Any:
        """POST an event signed the Standard Webhooks way, as a platform would."""
        body = json.dumps(event)
        from datetime import UTC, datetime

        signature = self.webhook.sign(event["id"], datetime.now(UTC), body)
        headers = {
            "webhook-id": event["id"],
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": signature,
            "X-Budbringer-Tenant": self.tenant_id,
            "Content-Type": "application/json",
        }
        async with self.http.post(self.base + "/v1/events", data=body, headers=headers) as resp:
            data = await resp.json()
            if resp.status != 202:
                raise RuntimeError(f"POST /v1/events -> {resp.status}: {data}")
            return data

    async def upload(self, data: bytes, name: str) -> Any:
        """POST /v1/attachments: the file itself as the body; its id for an event."""
        async with self.http.post(
            self.base + "/v1/attachments", params={"name": name}, data=data, headers=self.auth
        ) as resp:
            answer = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"POST /v1/attachments -> {resp.status}: {answer}")
            return answer

    async def close(self) -> None:
        await self.http.close()


@dataclass
class DemoRun:
    """A seeded demo on a running gateway (stop it with :meth:`close`)."""

    service: Service
    client: DemoClient
    url: str
    message_id: str
    status: dict[str, Any]
    directory: dict[str, Any]
    absence: dict[str, Any]
    scheduled: dict[str, Any]  # the status of a message scheduled for next Monday

    async def staff_link(self) -> str:
        """A new staff sign-in link (the contact teacher of 10A) to the demo's message:
        a link works once."""
        staff = await self.client.call(
            "POST", f"/v1/staff/{DEMO_STAFF}/tokens", {"message_id": self.message_id}
        )
        link: str = staff["link"]
        return link

    async def links(self) -> dict[str, str]:
        """A staff sign-in link (:meth:`staff_link`) and a parent link (the
        settings-page link of a guardian's email), both to the demo's message."""
        [email] = [
            d["id"]
            for d in self.status["deliveries"]
            if d["recipient_id"] == DEMO_PARENT and d["channel"] == "email"
        ]
        settings = self.service.settings
        expires = self.service.clock.now() + timedelta(days=settings.read_link_ttl_days)
        token = make_read_token(self.service.ctx.secret, email, expires)
        return {
            "email": str(settings.outbox_dir / "email" / f"{email}.eml"),
            "staff": await self.staff_link(),
            "parent": f"{self.url}{PARENT_PATH}{token}",
            "read": f"{self.url}{READ_PATH}{token}",
            "unsubscribe": f"{self.url}{UNSUBSCRIBE_PATH}{token}",
        }

    async def close(self) -> None:
        await self.client.close()
        await self.service.stop()


async def start_demo(
    directory: Path, *, port: int = 0, parent_language: str | None = None
) -> DemoRun:
    """Seed the demo municipality on a fresh gateway in ``directory`` and send its
    messages; the gateway keeps running (``port`` 0: any free port). ``parent_language``
    sets the language of the guardian whose links :meth:`DemoRun.links` gives."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    if port == 0:
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    settings = load_settings(
        store_url=f"sqlite:///{directory / 'budbringer.db'}",
        outbox_dir=directory / "outbox",
        port=port,
        public_url=url,
        secret_key=secrets.token_urlsafe(32),
        log_level="WARNING",
        attachments={"folder": str(directory / "attachments")},
        # The printed staff link is opened when someone gets to it, not within the
        # service's 10 minutes: a working day on a demo machine.
        staff_link_ttl=8 * 3600,
    )
    service = Service(settings)
    await service.start()
    client: DemoClient | None = None
    try:
        tenant, api_key, whsec = await create_tenant(
            service.store, "Asker kommune (demo)", service.clock.now()
        )
        client = DemoClient(url, api_key, whsec, tenant.id)
        directory_batch = demo_directory(service.clock.now().date())
        if parent_language:
            for person in directory_batch["persons"]:
                if person["id"] == DEMO_PARENT:
                    person["language"] = parent_language
        await client.call("POST", "/v1/directory", directory_batch)
        for child_id, guardian_id, flag, reason in FLAGS:
            await client.call(
                "PUT",
                f"/v1/relations/{child_id}/{guardian_id}/flags/{flag}",
                {"value": True, "reason": reason, "actor": "rektor"},
            )
        # The parent app's own key: it signs in guardians with a protected address too.
        _, app_key = await create_api_key(
            service.store,
            tenant.id,
            [Scope.directory, Scope.protected],
            service.clock.now(),
            name="parent app (demo)",
        )
        app_auth = {"Authorization": f"Bearer {app_key}"}
        for n, guardian_id in enumerate(DEVICES):
            token = await client.call(
                "POST", f"/v1/guardians/{guardian_id}/tokens", headers=app_auth
            )
            await client.call(
                "PUT",
                f"/v1/me/devices/d-{guardian_id}",
                {"token": f"demo-fcm-token-{n}-{secrets.token_hex(8)}", "platform": "android"},
                headers={"Authorization": f"Bearer {token['token']}"},
            )
        invitation = await client.upload(demo_pdf("Foreldremote torsdag kl. 18"), "Innkalling.pdf")
        accepted = await client.post_signed_event(
            {
                "id": "demo-evt-1",
                "type": "message.created",
                "data": {
                    "sender_name": "Kontaktlærer 10. trinn",
                    "audience": {"groups": ["g-10a", "g-10b", "g-norsk"]},
                    "category": "general",
                    "subject": "Foreldremøte torsdag",
                    "body": "Velkommen til foreldremøte torsdag kl. 18 i aulaen.",
                    "read_receipt": True,
                    "attachments": [invitation["id"]],
                },
            }
        )
        status = await _wait_final(client, accepted["message_id"])
        absence = await absence_demo(client, service.clock.now().date())
        scheduled = await scheduled_demo(client, service.clock.now())
    except BaseException:
        if client is not None:
            await client.close()
        await service.stop()
        raise
    return DemoRun(
        service, client, url, accepted["message_id"], status, directory_batch, absence, scheduled
    )


async def run_demo(
    directory: Path, *, quiet: bool = False, serve: bool = False, port: int = 0
) -> int:
    """The demo, printed; with ``serve`` the gateway keeps running (until Ctrl-C) so the
    printed staff and parent links open the demo's message."""
    run = await start_demo(directory, port=port)
    try:
        if not quiet:
            print_table(run.status, run.directory)
            print_scheduled(run.scheduled)
            print_absence(run.absence)
            print_links(await run.links(), serve)
        ok = (
            run.status["deliveries"]
            and all(run.absence.values())
            and run.scheduled["schedule"]["state"] == "scheduled"
        )
        if serve:
            await asyncio.Event().wait()  # until the process is interrupted
        return 0 if ok else 1
    finally:
        await run.close()


def print_links(links: dict[str, str], serve: bool) -> None:
    print()
    if not serve:
        print("Pages: run `make demo-serve` (budbringer demo --serve) to keep the gateway")
        print("running and get a staff link and a parent link that open this message.")
        return
    print("The gateway keeps running (Ctrl-C stops it). Open in a browser:")
    print(f"  staff (Tone Lærer, 10A), the message: {links['staff']}")
    print(f"  parent (p01a), inbox and settings:    {links['parent']}")
    print(f"  parent (p01a), the message itself:    {links['read']}")
    print("The staff link signs in once, in one browser (sign-in links work once).")


async def absence_demo(client: DemoClient, today: date) -> dict[str, Any]:
    """One absence alert (c01 missing in lesson 2) and one guardian report from the app
    (p02a: c02 is sick); the statuses of what they made, by part."""
    alert = await client.post_signed_event(
        {
            "id": "demo-absence-1",
            "type": "absence.recorded",
            "data": {
                "child_id": "c01",
                "date": today.isoformat(),
                "lesson": {"number": 2, "name": "Matematikk", "from": "09:00", "to": "09:45"},
                "recorded_by": "s-10a",
                "note": "Not sent to guardians (staff only)",
            },
        }
    )
    token = await client.call("POST", "/v1/guardians/p02a/tokens")
    report = await client.call(
        "POST",
        "/v1/me/absences",
        {"child_id": "c02", "date": today.isoformat(), "kind": "sick", "text": "Feber"},
        headers={"Authorization": f"Bearer {token['token']}"},
    )
    parts = {
        "alert (to guardians with rights)": alert["message_id"],
        "report (to the contact teacher)": report["message_id"],
        "confirmation (to the reporter)": part_message_id(
            client.tenant_id, report["event_id"], "confirmation"
        ),
        "information (to the co-guardian)": part_message_id(
            client.tenant_id, report["event_id"], "informed"
        ),
    }
    return {part: await _wait_final(client, mid) for part, mid in parts.items()}


async def scheduled_demo(client: DemoClient, now: datetime) -> Any:
    """A notice timed for next Monday 07:30 in Oslo: stored now, sent then (its status)."""
    local = now.astimezone(ZoneInfo(DEFAULT_TIME_ZONE))
    monday = local.date() + timedelta(days=7 - local.weekday())
    send_at = datetime.combine(monday, wall_time(7, 30), tzinfo=ZoneInfo(DEFAULT_TIME_ZONE))
    accepted = await client.post_signed_event(
        {
            "id": "demo-evt-scheduled",
            "type": "message.created",
            "data": {
                "audience": {"groups": ["g-10a"]},
                "category": "reminder",
                "subject": "Turdag i dag",
                "body": "Husk matpakke, drikke og klær etter været.",
                "send_at": send_at.isoformat(),
            },
        }
    )
    return await client.call("GET", f"/v1/messages/{accepted['message_id']}")


def print_absence(parts: dict[str, Any]) -> None:
    """A short second table: who each absence message went to, on which channels."""
    print()
    print("Absence: an alert for c01 (lesson 2) and a report by p02a for c02 (sick)")
    total = 0
    for part, status in parts.items():
        by_recipient: dict[str, list[str]] = {}
        for d in status["deliveries"]:
            by_recipient.setdefault(d["recipient_id"], []).append(
                f"{d['channel']}:{d['status']}" + (f"({d['reason']})" if d["reason"] else "")
            )
        total += len(status["deliveries"])
        print(f"  {part}: {status['subject']}")
        for recipient, channels in sorted(by_recipient.items()):
            print(f"    {recipient:<10} {' '.join(sorted(channels))}")
    print(f"absence: {len(parts)} messages  deliveries: {total}")


def print_scheduled(status: dict[str, Any]) -> None:
    schedule = status["schedule"]
    print()
    print(f"Scheduled: {status['subject']!r} for {schedule['send_at']} ({schedule['state']})")


async def _wait_final(client: DemoClient, message_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = await client.call("GET", f"/v1/messages/{message_id}")
        deliveries = status["deliveries"]
        if (
            status.get("planned_at")
            and deliveries
            and all(d["status"] in FINAL for d in deliveries)
        ):
            return status
        if time.monotonic() > deadline:
            raise RuntimeError("deliveries did not finish in time")
        await asyncio.sleep(0.1)


def print_table(status: dict[str, Any], directory: dict[str, Any]) -> None:
    names = {
        p["id"]: f"{p['given_name']} {p.get('family_name', '')}".strip()
        for p in directory["persons"]
    }
    rows = sorted(
        status["deliveries"], key=lambda d: (d["recipient_id"], d["channel"], d["target"])
    )
    # Protected persons come back as pseudonyms (rule 4): no name to show for them.
    who = max(len("recipient"), *(len(d["recipient_id"]) for d in rows))
    kids = [",".join(d.get("child_ids") or []) or "-" for d in rows]
    width = max(len("children"), *(len(k) for k in kids))
    header = (
        f"{'recipient':<{who}} {'name':<22} {'role':<9} {'channel':<7} {'status':<11} "
        f"{'children':<{width}} reason"
    )
    print(header)
    print("-" * (len(header) + 20))
    for d, children in zip(rows, kids, strict=True):
        reason = d.get("reason") or ""
        if d["channel"] == "none" and d.get("target"):
            reason = f"{reason} (for {d['target']})"
        name = names.get(d["recipient_id"], "(protected)")[:22]
        print(
            f"{d['recipient_id']:<{who}} {name:<22} {d['recipient_role']:<9} {d['channel']:<7} "
            f"{d['status']:<11} {children:<{width}} {reason}"
        )
    print("-" * (len(header) + 20))
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(status["counts"].items()))
    print(f"message {status['id']}  deliveries: {len(rows)}  ({counts})")
