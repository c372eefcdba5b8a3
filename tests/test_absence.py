"""Absence end to end through the real HTTP API, workers driven by a ManualClock.

One school class: Kari (c1) has two guardians with parental responsibility (p1 with the
app, p2 without, English), a father without it (p3) and a blocked parent (p4); neither
of those two is ever told anything. Ola (c2) has one guardian (p5) who never answers.
The class has a contact teacher (t1); the school has another staff member (t2).
SMS goes through the real SMS channel to a Twilio-like server, which also posts the
guardians' signed SMS answers; webhooks go to a local receiver and are verified with
the ``standardwebhooks`` package.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from channels.gsm import encoding
from channels.sms import INBOUND_PATH
from gateway.auth import create_api_key
from gateway.clock import ManualClock
from gateway.constants import JOB_ABSENCE_PLAN, JOB_SEND
from gateway.models import (
    DeliveryStatus,
    Device,
    DirectoryBatch,
    Job,
    Preferences,
    Scope,
    derive_id,
)
from gateway.settings import Settings
from tests.harness import Gateway, new_tenant, running
from tests.peers.twilio import TwilioPeer
from tests.test_sms import ACCOUNT_SID, AUTH_TOKEN, twilio_settings
from tests.test_tracking_scenario import Receiver, verified_events

MINUTE = 60.0
OUR_NUMBER = "+4722000000"
PHONES = {
    "p1": "+4741100001",
    "p2": "+4741100002",
    "p3": "+4741100003",
    "p4": "+4741100004",
    "p5": "+4741100005",
    "c3": "+4741100033",
    "l1": "+4741100044",
    "p6": "+4741100006",
}
NOTE = "Kommer ofte for sent"  # the staff note: never sent to guardians


def directory(*, p2_protected: bool = False) -> DirectoryBatch:
    def person(pid: str, role: str, name: str, **extra: Any) -> dict[str, Any]:
        return {"id": pid, "role": role, "given_name": name, "family_name": "Nordmann", **extra}

    return DirectoryBatch.model_validate(
        {
            "units": [
                {"id": "u1", "kind": "school", "name": "Solvang skole"},
                {"id": "u2", "kind": "adult_education", "name": "Asker voksenopplæring"},
            ],
            "groups": [
                {"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"},
                {"id": "g3", "unit_id": "u1", "kind": "class", "name": "VG3"},
            ],
            "persons": [
                person(
                    "c1",
                    "child",
                    "Kari",
                    birth_date="2015-03-01",
                    unit_ids=["u1"],
                    group_ids=["g1"],
                ),
                person(
                    "c2", "child", "Ola", birth_date="2015-06-01", unit_ids=["u1"], group_ids=["g1"]
                ),
                # 19, no consent: told themself, the guardian is not
                person(
                    "c3",
                    "child",
                    "Siri",
                    birth_date="2007-01-15",
                    unit_ids=["u1"],
                    group_ids=["g3"],
                    phone=PHONES["c3"],
                ),
                person(
                    "l1",
                    "learner",
                    "Amina",
                    birth_date="1990-04-04",
                    unit_ids=["u2"],
                    phone=PHONES["l1"],
                    language="en",
                ),
                person("p1", "guardian", "Per", phone=PHONES["p1"], email="p1@example.no"),
                person(
                    "p2",
                    "guardian",
                    "Pia",
                    phone=PHONES["p2"],
                    language="en",
                    protection="strictly_confidential" if p2_protected else "none",
                ),
                person("p3", "guardian", "Pål", phone=PHONES["p3"], email="p3@example.no"),
                person("p4", "guardian", "Petter", phone=PHONES["p4"], email="p4@example.no"),
                person("p5", "guardian", "Pernille", phone=PHONES["p5"], email="p5@example.no"),
                person("p6", "guardian", "Paul", phone=PHONES["p6"]),
                person(
                    "t1", "staff", "Tone", email="t1@example.no", unit_ids=["u1"], group_ids=["g1"]
                ),
                person("t2", "staff", "Trond", email="t2@example.no", unit_ids=["u1"]),
            ],
            "relations": [
                {"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True},
                {"child_id": "c1", "guardian_id": "p2", "parental_responsibility": True},
                {"child_id": "c1", "guardian_id": "p3", "parental_responsibility": False},
                {"child_id": "c1", "guardian_id": "p4", "parental_responsibility": True},
                {"child_id": "c2", "guardian_id": "p5", "parental_responsibility": True},
                {"child_id": "c3", "guardian_id": "p6", "parental_responsibility": True},
            ],
        }
    )


def recorded(event_id: str, child: str = "c1", lesson: int = 2, **data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "absence.recorded",
        "data": {
            "child_id": child,
            "date": "2026-11-27",
            "lesson": {"number": lesson, "from": "08:15", "to": "09:00"},
            "recorded_by": "t1",
            "note": NOTE,
            **data,
        },
    }


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioPeer]:
    async with TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as peer:
        yield peer


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def configured(settings: Settings, twilio: TwilioPeer) -> Settings:
    # A sender number that can receive answers (an alphanumeric id cannot: the alert then
    # asks for the answer through its link, tests/test_sms_budget.py).
    sender = twilio_settings(twilio.base_url, default_sender="+4741234567")
    return settings.model_copy(update={"twilio": sender})


class Rig:
    """The running gateway with the tenant, its key and helpers for these tests."""

    def __init__(self, gw: Gateway, tenant_id: str, key: str, twilio: TwilioPeer) -> None:
        self.gw = gw
        self.tenant_id = tenant_id
        self.key = key
        self.twilio = twilio
        self.sms_seen = 0

    async def post(self, event: dict[str, Any], status: int = 202) -> dict[str, Any]:
        async with self.gw.session.post(
            f"{self.gw.url}/v1/events", json=event, headers=self.gw.headers(self.key)
        ) as resp:
            assert resp.status == status, await resp.text()
            answer: dict[str, Any] = await resp.json()
        return answer

    async def run(self, advance: float = 0) -> None:
        self.gw.clock.advance(advance)
        await self.gw.run()

    def new_sms(self) -> dict[str, str]:
        """The SMS sent since the last call: number -> body."""
        fresh = self.twilio.requests[self.sms_seen :]
        self.sms_seen = len(self.twilio.requests)
        return {r.field("To") or "": r.field("Body") or "" for r in fresh}

    async def channels(self, message_id: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for d in await self.gw.deliveries(self.tenant_id, message_id):
            out.setdefault(d.recipient_id, set()).add(
                d.channel if d.status is not DeliveryStatus.suppressed else f"-{d.reason}"
            )
        return out

    async def token(self, person_id: str) -> dict[str, str]:
        """A parent-app token, issued with the app's key (it signs in protected guardians
        too, so it has the protected scope)."""
        _, app_key = await create_api_key(
            self.gw.service.store,
            self.tenant_id,
            [Scope.directory, Scope.protected],
            self.gw.service.clock.now(),
        )
        async with self.gw.session.post(
            f"{self.gw.url}/v1/guardians/{person_id}/tokens", headers=self.gw.headers(app_key)
        ) as resp:
            assert resp.status == 201, await resp.text()
            return self.gw.headers((await resp.json())["token"])

    async def inbound(
        self, settings: Settings, sender: str, body: str, sid: str | None = None
    ) -> None:
        result = await self.twilio.send_inbound(
            settings.public_url + INBOUND_PATH,
            from_=sender,
            to=OUR_NUMBER,
            body=body,
            sid=sid,
            via=self.gw.url,
        )
        assert result.status == 200


@pytest.fixture
async def rig(configured: Settings, clock: ManualClock, twilio: TwilioPeer) -> AsyncIterator[Rig]:
    async with running(configured, clock) as gw:
        tenant, key = await new_tenant(gw.service, clock, directory())
        store = gw.service.store
        await store.set_relation_flag(
            tenant.id, "c1", "p4", "blocked", True, "court order", "rektor", clock.now()
        )
        await store.upsert_device(
            tenant.id, "p1", Device(id="dev-p1", token="token-p1", platform="android")
        )
        yield Rig(gw, tenant.id, key, twilio)


async def endpoint(rig: Rig, receiver: Receiver) -> str:
    async with rig.gw.session.post(
        f"{rig.gw.url}/v1/webhooks/endpoints",
        json={"url": receiver.url},
        headers=rig.gw.headers(rig.key),
    ) as resp:
        assert resp.status == 201, await resp.text()
        secret: str = (await resp.json())["secret"]
    return secret


def outbox(settings: Settings, channel: str) -> list[str]:
    """What the development outbox wrote for a channel: subject and text of each email
    (``email/<delivery>.eml``) or push (``push.jsonl``), oldest push first."""
    folder = Path(settings.outbox_dir)
    if channel == "email":
        texts = []
        for path in sorted((folder / "email").glob("*.eml")):
            mail = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
            part = mail.get_body(preferencelist=("plain",))
            assert part is not None
            texts.append(f"{mail['Subject']}\n{part.get_content()}")
        return texts
    path = folder / f"{channel}.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [f"{r['subject']}\n{r['text']}" for r in map(json.loads, lines)]


async def test_mark_duplicate_sms_answer_and_status(
    rig: Rig, configured: Settings, receiver: Receiver
) -> None:
    secret = await endpoint(rig, receiver)
    first = await rig.post(recorded("evt-a1"))
    assert first["duplicate"] is False and "deduplicated_into" not in first
    alert_id = first["message_id"]
    await rig.run()

    # At once, on push and SMS: the two guardians with rights; never p3 nor p4.
    assert await rig.channels(alert_id) == {
        "p1": {"inapp", "push", "sms"},
        "p2": {"inapp", "sms"},
        "p3": {"-no_parental_responsibility"},
        "p4": {"-blocked"},
    }
    sms = rig.new_sms()
    assert set(sms) == {PHONES["p1"], PHONES["p2"]}
    nb, en = sms[PHONES["p1"]], sms[PHONES["p2"]]
    assert "Kari er ikke registrert som til stede ved Solvang skole i 2. time" in nb
    assert "kl. 08:15-09:00, fredag 27. november" in nb
    assert "Svar SYK, LEGE, FRI eller ANNET" in nb
    assert "Kari has not been registered as present at Solvang skole in lesson 2" in en
    for text in (nb, en):
        assert NOTE not in text and "Nordmann" not in text  # no note, first name only
        assert encoding(text) == "GSM-7"

    # The same child, day and lesson marked again: one alert; the later mark updates it.
    again = await rig.post(recorded("evt-a2", lesson=2, note="second mark"))
    assert again["deduplicated_into"] == alert_id
    assert (again["event_id"], again["message_id"], again["duplicate"]) == (
        "evt-a2",
        alert_id,
        False,
    )
    assert (await rig.post(recorded("evt-a2", lesson=2, note="second mark")))["duplicate"]
    await rig.post(recorded("evt-a1", note="changed"), status=409)
    await rig.run(MINUTE)
    assert rig.new_sms() == {}

    # p2 answers by SMS with a keyword; p1 writes something else (a plain reply).
    await rig.inbound(configured, PHONES["p2"], "Sick. Kari har feber")
    await rig.inbound(configured, PHONES["p1"], "Takk for beskjed")
    await rig.run()

    status = await rig.gw.status(rig.key, alert_id)
    absence = status["absence"]
    assert absence["marks"] == ["evt-a1", "evt-a2"]
    assert absence["note"] == "second mark"  # staff see the note; guardians never
    assert [(e["by"], e["kind"], e["text"], e["via"]) for e in absence["explanations"]] == [
        ("p2", "sick", "Kari har feber", "sms")
    ]
    assert [r["body"] for r in status["replies"]] == ["Takk for beskjed"]
    assert status["summary"]["children_reached"] == 1  # an answer reaches the child

    events = verified_events(receiver, secret)
    (explained,) = [e["data"] for e in events if e["type"] == "absence.explained"]
    assert explained["message_id"] == alert_id
    assert explained["absence_event_id"] == "evt-a1"
    assert (explained["recipient_id"], explained["kind"], explained["text"]) == (
        "p2",
        "sick",
        "Kari har feber",
    )
    assert [e["data"]["body"] for e in events if e["type"] == "reply.received"] == [
        "Takk for beskjed"
    ]

    # Answered: no escalation, no staff notice, however long we wait.
    await rig.run(10 * MINUTE)
    await rig.run(60 * MINUTE)
    assert rig.new_sms() == {}
    assert await rig.channels(alert_id) == {
        "p1": {"inapp", "push", "sms"},
        "p2": {"inapp", "sms"},
        "p3": {"-no_parental_responsibility"},
        "p4": {"-blocked"},
    }
    unreached = derive_id(rig.tenant_id, "evt-a1#unreached")
    assert await rig.gw.service.store.get_message(rig.tenant_id, unreached) is None


async def test_in_app_answer(rig: Rig, receiver: Receiver) -> None:
    secret = await endpoint(rig, receiver)
    alert_id = (await rig.post(recorded("evt-app")))["message_id"]
    await rig.run()
    app = await rig.token("p1")
    url = f"{rig.gw.url}/v1/me/inbox/{alert_id}/absence-reply"
    body = {"kind": "appointment", "text": "Tannlegen"}
    async with rig.gw.session.post(url, json=body, headers=app) as resp:
        assert resp.status == 200, await resp.text()
        first = await resp.json()
        assert first["kind"] == "appointment"
    await rig.run(MINUTE)  # a retry a minute later (the app lost the first answer)
    async with rig.gw.session.post(url, json=body, headers=app) as resp:
        assert resp.status == 200  # the same answer again adds nothing
        assert await resp.json() == first  # and says when it was given, not now
    async with rig.gw.session.post(url, json={"kind": "bored"}, headers=app) as resp:
        assert resp.status == 422
    # p3 (no parental responsibility) has no such message in the inbox
    async with rig.gw.session.post(url, json=body, headers=await rig.token("p3")) as resp:
        assert resp.status == 404
    await rig.run()
    status = await rig.gw.status(rig.key, alert_id)
    assert [(e["by"], e["via"]) for e in status["absence"]["explanations"]] == [("p1", "inapp")]
    assert {g["recipient_id"]: g["via"] for g in status["guardians"]}["p1"] == "reply"
    events = verified_events(receiver, secret)
    assert [e["data"]["text"] for e in events if e["type"] == "absence.explained"] == ["Tannlegen"]


async def test_a_direction_mark_a_keyboard_put_in_is_left_out_not_refused(rig: Rig) -> None:
    """The app's absence texts were refused (422) for a direction control a keyboard or
    a paste put in, where the parent pages and SMS answers keep the text without it."""
    alert_id = (await rig.post(recorded("evt-bidi")))["message_id"]
    await rig.run()
    url = f"{rig.gw.url}/v1/me/inbox/{alert_id}/absence-reply"
    body = {"kind": "sick", "text": "\u2067Feber\u2069 og hoste\u202e"}
    async with rig.gw.session.post(url, json=body, headers=await rig.token("p1")) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["text"] == "Feber og hoste"


async def test_cancellation_after_delivery(rig: Rig, twilio: TwilioPeer) -> None:
    # One of the two alert SMS fails for now and waits for its retry.
    twilio.fail_next(503, code=20503, message="Service Unavailable")
    alert_id = (await rig.post(recorded("evt-b1", lesson=4)))["message_id"]
    await rig.run()
    assert len(rig.new_sms()) == 2  # two tries: one taken, one refused for now
    deliveries = await rig.gw.deliveries(rig.tenant_id, alert_id)
    waiting = [d for d in deliveries if d.channel == "sms" and d.status is DeliveryStatus.sending]
    assert len(waiting) == 1

    answer = await rig.post(
        {"id": "evt-b1-x", "type": "absence.cancelled", "data": {"absence_event_id": "evt-b1"}}
    )
    correction_id = answer["message_id"]
    await rig.run()
    after = {d.id: d for d in await rig.gw.deliveries(rig.tenant_id, alert_id)}
    assert after[waiting[0].id].status is DeliveryStatus.cancelled
    assert after[waiting[0].id].reason == "absence_cancelled"
    # Both guardians saw the alert (at least in the app): both get the correction.
    assert await rig.channels(correction_id) == {
        "p1": {"inapp", "push", "sms"},
        "p2": {"inapp", "sms"},
    }
    corrections = rig.new_sms()
    assert corrections[PHONES["p1"]].startswith("Meldingen om fravær for Kari i 4. time")
    assert "was a mistake" in corrections[PHONES["p2"]]
    # the same cancellation again changes nothing; an unknown alert is refused
    again = await rig.post(
        {"id": "evt-b1-x", "type": "absence.cancelled", "data": {"absence_event_id": "evt-b1"}}
    )
    assert (again["message_id"], again["duplicate"]) == (correction_id, True)
    await rig.post(
        {"id": "evt-zz", "type": "absence.cancelled", "data": {"absence_event_id": "nope"}},
        status=422,
    )

    # Nothing more follows the cancelled alert: no retry, no escalation, no staff notice.
    await rig.run(10 * MINUTE)
    await rig.run(60 * MINUTE)
    assert rig.new_sms() == {}
    status = await rig.gw.status(rig.key, alert_id)
    assert status["absence"]["cancel_event_id"] == "evt-b1-x"
    assert (
        await rig.gw.service.store.get_message(
            rig.tenant_id, derive_id(rig.tenant_id, "evt-b1#unreached")
        )
        is None
    )
    # A new mark of the same lesson after the cancellation is a new alert.
    fresh = await rig.post(recorded("evt-b2", lesson=4))
    assert fresh["message_id"] != alert_id and "deduplicated_into" not in fresh


async def test_cancel_by_child_day_and_lesson_before_planning(rig: Rig) -> None:
    alert_id = (await rig.post(recorded("evt-c1", lesson=5)))["message_id"]
    cancel = {
        "id": "evt-c1-x",
        "type": "absence.cancelled",
        "data": {"child_id": "c1", "date": "2026-11-27", "lesson": {"number": 5}},
    }
    correction_id = (await rig.post(cancel))["message_id"]
    await rig.run()
    assert await rig.gw.deliveries(rig.tenant_id, alert_id) == []
    assert await rig.gw.deliveries(rig.tenant_id, correction_id) == []
    assert rig.new_sms() == {}


async def test_unreached_child_escalates_then_staff_are_told_once(
    rig: Rig, configured: Settings
) -> None:
    alert_id = (await rig.post(recorded("evt-d1", child="c2")))["message_id"]
    await rig.run()
    assert await rig.channels(alert_id) == {"p5": {"inapp", "sms"}}
    assert set(rig.new_sms()) == {PHONES["p5"]}

    # Unread for the escalation delay (absence: 10 minutes): the next channel, email.
    await rig.run(10 * MINUTE - 1)
    assert await rig.channels(alert_id) == {"p5": {"inapp", "sms"}}
    await rig.run(1)
    assert await rig.channels(alert_id) == {"p5": {"inapp", "sms", "email"}}
    escalated = [m for m in outbox(configured, "email") if "Ola" in m]
    assert len(escalated) == 1

    # Still nobody at 30 minutes: the contact teacher (t1, of 5A) is told, not t2.
    await rig.run(20 * MINUTE)
    notice_id = derive_id(rig.tenant_id, "evt-d1#unreached")
    assert await rig.channels(notice_id) == {"t1": {"inapp", "email"}}
    notice = await rig.gw.service.store.get_message(rig.tenant_id, notice_id)
    assert notice is not None
    assert notice.subject == "Ikke nådd: Ola"
    assert "Ingen er nådd med fraværsvarselet for Ola i 5A i 2. time" in notice.body
    mails = outbox(configured, "email")
    # ... once: more time and more runs make no second notice
    await rig.run(120 * MINUTE)
    await rig.run(24 * 60 * MINUTE)
    assert await rig.channels(notice_id) == {"t1": {"inapp", "email"}}
    assert outbox(configured, "email") == mails
    assert rig.new_sms() == {}


async def test_adult_pupil_and_learner_get_their_own_alert(rig: Rig) -> None:
    pupil = (await rig.post(recorded("evt-e1", child="c3")))["message_id"]
    learner = (await rig.post(recorded("evt-e2", child="l1", lesson=1)))["message_id"]
    await rig.run()
    assert await rig.channels(pupil) == {"c3": {"inapp", "sms"}, "p6": {"-adult_no_consent"}}
    assert await rig.channels(learner) == {"l1": {"inapp", "sms"}}
    sms = rig.new_sms()
    assert sms[PHONES["c3"]].startswith("Du er ikke registrert som til stede ved Solvang skole")
    assert sms[PHONES["l1"]].startswith(
        "You have not been registered as present at Asker voksenopplæring in lesson 1"
    )
    assert PHONES["p6"] not in sms


async def test_kindergarten_arrival_text(rig: Rig) -> None:
    event = recorded("evt-k1", expected_arrival="08:30")
    del event["data"]["lesson"]
    alert_id = (await rig.post(event))["message_id"]
    await rig.run()
    sms = rig.new_sms()
    assert sms[PHONES["p1"]].startswith(
        "Kari har ikke kommet til Solvang skole. Kari var ventet kl. 08:30, fredag 27. november."
    )
    message = await rig.gw.service.store.get_message(rig.tenant_id, alert_id)
    assert message is not None and message.subject == "Fravær: Kari"


async def test_unknown_child_or_unit_is_422(rig: Rig) -> None:
    answer = await rig.post(recorded("evt-u1", child="nobody"), status=422)
    assert answer["errors"][0]["loc"] == ["data", "child_id"]
    answer = await rig.post(recorded("evt-u2", unit_id="u9"), status=422)
    assert answer["errors"][0]["loc"] == ["data", "unit_id"]


async def test_settings_override(rig: Rig) -> None:
    url = f"{rig.gw.url}/v1/settings/absence"
    async with rig.gw.session.get(url, headers=rig.gw.headers(rig.key)) as resp:
        assert await resp.json() == {"dedup_window_minutes": 120, "staff_after_minutes": 30}
    body = {"dedup_window_minutes": 5}
    async with rig.gw.session.put(url, json=body, headers=rig.gw.headers(rig.key)) as resp:
        assert resp.status == 200
        assert (await resp.json())["dedup_window_minutes"] == 5
    async with rig.gw.session.put(
        url, json={"staff_after_minutes": 0}, headers=rig.gw.headers(rig.key)
    ) as resp:
        assert resp.status == 422
    first = (await rig.post(recorded("evt-w1", lesson=6)))["message_id"]
    rig.gw.clock.advance(6 * MINUTE)  # past the tenant's window: a second alert
    second = await rig.post(recorded("evt-w2", lesson=6))
    assert second["message_id"] != first and "deduplicated_into" not in second


# ------------------------------------------------------------------ guardians' reports


@pytest.fixture
async def protected_rig(
    configured: Settings, clock: ManualClock, twilio: TwilioPeer
) -> AsyncIterator[Rig]:
    async with running(configured, clock) as gw:
        tenant, key = await new_tenant(gw.service, clock, directory(p2_protected=True))
        await gw.service.store.set_relation_flag(
            tenant.id, "c1", "p4", "blocked", True, "court order", "rektor", clock.now()
        )
        yield Rig(gw, tenant.id, key, twilio)


async def test_report_from_the_app_by_a_protected_guardian(
    protected_rig: Rig, configured: Settings
) -> None:
    rig = protected_rig
    app = await rig.token("p2")
    body = {
        "id": "r-1",
        "child_id": "c1",
        "dates": ["2026-11-27", "2026-11-30"],
        "kind": "sick",
        "text": "Feber og hoste",
    }
    async with rig.gw.session.post(f"{rig.gw.url}/v1/me/absences", json=body, headers=app) as resp:
        assert resp.status == 202, await resp.text()
        answer = await resp.json()
    async with rig.gw.session.post(f"{rig.gw.url}/v1/me/absences", json=body, headers=app) as resp:
        assert resp.status == 202 and (await resp.json())["duplicate"] is True
    conflict = {**body, "text": "Noe annet"}
    async with rig.gw.session.post(
        f"{rig.gw.url}/v1/me/absences", json=conflict, headers=app
    ) as resp:
        assert resp.status == 409
    # a year typed wrong: refused naming the day, before anything is stored or sent
    for wrong, loc in (
        ({"date": "2999-01-01"}, ["date"]),
        ({"dates": ["2026-11-27", "1900-01-01"]}, ["dates", 1]),
        ({"date": "2026-11-12"}, ["date"]),  # 15 days back (the test clock: 27 November)
    ):
        async with rig.gw.session.post(
            f"{rig.gw.url}/v1/me/absences", json={"child_id": "c1", **wrong}, headers=app
        ) as resp:
            assert resp.status == 422, await resp.text()
            [error] = (await resp.json())["errors"]
            assert (error["loc"], error["type"]) == (loc, "out_of_range")
    # not p2's child
    other = {"child_id": "c2", "date": "2026-11-27"}
    async with rig.gw.session.post(f"{rig.gw.url}/v1/me/absences", json=other, headers=app) as resp:
        assert resp.status == 403
    await rig.run()

    event_id = answer["event_id"]
    # The contact teacher is told, in the app and by email, with the reason and text.
    assert await rig.channels(answer["message_id"]) == {"t1": {"inapp", "email"}}
    staff = await rig.gw.service.store.get_message(rig.tenant_id, answer["message_id"])
    assert staff is not None
    assert "Det er meldt fravær for Kari i 5A (fredag 27. november og mandag 30. november)" in (
        staff.body
    )
    assert "Årsak: Syk" in staff.body and "Feber og hoste" in staff.body
    # The reporter gets a confirmation; the co-guardian p1 is informed; p3 and p4 nothing.
    confirmation = derive_id(rig.tenant_id, f"{event_id}#confirmation")
    informed = derive_id(rig.tenant_id, f"{event_id}#informed")
    assert await rig.channels(confirmation) == {"p2": {"inapp", "sms"}}
    assert set(await rig.channels(informed)) == {"p1"}
    sms = rig.new_sms()
    assert sms[PHONES["p2"]].startswith("Thank you. The absence of Kari")
    told = sms[PHONES["p1"]]
    assert told.startswith("Det er meldt fravær for Kari (fredag 27. november og mandag")
    # Nothing about the protected reporter reaches the co-guardian or the teacher.
    emails = outbox(configured, "email")
    # The id as a standalone word: random link tokens may contain the letters "p2".
    p2_id = re.compile(r"(?<![A-Za-z0-9_-])p2(?![A-Za-z0-9_-])")
    for text in (told, staff.body, *emails, *outbox(configured, "push")):
        for secret in ("Pia", PHONES["p2"], "41100002"):
            assert secret not in text
        assert not p2_id.search(text)
    # the reason and the text go to staff only (the teacher's email), never to p1
    assert [m for m in emails if "Feber" in m] == [m for m in emails if "Fraværsmelding" in m]
    assert "Feber" not in told and "Syk" not in told

    # The status names the protected reporter by a pseudonym only.
    status = await rig.gw.status(rig.key, answer["message_id"])
    assert status["absence"]["reported_by"].startswith("protected-")
    assert status["absence"]["reason"] == "sick"
    assert '"p2"' not in json.dumps(status)

    # The app retries the report three weeks on (its days are out of the window now):
    # the answer it got then, not a 422.
    rig.gw.clock.advance(21 * 86_400)
    app = await rig.token("p2")  # a fresh token: the first one has expired
    async with rig.gw.session.post(f"{rig.gw.url}/v1/me/absences", json=body, headers=app) as resp:
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["duplicate"] is True


async def test_report_by_sms(rig: Rig, configured: Settings) -> None:
    # p5 got an SMS earlier (a general message), then reports by SMS
    await rig.post(
        {
            "id": "evt-info",
            "type": "message.created",
            "data": {"audience": {"children": ["c2"]}, "subject": "Info", "body": "Hei"},
        }
    )
    await rig.run()
    # p5 has no app: the general message went by SMS and email
    rig.new_sms()
    sid = "SM" + "5" * 32
    await rig.inbound(configured, PHONES["p5"], "FRAVÆR syk, Ola har omgangssyke", sid)
    await rig.run()
    # Twilio delivers the same webhook again: nothing new
    await rig.inbound(configured, PHONES["p5"], "FRAVÆR syk, Ola har omgangssyke", sid)
    await rig.run()
    confirmation = rig.new_sms()
    assert confirmation[PHONES["p5"]].startswith("Takk. Fraværet for Ola (fredag 27. november)")
    teacher = [m for m in outbox(configured, "email") if "Fraværsmelding: Ola" in m]
    assert len(teacher) == 1 and "Årsak: Syk" in teacher[0]
    # one SMS to p5 before (the general message), one confirmation: the retry made none
    assert len([r for r in rig.twilio.requests if r.field("To") == PHONES["p5"]]) == 2
    # a text that is no keyword stays a plain reply (to the confirmation, the latest SMS)
    await rig.inbound(configured, PHONES["p5"], "Hun er bedre nå")
    await rig.run()
    assert rig.new_sms() == {}
    assert len(outbox(configured, "email")) == len(teacher) + 1  # + the general message


async def test_report_for_a_child_without_rights_is_refused(rig: Rig) -> None:
    event = {
        "id": "evt-r9",
        "type": "absence.reported",
        "data": {"child_id": "c1", "guardian_id": "p3", "date": "2026-11-27", "kind": "sick"},
    }
    answer = await rig.post(event, status=422)
    assert answer["errors"][0]["loc"] == ["data", "guardian_id"]


async def test_quiet_hours_never_hold_an_alert(rig: Rig) -> None:
    # 09:00 UTC is 10:00 in Oslo, inside p2's quiet hours; a general message would wait.
    quiet = Preferences(quiet_start="08:00", quiet_end="16:00")
    await rig.gw.service.store.set_preferences(rig.tenant_id, "p2", quiet)
    alert_id = (await rig.post(recorded("evt-q1", lesson=7)))["message_id"]
    await rig.run()
    sms = await rig.gw.deliveries(rig.tenant_id, alert_id)
    (to_p2,) = [d for d in sms if d.recipient_id == "p2" and d.channel == "sms"]
    assert to_p2.not_before is None and to_p2.status is DeliveryStatus.sent
    assert PHONES["p2"] in rig.new_sms()


# --------------------------------------------------------------------------- SMS answers
# An answer is matched against the OPEN alerts sent to the number, in every tenant, never
# by the latest SMS sent to it.


async def answer(rig: Rig, settings: Settings, sender: str, body: str) -> str:
    """Send an SMS to us; the TwiML the gateway answered with."""
    result = await rig.twilio.send_inbound(
        settings.public_url + INBOUND_PATH, from_=sender, to=OUR_NUMBER, body=body, via=rig.gw.url
    )
    assert result.status == 200
    return result.text


async def explanations(rig: Rig, key: str, message_id: str) -> list[tuple[str, str, str]]:
    status = await rig.gw.status(key, message_id)
    return [(e["by"], e["kind"], e["text"]) for e in status["absence"]["explanations"]]


def emergency(event_id: str, guardian: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "message.created",
        "data": {
            "audience": {"guardians": [guardian]},
            "category": "emergency",
            "subject": "Stengt skole",
            "body": "Skolen er stengt i dag.",
        },
    }


async def test_an_answer_after_a_later_sms_still_answers_the_alert(
    rig: Rig, configured: Settings
) -> None:
    alert_id = (await rig.post(recorded("evt-a1")))["message_id"]
    await rig.run()
    await rig.post(emergency("evt-later", "p2"))  # a later SMS to the same number
    await rig.run()
    assert PHONES["p2"] in rig.new_sms()
    twiml = await answer(rig, configured, PHONES["p2"], "SYK feber")
    await rig.run()
    assert "<Message>" not in twiml
    assert await explanations(rig, rig.key, alert_id) == [("p2", "sick", "feber")]
    # Not taken as a report of a new absence either.
    assert not [m for m in outbox(configured, "email") if "Fraværsmelding" in m]


async def test_a_parent_in_two_municipalities(
    rig: Rig, configured: Settings, clock: ManualClock
) -> None:
    # p2's number is also a guardian's in Bærum, of Ola there.
    other = DirectoryBatch.model_validate(
        {
            "units": [{"id": "b1", "kind": "school", "name": "Bærum skole"}],
            "persons": [
                {"id": "bc", "role": "child", "given_name": "Ola", "birth_date": "2016-01-01",
                 "unit_ids": ["b1"]},
                {"id": "bp", "role": "guardian", "given_name": "Pia", "phone": PHONES["p2"]},
            ],
            "relations": [{"child_id": "bc", "guardian_id": "bp", "parental_responsibility": True}],
        }
    )  # fmt: skip
    _, bkey = await new_tenant(rig.gw.service, clock, other)
    alert_a = (await rig.post(recorded("evt-a1")))["message_id"]
    await rig.run()
    async with rig.gw.session.post(
        f"{rig.gw.url}/v1/events", json=recorded("evt-b1", child="bc"), headers=rig.gw.headers(bkey)
    ) as resp:
        assert resp.status == 202
        alert_b = (await resp.json())["message_id"]
    await rig.run()
    assert PHONES["p2"] in rig.new_sms()

    # Two children, two municipalities: the answer names neither, so it explains nothing
    # and asks for the child's name.
    twiml = await answer(rig, configured, PHONES["p2"], "SYK")
    await rig.run()
    assert "<Message>" in twiml and "barnets fornavn" in twiml
    assert await explanations(rig, rig.key, alert_a) == []
    assert await explanations(rig, bkey, alert_b) == []
    # Naming the child picks the alert, in its own municipality.
    assert "<Message>" not in await answer(rig, configured, PHONES["p2"], "SYK Kari har feber")
    await rig.run()
    assert await explanations(rig, rig.key, alert_a) == [("p2", "sick", "Kari har feber")]
    assert await explanations(rig, bkey, alert_b) == []
    # Kari's alert is answered: the next answer can only be about Ola.
    assert "<Message>" not in await answer(rig, configured, PHONES["p2"], "LEGE tannlege")
    await rig.run()
    assert await explanations(rig, bkey, alert_b) == [("bp", "appointment", "tannlege")]
    assert await explanations(rig, rig.key, alert_a) == [("p2", "sick", "Kari har feber")]


async def test_an_alert_whose_dispatcher_stopped_before_the_hand_over_goes_out_at_once(
    rig: Rig,
) -> None:
    """An alert's plan is stored as claimed by its process, to be handed to that process's
    dispatcher (gateway/urgent_handoff.py). If the dispatcher stops between the two (a
    shutdown), the job is given back at once, not left until its lease ends: the alert
    goes out now, through any worker."""
    handoff = rig.gw.service.absences.handoff
    handed: list[list[Job]] = []
    handoff.attach(lambda jobs, deliveries: handed.append(jobs), 60, [JOB_ABSENCE_PLAN])
    lease = handoff.lease

    def lease_then_stop(jobs: Sequence[Job], now: datetime) -> list[Job] | None:
        leased = lease(jobs, now)
        handoff.detach()  # the dispatcher stopped right after the lease
        return leased

    handoff.lease = lease_then_stop  # type: ignore[method-assign]
    await rig.post(recorded("fravaer-stop"))
    assert handed == []
    await rig.run()  # the same moment: no lease to wait out
    assert rig.new_sms(), "the alert waited for the hand-over's lease to end"


async def test_handed_alert_sends_count_their_lease_from_when_they_are_stored(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alert's sends are stored as claimed by this process and handed to its dispatcher,
    their lease counted from the moment they are stored: a plan that took long (a slow
    directory read) does not eat into it, so the dispatcher does not give them back as
    half-expired before it sends them."""
    handoff = rig.gw.service.absences.handoff
    handed: list[list[Job]] = []
    handoff.attach(lambda jobs, deliveries: handed.append(list(jobs)), 60, [JOB_SEND])
    absences = rig.gw.service.absences
    keep = absences._keep

    async def slow_keep(*args: Any) -> Any:
        rig.gw.clock.advance(40)  # the plan took 40 s of a 60 s lease
        return await keep(*args)

    monkeypatch.setattr(absences, "_keep", slow_keep)
    await rig.post(recorded("fravaer-slow-plan"))
    await rig.run()
    (sends,) = handed
    assert sends and {job.due_at for job in sends} == {rig.gw.clock.now() + timedelta(seconds=60)}


async def test_a_report_from_the_app_without_a_day_names_the_bodys_field(rig: Rig) -> None:
    """The app's body has no ``data``: its error says ``dates`` of the body, and a date
    that is no date is that field's error alone."""
    app = await rig.token("p1")
    answers = []
    for body in ({"child_id": "c1"}, {"child_id": "c1", "date": "2026-02-30"}):
        async with rig.gw.session.post(
            f"{rig.gw.url}/v1/me/absences", json=body, headers=app
        ) as resp:
            assert resp.status == 422, await resp.text()
            answers.append([(e["loc"], e["message"]) for e in (await resp.json())["errors"]])
    [(loc, message)] = answers[0]
    assert loc == ["dates"] and "give date or dates" in message
    assert [loc for loc, _ in answers[1]] == [["date"]]
