"""JSON logs with personal data masked (gateway/logs.py), and a whole flow logged at
DEBUG that must not leak a guardian's email, phone, name or reply anywhere."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from channels.sms import INBOUND_PATH
from gateway.auth import create_tenant
from gateway.demo import DemoClient
from gateway.logs import JsonFormatter, configure, mask
from gateway.service import Service
from gateway.settings import load_settings
from tests.conftest import SECRET_KEY
from tests.peers.smtp import SmtpPeer
from tests.peers.twilio import TwilioPeer
from tests.test_e2e_sms_push import ACCOUNT_SID, AUTH_TOKEN, Gateway

# --------------------------------------------------------------------------- mask


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("mail to ragnhild.bjornstad@example.no failed", "ragnhild.bjornstad@example.no"),
        ("to +4791234567 refused", "+4791234567"),
        ("to +47 912 34 567 refused", "912 34 567"),
        ("national 91234567.", "91234567"),
        ("Authorization: Bearer bbk_abcDEF123-_.xyz", "abcDEF123"),
        ("bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwMSJ9.sig", "eyJhbGci"),
        ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("key bbk_Zm9vYmFyYmF6cXV4", "Zm9vYmFyYmF6cXV4"),
        ("GET /r/s_6BYfa20qUgtDTvUjN2miGQZsElY6si5u HTTP/1.1", "s_6BYfa20qUgtDTvUjN2mi"),
        ("GET /u/s_6BYfa20qUgtDTvUjN2miGQZsElY6si5u?x=1", "s_6BYfa20qUgtDTvUjN2mi"),
        # a parent's page link opens a parent session; a sign-in link a staff one
        ("GET /p/s_6BYfa20qUgtDTvUjN2miGQZsElY6si5u HTTP/1.1", "s_6BYfa20qUgtDTvUjN2mi"),
        ("http://gw/staff/signin/t_Q2hhbmdlTWVQbGVhc2VUb2tlbg", "t_Q2hhbmdlTWVQbGVh"),
    ],
)
def test_mask_hides_personal_data_and_credentials(text: str, secret: str) -> None:
    masked = mask(text)
    assert secret not in masked
    assert "***" in masked


def test_mask_keeps_what_is_not_personal() -> None:
    text = "delivery 0f3a9c1b2d4e5f60718293a4b5c6d7e8 moved to sent after 3 attempts in 2026"
    assert mask(text) == text


def test_mask_keeps_the_parent_pages_beside_the_link_tokens() -> None:
    text = "GET /p/preferences then /p/inbox and /p/absence/report"
    assert mask(text) == text


def _record(msg: str, *args: Any, exc: bool = False, **extra: Any) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("no such user ola.nordmann@example.no at +4799988877")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    record = logging.LogRecord("gateway.test", logging.ERROR, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_formatter_writes_one_json_object_with_everything_masked() -> None:
    line = JsonFormatter().format(
        _record(
            "sent to %s",
            "kari@example.no",
            exc=True,
            address="+4791234567",
            recipients=["ola@example.no", {"phone": "+4790000001"}],
            headers={"Authorization": "Bearer bbk_topsecretkey1234"},
            count=3,
            ratio=0.5,
            flag=True,
            nothing=None,
        )
    )
    assert "\n" not in line  # one record, one line
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "gateway.test"
    assert (entry["count"], entry["ratio"], entry["flag"], entry["nothing"]) == (3, 0.5, True, None)
    for secret in (
        "kari@example.no",
        "+4791234567",
        "ola@example.no",
        "+4790000001",
        "topsecretkey1234",
        "ola.nordmann@example.no",
        "+4799988877",
    ):
        assert secret not in line, secret
    assert "ValueError" in entry["exception"]


def test_formatter_masks_objects_it_has_to_stringify() -> None:
    class Carrier:
        def __str__(self) -> str:
            return "Carrier(to=kari@example.no)"

    entry = json.loads(JsonFormatter().format(_record("x", carrier=Carrier())))
    assert "kari@example.no" not in json.dumps(entry)


# --------------------------------------------------------------------------- a whole flow


GUARDIANS = {
    "p1": ("Ragnhild", "Bjørnstad", "ragnhild.bjornstad@familie.no", "+4791234501"),
    "p2": ("Sigurd", "Haugland", "sigurd.haugland@familie.no", "+4791234502"),
    "p3": ("Wenche", "Ødegård", "wenche.odegard@familie.no", "+4791234503"),
}
CHILD = ("Torbjørn", "Bjørnstad-Haugland")
REPLY = "Torbjørn er syk i dag, hilsen Ragnhild"


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The production logging set-up (configure) at DEBUG, written into a buffer."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    quiet = ("aiohttp.access", "aiosqlite", "twilio", "urllib3", "google")
    saved_levels = {name: logging.getLogger(name).level for name in (*quiet, "mail.log")}
    configure("DEBUG")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    # aiosmtpd's own log is the test SMTP server talking, not the gateway.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def _directory() -> dict[str, Any]:
    persons: list[dict[str, Any]] = [
        {
            "id": "c1",
            "role": "child",
            "given_name": CHILD[0],
            "family_name": CHILD[1],
            "birth_date": "2014-09-09",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        }
    ]
    for pid, (given, family, email, phone) in GUARDIANS.items():
        persons.append(
            {
                "id": pid,
                "role": "guardian",
                "given_name": given,
                "family_name": family,
                "email": email,
                "phone": phone,
            }
        )
    return {
        "units": [{"id": "u1", "kind": "school", "name": "Solvang skole", "sms_sender": "Solvang"}],
        "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "3A"}],
        "persons": persons,
        "relations": [
            {"child_id": "c1", "guardian_id": pid, "parental_responsibility": True}
            for pid in GUARDIANS
        ],
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_whole_flow_logs_no_personal_data(tmp_path: Path, log_output: io.StringIO) -> None:
    async with SmtpPeer() as smtp, TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        # Errors too: a dead mailbox, a dead number, a throttled send.
        smtp.reply_to_recipient(GUARDIANS["p2"][2], "550 5.1.1 No such user")
        twilio.mark_dead(GUARDIANS["p3"][3], 21614)
        twilio.fail_next(429, retry_after=0)
        port = _free_port()
        public_url = f"http://127.0.0.1:{port}"
        settings = load_settings(
            store_url=f"sqlite:///{tmp_path / 'budbringer.db'}",
            outbox_dir=tmp_path / "outbox",
            port=port,
            public_url=public_url,
            secret_key=SECRET_KEY,
            log_level="DEBUG",
            smtp={"host": smtp.host, "port": smtp.port, "tls": "none", "sender": "s@asker.no"},
            twilio={
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "base_url": twilio.base_url,
                "default_sender": "Solvang",
            },
            dispatch={"poll_interval": 0.05, "backoff_base": 0.01, "backoff_max": 0.01},
        )
        service = Service(settings)
        await service.start()
        client: DemoClient | None = None
        try:
            tenant, api_key, whsec = await create_tenant(
                service.store, "Asker", service.clock.now()
            )
            client = DemoClient(public_url, api_key, whsec, tenant.id)
            gw = Gateway(service, client, twilio, None, public_url)  # type: ignore[arg-type]
            await client.call("POST", "/v1/directory", _directory())
            token = await client.call("POST", "/v1/guardians/p1/tokens")
            message_id = await gw.post("evt-log", audience={"groups": ["g1"]})
            status = await gw.wait_final(message_id)
            for sid in twilio.messages:
                await twilio.send_status(sid, "delivered")
                await twilio.send_status(sid, "sent", signed=False)  # 403, logged
            reply = await twilio.send_inbound(
                public_url + INBOUND_PATH, from_=GUARDIANS["p1"][3], to="Solvang", body=REPLY
            )
            assert reply.status == 200
            await client.call(  # the parent app reads its inbox (names in the body)
                "GET", "/v1/me/inbox", headers={"Authorization": f"Bearer {token['token']}"}
            )
            replies = (await gw.status(message_id))["replies"]
        finally:
            if client is not None:
                await client.close()
            await service.stop()

    # the flow did happen, errors included
    failed = {
        d["recipient_id"]: d["reason"] for d in status["deliveries"] if d["status"] == "failed"
    }
    assert failed == {"p2": "smtp_550", "p3": "twilio_21614"}
    assert [r["body"] for r in replies] == [REPLY]

    output = log_output.getvalue()
    lines = output.splitlines()
    assert len(lines) > 5  # something was logged
    for line in lines:
        json.loads(line)  # every line is one JSON object
    forbidden = [REPLY, "syk i dag", *CHILD]
    for given, family, email, phone in GUARDIANS.values():
        forbidden += [given, family, email, email.split("@")[0], phone, phone[3:]]
    leaks = {word for word in forbidden if word in output}
    assert not leaks, [line for line in lines if any(w in line for w in leaks)][:5]
