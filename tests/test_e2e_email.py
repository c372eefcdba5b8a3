"""Issue 2, end to end: a class message posted (signed) through the real HTTP API of a
running gateway, delivered over SMTP to a real aiosmtpd server, and read back from
``GET /v1/messages/{id}``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from gateway.auth import create_tenant
from gateway.demo import DemoClient
from gateway.models import FINAL, Delivery, DeliveryStatus
from gateway.readlinks import open_read_token
from gateway.service import Service
from gateway.settings import load_settings
from tests.conftest import SECRET_KEY
from tests.peers.smtp import Received, SmtpPeer

SENDER = "Asker kommune <varsel@asker.kommune.no>"
PUBLIC_URL = "https://budbringer.asker.kommune.no"


def person(pid: str, given: str, family: str = "", **extra: Any) -> dict[str, Any]:
    return {"id": pid, "given_name": given, "family_name": family, **extra}


def child(pid: str, given: str) -> dict[str, Any]:
    return person(
        pid,
        given,
        "Elev",
        role="child",
        birth_date="2015-04-01",
        unit_ids=["u1"],
        group_ids=["g1"],
    )


def guardian(pid: str, given: str, family: str, **extra: Any) -> dict[str, Any]:
    return person(pid, given, family, role="guardian", email=f"{pid}@familie.no", **extra)


def rel(c: str, g: str, pr: bool = True) -> dict[str, Any]:
    return {"child_id": c, "guardian_id": g, "parental_responsibility": pr}


DIRECTORY: dict[str, Any] = {
    "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
    "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
    "persons": [
        child("c1", "Kari"),
        child("c2", "Per"),  # Kari's brother: same guardians
        child("c3", "Lise"),
        child("c4", "Nils"),
        child("c5", "Sol"),
        guardian("p1", "Anne", "Berg", language="nb"),
        guardian("p2", "Bjørn", "Berg"),  # no language: Bokmål
        guardian("p3", "Siri", "Dale", language="nn"),
        guardian("p4", "John", "Smith"),  # English by preference below
        guardian("p5", "Eva", "Lund"),
        guardian("p6", "Frank", "Lund"),  # no parental responsibility
        guardian("p7", "Geir", "Lund"),  # blocked by a court order
        guardian("p8", "Hemmelig", "Skjultsen", protection="strictly_confidential"),
        guardian("p9", "Ivar", "Vik"),  # co-guardian of the protected guardian's child
    ],
    "relations": [
        rel("c1", "p1"),
        rel("c1", "p2"),
        rel("c2", "p1"),
        rel("c2", "p2"),
        rel("c3", "p3"),
        rel("c3", "p4"),
        rel("c4", "p5"),
        rel("c4", "p6", pr=False),
        rel("c4", "p7"),
        rel("c5", "p8"),
        rel("c5", "p9"),
    ],
    "preferences": {"p4": {"language": "en"}},
}
TOLD = {"p1", "p2", "p3", "p4", "p5", "p8", "p9"}
LANGUAGE = {"p1": "nb", "p2": "nb", "p3": "nn", "p4": "en", "p5": "nb", "p8": "nb", "p9": "nb"}
CHILDREN = {
    "p1": {"Kari", "Per"},
    "p2": {"Kari", "Per"},
    "p3": {"Lise"},
    "p4": {"Lise"},
    "p5": {"Nils"},
    "p8": {"Sol"},
    "p9": {"Sol"},
}


async def wait_final(client: DemoClient, message_id: str, timeout: float = 20) -> Any:
    """GET the message status until it is planned and every delivery is final."""
    deadline = time.monotonic() + timeout
    while True:
        status = await client.call("GET", f"/v1/messages/{message_id}")
        deliveries = status["deliveries"]
        if status["planned_at"] and deliveries and all(d["status"] in FINAL for d in deliveries):
            return status
        assert time.monotonic() < deadline, f"not final in time: {status['counts']}"
        await asyncio.sleep(0.05)


def texts(message: EmailMessage) -> str:
    """Every header and every decoded text part, for searching what a recipient saw."""
    parts = [f"{name}: {value}" for name, value in message.items()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(str(part.get_content()))
    return "\n".join(parts)


class Run:
    def __init__(self, status: Any, received: list[Received], tenant_id: str) -> None:
        self.status = status
        self.tenant_id = tenant_id
        self.received = received
        self.by_address = {r.rcpt_tos[0]: r for r in received}

    def deliveries(self, channel: str) -> dict[str, Any]:
        return {d["recipient_id"]: d for d in self.status["deliveries"] if d["channel"] == channel}


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    async with SmtpPeer() as smtp:
        settings = load_settings(
            store_url=f"sqlite:///{tmp_path / 'budbringer.db'}",
            outbox_dir=tmp_path / "outbox",
            port=0,
            public_url=PUBLIC_URL,
            secret_key=SECRET_KEY,
            smtp={"host": smtp.host, "port": smtp.port, "tls": "none", "sender": SENDER},
            dispatch={"poll_interval": 0.05},
        )
        service = Service(settings)
        await service.start()
        client: DemoClient | None = None
        try:
            tenant, api_key, whsec = await create_tenant(
                service.store, "Asker kommune", service.clock.now()
            )
            client = DemoClient(f"http://127.0.0.1:{service.port}", api_key, whsec, tenant.id)
            await client.call("POST", "/v1/directory", DIRECTORY)
            await client.call(
                "PUT",
                "/v1/relations/c4/p7/flags/blocked",
                {"value": True, "reason": "Court order", "actor": "rektor"},
            )
            accepted = await client.post_signed_event(
                {
                    "id": "evt-tur",
                    "type": "message.created",
                    "data": {
                        "sender_name": "Kontaktlærer 5A",
                        "audience": {"groups": ["g1"]},
                        "subject": "Tur til skogen",
                        "body": "Vi går på tur fredag. Ta med matpakke.",
                    },
                }
            )
            status = await wait_final(client, accepted["message_id"])
            yield Run(status, list(smtp.received), tenant.id)
        finally:
            if client is not None:
                await client.close()
            await service.stop()


async def test_each_guardian_told_gets_exactly_one_email_to_them_alone(run: Run) -> None:
    assert sorted(run.by_address) == sorted(f"{p}@familie.no" for p in TOLD)
    assert len(run.received) == len(TOLD)  # siblings' guardians: one email, not two
    for received in run.received:
        message = received.message
        assert len(received.rcpt_tos) == 1
        [to] = message["To"].addresses
        assert to.addr_spec == received.rcpt_tos[0]
        for header in ("Cc", "Bcc", "Reply-To", "Resent-To"):
            assert message[header] is None
        assert received.mail_from == "varsel@asker.kommune.no"


async def test_headers_are_complete_and_deterministic(run: Run) -> None:
    emails = run.deliveries("email")
    # The protected guardian shows in the status API only under a pseudonym.
    [alias] = [r for r in emails if r.startswith("protected-")]
    assert set(emails) - {alias} == TOLD - {"p8"}
    ids = {d["id"] for d in emails.values()}
    for pid in TOLD:
        message = run.by_address[f"{pid}@familie.no"].message
        # deterministic: derived from (tenant, event, recipient, channel), nothing random
        delivery_id = Delivery.make_id(run.tenant_id, "evt-tur", pid, "email")
        assert delivery_id in ids
        assert message["Message-ID"] == f"<{delivery_id}@asker.kommune.no>"
        # p9's child has a protected co-guardian: no teacher's or class name (rule 4).
        sender = SENDER if pid == "p9" else "Kontaktlærer 5A <varsel@asker.kommune.no>"
        assert str(message["From"]) == sender
        assert message["Subject"] == "Tur til skogen"
        # the personal one-click link (RFC 8058): the read link's token under /u/
        unsubscribe = message["List-Unsubscribe"]
        assert unsubscribe.startswith(f"<{PUBLIC_URL}/u/") and unsubscribe.endswith(">")
        token = unsubscribe.removeprefix(f"<{PUBLIC_URL}/u/").removesuffix(">")
        assert open_read_token(SECRET_KEY.encode(), token, datetime.now(UTC)) == delivery_id
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Date"] is not None
        assert message["Content-Language"] == LANGUAGE[pid]
        assert message.get_content_type() == "multipart/alternative"
        kinds = [part.get_content_type() for part in message.iter_parts()]
        assert kinds == ["text/plain", "text/html"]
        plain = message.get_body(("plain",))
        html = message.get_body(("html",))
        assert plain is not None and html is not None
        assert "Vi går på tur fredag." in plain.get_content()
        assert "Vi går på tur fredag." in html.get_content()


async def test_wrapper_text_is_in_the_guardians_language(run: Run) -> None:
    concerns = {"nb": "Gjelder:", "nn": "Gjeld:", "en": "Concerns:"}
    for pid in TOLD:
        plain = run.by_address[f"{pid}@familie.no"].message.get_body(("plain",))
        assert plain is not None
        assert concerns[LANGUAGE[pid]] in plain.get_content()


async def test_siblings_guardian_gets_one_email_naming_both_children(run: Run) -> None:
    for pid, names in CHILDREN.items():
        plain = run.by_address[f"{pid}@familie.no"].message.get_body(("plain",))
        assert plain is not None
        line = next(x for x in plain.get_content().splitlines() if x.startswith(("Gjeld", "Conc")))
        named = {n for n in ("Kari", "Per", "Lise", "Nils", "Sol") if n in line}
        assert named == names, pid
    assert run.deliveries("email")["p1"]["child_ids"] == ["c1", "c2"]


async def test_suppressed_persons_receive_nothing_and_say_why(run: Run) -> None:
    assert "p6@familie.no" not in run.by_address
    assert "p7@familie.no" not in run.by_address
    suppressed = run.deliveries("none")
    assert {pid: d["reason"] for pid, d in suppressed.items()} == {
        "p6": "no_parental_responsibility",
        "p7": "blocked",
    }
    assert all(d["status"] == "suppressed" for d in suppressed.values())
    told = {d["recipient_id"] for d in run.status["deliveries"] if d["channel"] != "none"}
    assert not told & {"p6", "p7"}


async def test_protected_guardian_appears_in_no_other_email(run: Run) -> None:
    secrets = ("Hemmelig", "Skjultsen", "p8@familie.no")
    for address, received in run.by_address.items():
        if address == "p8@familie.no":
            continue
        seen = texts(received.message) + received.raw.decode("utf-8", "replace")
        for secret in secrets:
            assert secret not in seen, (address, secret)
    # ... and the status API shows the protected guardian by id only
    assert "Hemmelig" not in str(run.status) and "p8@familie.no" not in str(run.status)


async def test_status_api_shows_every_delivery_final_with_history(run: Run) -> None:
    deliveries = run.status["deliveries"]
    assert run.status["counts"] == {
        "sent": len(TOLD),
        "delivered": len(TOLD),  # in-app
        "suppressed": 2,
    }
    for d in deliveries:
        statuses = [h["status"] for h in d["history"]]
        assert statuses[-1] == d["status"]
        assert len(statuses) == len(set(statuses))  # forward only, nothing twice
        if d["channel"] == "none":
            assert statuses == ["suppressed"]
        elif d["channel"] == "email":
            assert statuses[0] == "queued" and statuses[-1] == DeliveryStatus.sent.value
        assert all(h["at"] for h in d["history"])
