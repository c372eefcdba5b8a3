"""Issue 10: protected and excluded persons never show through, on both store backends.

Everything goes through the HTTP API of a whole gateway (tests/harness.py) with a
real SMTP peer (aiosmtpd) and a real webhook receiver; the workers run on a
ManualClock. Each test fails on the code before the issue was fixed.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.auth import create_tenant, hash_api_key, new_api_key
from gateway.clock import ManualClock
from gateway.models import ApiKey, Scope
from gateway.settings import Settings
from tests.conftest import SECRET_KEY
from tests.contract.conftest import REDIS_URL, forget_keys, require_redis
from tests.harness import Gateway, running
from tests.peers.fcm import FcmServer, write_service_account
from tests.peers.smtp import SmtpPeer
from tests.peers.twilio import TwilioPeer
from tests.test_sms import ACCOUNT_SID, AUTH_TOKEN, twilio_settings

SENDER = "Asker kommune <varsel@asker.kommune.no>"
PROJECT = "budbringer-test"

# A class 5A of Solvang skole: Kari (c1) with a strictly protected mother (p1) and a
# father (p2), both with parental responsibility; Per (c2) with his mother (p3).
DIRECTORY: dict[str, Any] = {
    "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
    "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
    "persons": [
        {
            "id": "c1",
            "role": "child",
            "given_name": "Kari",
            "birth_date": "2015-03-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        },
        {
            "id": "c2",
            "role": "child",
            "given_name": "Per",
            "birth_date": "2015-06-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        },
        {
            "id": "p1",
            "role": "guardian",
            "given_name": "Hemmelig",
            "email": "hemmelig@example.no",
            "phone": "90012345",
            "protection": "strictly_confidential",
        },
        {"id": "p2", "role": "guardian", "given_name": "Far", "email": "far@example.no"},
        {"id": "p3", "role": "guardian", "given_name": "Mor", "email": "mor@example.no"},
    ],
    "relations": [
        {"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True},
        {"child_id": "c1", "guardian_id": "p2", "parental_responsibility": True},
        {"child_id": "c2", "guardian_id": "p3", "parental_responsibility": True},
    ],
}


def without_protection(directory: dict[str, Any]) -> dict[str, Any]:
    """The same batch as a platform that does not carry protection sends it."""
    body = copy.deepcopy(directory)
    for person in body["persons"]:
        person.pop("protection", None)
    return body


@dataclass
class Hooks:
    """The platform's webhook receiver: every body it got, parsed."""

    base: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(json.loads(await request.text()))
        return web.Response(status=204)


@dataclass
class Rig:
    gw: Gateway
    smtp: SmtpPeer
    twilio: TwilioPeer
    fcm: FcmServer
    hooks: Hooks
    tenant_id: str
    key: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.gw.session.request(
            method, f"{self.gw.url}{path}", json=body, headers=self.auth()
        ) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def load(self, body: dict[str, Any]) -> None:
        status, answer = await self.call("POST", "/v1/directory", body)
        assert status == 200, answer

    async def post(self, event_id: str, **data: Any) -> tuple[int, Any]:
        event = {
            "id": event_id,
            "type": "message.created",
            "data": {"subject": "Tur", "body": "Vi går på tur fredag.", **data},
        }
        return await self.call("POST", "/v1/events", event)

    async def send(self, event_id: str, **data: Any) -> str:
        status, answer = await self.post(event_id, **data)
        assert status == 202, answer
        await self.gw.run()
        return str(answer["message_id"])

    async def status(self, message_id: str) -> dict[str, Any]:
        status, answer = await self.call("GET", f"/v1/messages/{message_id}")
        assert status == 200, answer
        return dict(answer)


@pytest.fixture(params=["sqlite", "redis"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    prefix = ""
    if request.param == "redis":
        require_redis()
        prefix = f"bbtest-privacy-{uuid.uuid4().hex[:12]}"
        store_url = f"{REDIS_URL}?prefix={prefix}"
    else:
        store_url = f"sqlite:///{tmp_path / 'budbringer.db'}"
    hooks = Hooks()
    app = web.Application()
    app.router.add_post("/hook", hooks.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    hooks.base = f"http://{host}:{port}"
    clock = ManualClock()
    try:
        async with (
            SmtpPeer() as smtp,
            TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio,
            FcmServer(project_id=PROJECT) as fcm,
        ):
            account = write_service_account(tmp_path / "sa.json", fcm.token_url, PROJECT)
            fcm.trust(account)
            settings = Settings(
                store_url=store_url,
                outbox_dir=tmp_path / "outbox",
                secret_key=SECRET_KEY,
                smtp={"host": smtp.host, "port": smtp.port, "tls": "none", "sender": SENDER},
                twilio=twilio_settings(twilio.base_url),
                fcm={
                    "service_account_file": account,
                    "base_url": fcm.url,
                    "token_url": fcm.token_url,
                },
            )
            async with running(settings, clock) as gw:
                tenant, key, _ = await create_tenant(gw.service.store, "Asker kommune", clock.now())
                built = Rig(gw, smtp, twilio, fcm, hooks, tenant.id, key)
                await built.load(DIRECTORY)
                yield built
    finally:
        await runner.cleanup()
        if prefix:
            forget_keys(prefix)


async def grant_protected_scope(rig: Rig) -> None:
    """The tenant's setting (webhooks, which no key reads) and the rig's own key."""
    store = rig.gw.service.store
    await store.set_tenant_scopes(rig.tenant_id, ["staff", "protected"])
    rig.key = new_api_key()
    await store.add_api_key(
        ApiKey(
            id="key_protected",
            tenant_id=rig.tenant_id,
            key_hash=hash_api_key(rig.key),
            scopes=sorted(Scope),
            created_at=rig.gw.clock.now(),
        )
    )


# --------------------------------------------------------------------------- finding 1


async def test_a_reimport_without_protection_keeps_the_address_hidden(rig: Rig) -> None:
    await rig.load(without_protection(DIRECTORY))
    status, answer = await rig.call("GET", "/v1/persons/p1")
    assert status == 403, answer  # still protected: the record is not shown
    message_id = await rig.send("evt-1", audience={"groups": ["g1"]})
    view = await rig.status(message_id)
    recipients = {d["recipient_id"] for d in view["deliveries"]}
    assert "p1" not in recipients
    assert any(r.startswith("protected-") for r in recipients)
    # A lower level sent explicitly does not lower it either.
    lowered = copy.deepcopy(DIRECTORY)
    lowered["persons"][2]["protection"] = "none"
    await rig.load(lowered)
    assert (await rig.call("GET", "/v1/persons/p1"))[0] == 403


async def test_only_the_audited_call_lowers_protection(rig: Rig) -> None:
    change = {"level": "none", "reason": "Vedtak opphevet 2026-11-30", "actor": "rektor"}
    status, answer = await rig.call("PUT", "/v1/persons/p1/protection", change)
    assert status == 403, answer  # lowering needs the protected scope
    await grant_protected_scope(rig)
    status, answer = await rig.call("PUT", "/v1/persons/p1/protection", {"level": "none"})
    assert status == 422  # no reason, no actor
    assert {tuple(e["loc"]) for e in answer["errors"]} == {("reason",), ("actor",)}
    status, answer = await rig.call("PUT", "/v1/persons/p1/protection", change)
    assert status == 200, answer
    assert answer["protection"] == "none"
    assert [(h["previous"], h["level"], h["actor"]) for h in answer["history"]] == [
        ("none", "strictly_confidential", "import"),
        ("strictly_confidential", "none", "rektor"),
    ]
    status, person = await rig.call("GET", "/v1/persons/p1")
    assert (status, person["protection"]) == (200, "none")
    status, answer = await rig.call("GET", "/v1/persons/p1/protection")
    assert status == 200 and answer["history"][-1]["reason"] == change["reason"]
    status, _ = await rig.call("PUT", "/v1/persons/ghost/protection", change)
    assert status == 404


async def test_raising_protection_needs_no_scope(rig: Rig) -> None:
    change = {"level": "confidential", "reason": "Fortrolig adresse", "actor": "rektor"}
    status, answer = await rig.call("PUT", "/v1/persons/p2/protection", change)
    assert (status, answer["protection"]) == (200, "confidential")
    assert answer["history"] == []  # reasons are for keys with the protected scope
    assert (await rig.call("GET", "/v1/persons/p2"))[0] == 403
    assert (await rig.call("GET", "/v1/persons/p2/protection"))[0] == 403


# --------------------------------------------------------------------------- finding 3


async def test_webhooks_use_the_same_pseudonyms_as_the_status(rig: Rig) -> None:
    status, answer = await rig.call(
        "POST",
        "/v1/webhooks/endpoints",
        {"url": f"{rig.hooks.base}/hook", "event_types": ["delivery.updated", "message.read"]},
    )
    assert status == 201, answer
    message_id = await rig.send("evt-1", audience={"groups": ["g1"]})
    await rig.gw.run()
    view = await rig.status(message_id)
    shown = {d["id"]: d["recipient_id"] for d in view["deliveries"]}
    sent = [b["data"] for b in rig.hooks.bodies if b["type"] == "delivery.updated"]
    assert sent, "no delivery.updated webhooks arrived"
    assert all(d["recipient_id"] != "p1" for d in sent)
    for data in sent:
        assert data["recipient_id"] == shown[data["delivery_id"]]
    assert any(d["recipient_id"].startswith("protected-") for d in sent)
    # The outbox listing shows the same bodies.
    status, listing = await rig.call("GET", "/v1/webhooks/messages")
    assert status == 200
    assert '"p1"' not in json.dumps(listing)
    # With the protected scope the real ids come through.
    await grant_protected_scope(rig)
    await rig.send("evt-2", audience={"groups": ["g1"]})
    await rig.gw.run()
    later = [b["data"]["recipient_id"] for b in rig.hooks.bodies if b["type"] == "delivery.updated"]
    assert "p1" in later


# --------------------------------------------------------------------------- finding 4


async def test_every_child_of_the_audience_is_listed_with_why_nobody_was_told(rig: Rig) -> None:
    more = copy.deepcopy(DIRECTORY)
    more["persons"] += [
        # c3 has no guardian in the directory at all; c4's only guardian is blocked.
        {
            "id": "c3",
            "role": "child",
            "given_name": "Ola",
            "birth_date": "2015-01-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        },
        {
            "id": "c4",
            "role": "child",
            "given_name": "Nora",
            "birth_date": "2015-02-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        },
        {"id": "p4", "role": "guardian", "given_name": "Sperret", "email": "p4@example.no"},
    ]
    more["relations"].append(
        {"child_id": "c4", "guardian_id": "p4", "parental_responsibility": True}
    )
    await rig.load(more)
    block = {"value": True, "reason": "Court order 2026-11-01", "actor": "rektor"}
    status, _ = await rig.call("PUT", "/v1/relations/c4/p4/flags/blocked", block)
    assert status == 200
    status, accepted = await rig.post("evt-1", audience={"groups": ["g1"]})
    assert status == 202
    assert accepted["recipients"] == 3  # p1, p2, p3
    assert accepted["suppressed"] == {"blocked": 1, "no_recipient": 1}
    await rig.gw.run()
    view = await rig.status(accepted["message_id"])
    children = {c["child_id"]: c for c in view["children"]}
    assert children["c3"]["reached"] is False
    assert children["c3"]["reason"] == "no_recipient"
    assert children["c4"]["reason"] == "all_suppressed"
    assert children["c2"]["reason"] is None
    summary = view["summary"]
    assert summary["children_total"] == 4
    assert {"c3", "c4"} <= set(summary["children_not_reached"])
    assert summary["children_not_told"] == 2
    # Nobody was sent anything about c3 or c4.
    assert sorted(m.rcpt_tos[0] for m in rig.smtp.received) == [
        "far@example.no",
        "hemmelig@example.no",
        "mor@example.no",
    ]


# --------------------------------------------------------------------------- finding 6


async def test_confidential_content_that_reaches_nobody_is_refused(rig: Rig) -> None:
    status, answer = await rig.post(
        "evt-c1", category="confidential", audience={"children": ["c2"]}
    )
    assert status == 422, answer
    [error] = answer["errors"]
    assert error["loc"] == ["data", "audience"]
    assert error["type"] == "no_recipients"
    assert "confidential_not_named" in error["message"]
    assert "Mor" not in json.dumps(answer) and "p3" not in json.dumps(answer)
    # Nothing was stored: the same id may be sent again, now accepting it.
    status, answer = await rig.post(
        "evt-c1",
        category="confidential",
        audience={"children": ["c2"]},
        allow_no_recipients=True,
    )
    assert status == 202, answer
    assert (answer["recipients"], answer["suppressed"]) == (0, {"confidential_not_named": 1})
    # Named by id, it goes through and says how many.
    status, answer = await rig.post(
        "evt-c2", category="confidential", audience={"guardians": ["p3"]}
    )
    assert (status, answer["recipients"]) == (202, 1)


# --------------------------------------------------------------------------- finding 5


def read_link(rig: Rig, address: str) -> str:
    """The path of the personal read link in the last email to ``address``."""
    [*_, mail] = [m for m in rig.smtp.received if m.rcpt_tos == [address]]
    text = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    match = re.search(r"https?://[^/\s]+(/r/[A-Za-z0-9_\-]+)", text)
    assert match, "no read link in the email"
    return match.group(1)


async def app_token(rig: Rig, person_id: str) -> dict[str, str]:
    status, answer = await rig.call("POST", f"/v1/guardians/{person_id}/tokens")
    assert status == 201, answer
    return {"Authorization": f"Bearer {answer['token']}"}


async def opens(rig: Rig, path: str, headers: dict[str, str] | None = None) -> int:
    async with rig.gw.session.get(f"{rig.gw.url}{path}", headers=headers) as resp:
        await resp.read()
        return resp.status


async def inbox(rig: Rig, headers: dict[str, str]) -> list[str]:
    async with rig.gw.session.get(f"{rig.gw.url}/v1/me/inbox", headers=headers) as resp:
        assert resp.status == 200
        return [i["message_id"] for i in (await resp.json())["items"]]


@pytest.mark.parametrize("change", ["blocked", "information_revoked"])
async def test_a_block_or_revocation_withdraws_links_and_inbox_items(rig: Rig, change: str) -> None:
    if change == "information_revoked":
        # p2 is told about c1 only by a § 47 grant, revoked later.
        body = copy.deepcopy(DIRECTORY)
        body["relations"][1]["parental_responsibility"] = False
        await rig.load(body)
        grant = {"value": True, "reason": "bl § 47", "actor": "rektor"}
        assert (await rig.call("PUT", "/v1/relations/c1/p2/flags/information_granted", grant))[
            0
        ] == 200
    message_id = await rig.send("evt-1", audience={"groups": ["g1"]})
    link = read_link(rig, "far@example.no")
    token = await app_token(rig, "p2")
    assert await opens(rig, link) == 200
    assert await inbox(rig, token) == [message_id]

    flag, value = ("blocked", True) if change == "blocked" else ("information_granted", False)
    body = {"value": value, "reason": "Court order 2026-11-01", "actor": "rektor"}
    assert (await rig.call("PUT", f"/v1/relations/c1/p2/flags/{flag}", body))[0] == 200

    assert await opens(rig, link) == 410
    assert await inbox(rig, token) == []
    assert await opens(rig, f"/v1/me/inbox/{message_id}", token) == 404
    # The co-guardian's access is untouched, and the change is in the flag history.
    assert await opens(rig, read_link(rig, "hemmelig@example.no")) == 200
    history = await rig.gw.service.store.flag_history(rig.tenant_id, "c1", "p2")
    assert history[-1].reason == "Court order 2026-11-01"


class ParentPages:
    """A browser-like client of the parent pages (/p/...), with its own cookie jar."""

    def __init__(self, rig: Rig) -> None:
        self.url = rig.gw.url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(f"{self.url}{path}", allow_redirects=False) as resp:
            return resp.status, await resp.text()

    async def open(self, read_link_path: str) -> int:
        """Open a message's personal link under /p/ (the read link's token)."""
        status, _ = await self.get(read_link_path.replace("/r/", "/p/", 1))
        return status

    async def post(self, path: str, form: dict[str, str]) -> int:
        async with self.http.post(f"{self.url}{path}", data=form, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    async def close(self) -> None:
        await self.http.close()


async def record_absence(rig: Rig, event_id: str, child_id: str) -> str:
    event = {
        "id": event_id,
        "type": "absence.recorded",
        "data": {"child_id": child_id, "group_id": "g1", "lesson": {"number": 2}},
    }
    status, answer = await rig.call("POST", "/v1/events", event)
    assert status == 202, answer
    await rig.gw.run()
    return str(answer["message_id"])


async def test_a_block_withdraws_access_on_the_parent_pages_too(rig: Rig) -> None:
    message_id = await rig.send("evt-1", audience={"groups": ["g1"]})
    alert_id = await record_absence(rig, "abs-1", "c1")
    link = read_link(rig, "far@example.no")
    pages = ParentPages(rig)
    try:
        assert await pages.open(link) == 303
        status, page = await pages.get("/p/inbox")
        assert status == 200
        assert f"messages/{message_id}" in page and f"messages/{alert_id}" in page
        status, page = await pages.get("/p/absence")
        assert f"absence/{alert_id}/answer" in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf

        body = {"value": True, "reason": "Court order 2026-11-01", "actor": "rektor"}
        assert (await rig.call("PUT", "/v1/relations/c1/p2/flags/blocked", body))[0] == 200

        # The link no longer opens a session; the open session no longer shows the child.
        fresh = ParentPages(rig)
        try:
            assert await fresh.open(link) == 410
        finally:
            await fresh.close()
        status, page = await pages.get("/p/inbox")
        assert status == 200
        assert message_id not in page and alert_id not in page
        assert (await pages.get(f"/p/messages/{message_id}"))[0] == 404
        status, page = await pages.get("/p/absence")
        assert status == 200 and alert_id not in page
        answer = {"csrf": csrf.group(1), "kind": "sick", "text": "Feber"}
        assert await pages.post(f"/p/absence/{alert_id}/answer", answer) == 404
        assert await rig.gw.service.store.list_absence_explanations(rig.tenant_id, alert_id) == []
        # The protected co-guardian keeps hers.
        mother = ParentPages(rig)
        try:
            assert await mother.open(read_link(rig, "hemmelig@example.no")) == 303
            assert message_id in (await mother.get("/p/inbox"))[1]
        finally:
            await mother.close()
    finally:
        await pages.close()


async def test_protection_raised_on_a_co_guardian_withdraws_the_others_access(rig: Rig) -> None:
    await grant_protected_scope(rig)
    lower = {"level": "none", "reason": "ikke lenger sperret", "actor": "rektor"}
    assert (await rig.call("PUT", "/v1/persons/p1/protection", lower))[0] == 200
    message_id = await rig.send("evt-1", audience={"groups": ["g1"]})
    father, mother = read_link(rig, "far@example.no"), read_link(rig, "hemmelig@example.no")
    token = await app_token(rig, "p2")
    assert await opens(rig, father) == 200
    rig.gw.clock.advance(60)
    raise_ = {"level": "strictly_confidential", "reason": "sperret igjen", "actor": "rektor"}
    assert (await rig.call("PUT", "/v1/persons/p1/protection", raise_))[0] == 200
    assert await opens(rig, father) == 410
    assert message_id not in await inbox(rig, token)
    assert await opens(rig, mother) == 200  # the protected person keeps her own access


# --------------------------------------------------------------------------- finding 2

# Everything that would tell where the protected child is: unit, unit's SMS sender and
# sender name, class, the sending teacher.
# (Words long enough never to turn up by chance in a random read-link token.)
PLACE_WORDS = ("Solvang", "SolvangSk", "Rektor Solvang", "Ekornklassen", "Hansen")
NEUTRAL_PLACES = {"nb": "ved skolen", "nn": "ved skulen", "en": "at the school"}
NEUTRAL_HEADERS = {
    "nb": "Melding fra kommunen",
    "nn": "Melding frå kommunen",
    "en": "Message from the municipality",
}


def items_text(items: list[dict[str, Any]]) -> list[str]:
    return [f"{i['subject']} {i['body']}" for i in items]


def everything_sent_to(rig: Rig, email: str, phone: str, device_token: str) -> list[str]:
    """Every text (headers included) any channel carried to this person."""
    texts = [m.raw.decode("utf-8", "replace") for m in rig.smtp.received if m.rcpt_tos == [email]]
    for mail in rig.smtp.received:
        if mail.rcpt_tos == [email]:
            texts += [
                part.get_content()
                for part in mail.message.walk()
                if part.get_content_maintype() == "text"
            ]
    texts += [json.dumps(r.form) for r in rig.twilio.requests if r.field("To") == phone]
    texts += [
        json.dumps(s.body, ensure_ascii=False)
        for s in rig.fcm.sent
        if s.body["message"].get("token") == device_token
    ]
    return texts


@pytest.mark.parametrize(
    ("language", "level"),
    [("nb", "strictly_confidential"), ("nn", "confidential"), ("en", "strictly_confidential")],
)
async def test_a_protected_co_guardian_hides_the_place_from_the_other_parent(
    rig: Rig, language: str, level: str
) -> None:
    body = copy.deepcopy(DIRECTORY)
    body["persons"][2]["protection"] = level  # p1, Kari's mother: fortrolig or strengt
    body["units"][0].update(sender_name="Rektor Solvang", sms_sender="SolvangSk")
    body["groups"][0]["name"] = "Ekornklassen"
    far = body["persons"][3]
    far.update(phone="91234567", language=language)
    mor = body["persons"][4]
    mor.update(phone="92345678")
    # Every channel for everyday messages, so each template is used.
    everything = {"channels": {"general": ["push", "sms", "email"]}}
    body["preferences"] = {"p2": everything, "p3": everything}
    await rig.load(body)
    token = await app_token(rig, "p2")
    async with rig.gw.session.put(
        f"{rig.gw.url}/v1/me/devices/d1",
        json={"token": "tok-far", "platform": "android"},
        headers=token,
    ) as resp:
        assert resp.status in (200, 201), await resp.text()

    message_id = await rig.send("evt-1", audience={"groups": ["g1"]}, sender_name="Lærer Hansen")
    status, answer = await rig.call(
        "POST",
        "/v1/events",
        {
            "id": "abs-1",
            "type": "absence.recorded",
            "data": {"child_id": "c1", "group_id": "g1", "lesson": {"number": 2}},
        },
    )
    assert status == 202, answer
    await rig.gw.run()

    sent = everything_sent_to(rig, "far@example.no", "+4791234567", "tok-far")
    assert len(sent) >= 6, "email, SMS and push of both messages should have gone"
    for text in sent:
        for word in PLACE_WORDS:
            assert word not in text, (word, text[:300])
    assert any(NEUTRAL_HEADERS[language] in text for text in sent)
    # The absence alert says where by kind only: "... til stede ved skolen ...".
    assert any(NEUTRAL_PLACES[language] in text for text in sent)
    # The app inbox and the read page say no more.
    async with rig.gw.session.get(f"{rig.gw.url}/v1/me/inbox", headers=token) as resp:
        items = (await resp.json())["items"]
    assert {i["message_id"] for i in items} >= {message_id}
    for word in PLACE_WORDS:
        assert word not in json.dumps(items, ensure_ascii=False)
    # Every read page the emails and SMS link to, the absence alert's too (it showed the
    # stored text, which names the school), and the alert's in their language.
    links = {m.group(1) for t in sent for m in re.finditer(r"https?://[^/\s\"]+(/r/[\w-]{64})", t)}
    assert len(links) >= 2, links
    for link in links:
        async with rig.gw.session.get(f"{rig.gw.url}{link}") as resp:
            page = await resp.text()
        assert resp.status == 200
        for word in PLACE_WORDS:
            assert word not in page, (link, word)
        assert "Lærer Hansen" not in page  # no sender line where a protected child is
    assert any(NEUTRAL_PLACES[language] in t for t in items_text(items))
    # Nor do the parent pages: the inbox and the open absence alerts.
    pages = ParentPages(rig)
    try:
        assert await pages.open(read_link(rig, "far@example.no")) == 303
        for path in ("/p/inbox", "/p/absence"):
            status, page = await pages.get(path)
            assert status == 200, path
            for word in PLACE_WORDS:
                assert word not in page, (path, word)
    finally:
        await pages.close()
    # Another family in the class, and the protected mother herself, see the school.
    mother_of_per = everything_sent_to(rig, "mor@example.no", "+4792345678", "-")
    assert any("Solvang skole" in text for text in mother_of_per)
    protected = everything_sent_to(rig, "hemmelig@example.no", "+4790012345", "-")
    assert any("Solvang skole" in text for text in protected)


async def test_an_absence_alert_reads_in_the_guardians_language_in_the_app_and_on_the_page(
    rig: Rig,
) -> None:
    """The SMS came in English, the app inbox and the read page in Norwegian: they showed
    the message's stored (Bokmål) text, not our texts in the guardian's language."""
    body = copy.deepcopy(DIRECTORY)
    far = body["persons"][3]
    far.update(phone="91234567", language="en")
    body["preferences"] = {"p2": {"channels": {"absence": ["sms", "email"]}}}
    await rig.load(body)
    status, answer = await rig.call(
        "POST",
        "/v1/events",
        {"id": "abs-en", "type": "absence.recorded", "data": {"child_id": "c1", "group_id": "g1"}},
    )
    assert status == 202, answer
    await rig.gw.run()
    token = await app_token(rig, "p2")
    async with rig.gw.session.get(f"{rig.gw.url}/v1/me/inbox", headers=token) as resp:
        [item] = [i for i in (await resp.json())["items"] if i["category"] == "absence"]
    assert item["subject"].startswith("Absence: ") and "Fravær" not in item["body"]
    async with rig.gw.session.get(f"{rig.gw.url}{read_link(rig, 'far@example.no')}") as resp:
        page = await resp.text()
    assert resp.status == 200 and 'lang="en"' in page
    assert "Absence: " in page and "Fravær" not in page
    # the page asks for the answer through its link, not in the app (the inbox does)
    assert "Tell us through the link." in page and "in the app" not in page
    assert "Give a short explanation in the app." in item["body"]
    # The SMS says to answer via the link: the page leads straight to the answer form.
    link = read_link(rig, "far@example.no")
    assert (
        f'<a href="../p/{link.rsplit("/", 1)[1]}?to=absence">Answer the absence alert</a>' in page
    )
    pages = ParentPages(rig)
    try:
        async with pages.http.get(
            f"{rig.gw.url}{link.replace('/r/', '/p/')}?to=absence", allow_redirects=False
        ) as resp:
            assert (resp.status, resp.headers["Location"]) == (303, "absence")
        status, form = await pages.get("/p/absence")
        assert status == 200 and "/answer" in form
    finally:
        await pages.close()
    # Answered (here in the app): the page no longer offers to answer.
    async with rig.gw.session.post(
        f"{rig.gw.url}/v1/me/inbox/{item['message_id']}/absence-reply",
        json={"kind": "sick"},
        headers=token,
    ) as resp:
        assert resp.status == 200, await resp.text()
    async with rig.gw.session.get(f"{rig.gw.url}{link}") as resp:
        answered = await resp.text()
    # nor asks for an answer through a link that is no longer there
    assert "Answer the absence alert" not in answered and "through the link" not in answered
    # The email's read link leads to that form too: "through the link", not "in the app"
    # (this guardian has no app).
    [mail] = [m for m in rig.smtp.received if m.rcpt_tos == ["far@example.no"]]
    parts = [p.get_content() for p in mail.message.walk() if p.get_content_maintype() == "text"]
    assert len(parts) == 2
    for part in parts:
        assert "Tell us through the link." in part and "in the app" not in part


# --------------------------------------------------------------------------- absence


async def test_an_absence_report_no_staff_can_receive_raises_absence_unrouted(rig: Rig) -> None:
    status, answer = await rig.call(
        "POST",
        "/v1/webhooks/endpoints",
        {"url": f"{rig.hooks.base}/hook", "event_types": ["absence.unrouted"]},
    )
    assert status == 201, answer
    report = {
        "id": "rep-1",
        "type": "absence.reported",
        "data": {"child_id": "c2", "guardian_id": "p3", "date": "2026-11-30", "kind": "sick"},
    }
    status, answer = await rig.call("POST", "/v1/events", report)
    assert status == 202, answer
    await rig.gw.run()
    [hook] = [b for b in rig.hooks.bodies if b["type"] == "absence.unrouted"]
    assert hook["data"]["child_id"] == "c2"
    assert hook["data"]["reason"] == "no_staff"
    assert hook["data"]["message_id"] == answer["message_id"]
    view = await rig.status(answer["message_id"])
    assert view["absence"]["unrouted"] == "no_staff"
    # With a member of staff at the unit, a report is routed and nothing is raised.
    staffed = copy.deepcopy(DIRECTORY)
    staffed["persons"].append(
        {"id": "s1", "role": "staff", "given_name": "Lærer", "unit_ids": ["u1"]}
    )
    await rig.load(staffed)
    report["id"], report["data"]["date"] = "rep-2", "2026-12-01"
    status, answer = await rig.call("POST", "/v1/events", report)
    assert status == 202, answer
    await rig.gw.run()
    assert len([b for b in rig.hooks.bodies if b["type"] == "absence.unrouted"]) == 1
    assert (await rig.status(answer["message_id"]))["absence"]["unrouted"] is None


# --------------------------------------------------------------------------- two roles


async def test_a_teacher_who_is_also_a_parent_gets_one_message_per_contact_point(
    rig: Rig,
) -> None:
    body = copy.deepcopy(DIRECTORY)
    body["persons"][3]["phone"] = "91234567"  # p2, Kari's father ...
    body["persons"].append(  # ... is also the class's teacher, as a row of its own
        {
            "id": "s1",
            "role": "staff",
            "given_name": "Far",
            "email": "far@example.no",
            "phone": "+4791234567",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        }
    )
    body["preferences"] = {"p2": {"channels": {"general": ["sms", "email"]}}}
    await rig.load(body)
    message_id = await rig.send("evt-1", audience={"groups": ["g1"], "staff": ["s1"]})
    assert [m.rcpt_tos for m in rig.smtp.received].count(["far@example.no"]) == 1
    assert [r.field("To") for r in rig.twilio.requests].count("+4791234567") == 1
    view = await rig.status(message_id)
    merged = [
        (d["recipient_id"], d["channel"])
        for d in view["deliveries"]
        if d["reason"] == "same_contact_point"
    ]
    assert ("s1", "email") in merged
    # The parent's own message (naming Kari) is the one that went.
    [mail] = [m for m in rig.smtp.received if m.rcpt_tos == ["far@example.no"]]
    assert "Kari" in mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
