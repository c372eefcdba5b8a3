"""``budbringer doctor`` against the real local peers: aiosmtpd (STARTTLS, AUTH), the
Twilio-like and the FCM-like servers, a real SQLite store; passing and failing."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.channel_health import ChannelHealth
from gateway.clock import ManualClock
from gateway.doctor import Check, _one, check_files, log_checks, run_checks
from gateway.models import WebhookEndpoint
from gateway.service import Service
from gateway.settings import Settings
from gateway.store.sqlite import SqliteStore
from tests.conftest import SECRET_KEY
from tests.peers.fcm import FcmServer, write_service_account
from tests.peers.s3 import S3Peer
from tests.peers.smtp import SmtpPeer
from tests.peers.twilio import TwilioPeer
from tests.test_crash_restart import gateway_env, run_cli

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "doctor-auth-token-" + "x" * 14
PROJECT = "budbringer-test"
LOGIN = ("budbringer", "relay-password")


@dataclass
class Peers:
    smtp: SmtpPeer
    twilio: TwilioPeer
    fcm: FcmServer
    account: Path
    tmp: Path

    def settings(self, **update: Any) -> Settings:
        values: dict[str, Any] = {
            "store_url": f"sqlite:///{self.tmp / 'bb.db'}",
            "outbox_dir": self.tmp / "outbox",
            "secret_key": SECRET_KEY,
            "smtp": {
                "host": self.smtp.host,
                "port": self.smtp.port,
                "tls": "starttls",
                "ca_file": self.smtp.ca_file,
                "username": LOGIN[0],
                "password": LOGIN[1],
                "sender": "Skolen <skole@asker.test>",
            },
            "twilio": {
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "base_url": self.twilio.base_url,
                "default_sender": "Skolen",
            },
            "fcm": {
                "service_account_file": self.account,
                "base_url": self.fcm.url,
                "token_url": self.fcm.token_url,
            },
        }
        values.update(update)
        return Settings(**values)


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[Peers]:
    async with (
        SmtpPeer(tls="starttls", credentials=LOGIN) as smtp,
        TwilioPeer(ACCOUNT_SID, AUTH_TOKEN) as twilio,
        FcmServer(project_id=PROJECT) as fcm,
    ):
        account = write_service_account(tmp_path / "sa.json", fcm.token_url, PROJECT)
        fcm.trust(account)
        yield Peers(smtp, twilio, fcm, account, tmp_path)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


async def test_everything_configured_and_answering_passes_without_sending(peers: Peers) -> None:
    checks = by_name(await run_checks(peers.settings()))
    assert all(check.ok for check in checks.values()), [c.line() for c in checks.values()]
    assert checks["smtp"].detail.endswith(
        ": connected, STARTTLS, AUTH, MAIL FROM taken (no mail sent)"
    )
    assert checks["twilio"].detail == "credentials accepted (account fetched, read-only)"
    assert checks["fcm"].detail == (
        "access token fetched, a message to the project validated (none sent)"
    )
    assert len(peers.fcm.validated) == 1
    assert checks["store"].detail == "sqlite store answers"
    assert peers.smtp.received == [] and peers.smtp.quits == 1  # polite, and nothing sent
    assert peers.twilio.requests == [] and peers.twilio.account_fetches == 1
    assert peers.fcm.sent == []


@pytest.mark.parametrize(
    ("update", "name", "detail", "fix"),
    [
        (
            {"smtp_password": "wrong"},
            "smtp",
            "refused AUTH (SMTP 535)",
            "BUDBRINGER_SMTP__PASSWORD",
        ),
        ({"smtp_tls": "implicit"}, "smtp", "TLS with 127.0.0.1", "BUDBRINGER_SMTP__TLS"),
        ({"smtp_down": True}, "smtp", "(connection refused)", "BUDBRINGER_SMTP__HOST"),
        (
            # the relay wants a login, or not this sender: every email would fail on it
            {"smtp_mail": "530 5.7.0 Authentication required"},
            "smtp",
            "refused our sender at MAIL FROM (SMTP 530)",
            "BUDBRINGER_SMTP__SENDER",
        ),
        (
            {"twilio_token": "not-the-token-" + "y" * 18},
            "twilio",
            "Twilio refused the credentials (HTTP 401)",
            "BUDBRINGER_TWILIO__ACCOUNT_SID",
        ),
        (
            {"fcm_untrusted": True},
            "fcm",
            "no access token (fcm_token_rejected)",
            "BUDBRINGER_FCM__SERVICE_ACCOUNT_FILE",
        ),
        (
            # the key works, but not for this project: every push would be refused
            {"fcm_project": "not-our-project"},
            "fcm",
            "FCM will not send for the project (fcm_PERMISSION_DENIED)",
            "BUDBRINGER_FCM__PROJECT_ID",
        ),
        (
            {"store_url": "sqlite:////proc/budbringer/bb.db"},
            "store",
            "cannot open the store",
            "BUDBRINGER_STORE_URL",
        ),
    ],
    ids=[
        "smtp-auth",
        "smtp-tls",
        "smtp-down",
        "smtp-sender",
        "twilio-credentials",
        "fcm-account",
        "fcm-project",
        "store",
    ],
)
async def test_each_failure_is_one_line_with_a_fix(
    peers: Peers, tmp_path: Path, update: dict[str, Any], name: str, detail: str, fix: str
) -> None:
    settings = peers.settings()
    if "smtp_password" in update:
        assert settings.smtp is not None
        settings.smtp = settings.smtp.model_copy(
            update={"password": SecretStr(update["smtp_password"])}
        )
    if "smtp_tls" in update:
        assert settings.smtp is not None
        settings.smtp = settings.smtp.model_copy(update={"tls": update["smtp_tls"]})
    if "smtp_down" in update:
        await peers.smtp.stop()
    if "smtp_mail" in update:
        peers.smtp.reply_to_mail(update["smtp_mail"])
    if "twilio_token" in update:
        assert settings.twilio is not None
        settings.twilio = settings.twilio.model_copy(
            update={"auth_token": SecretStr(update["twilio_token"])}
        )
    if "fcm_untrusted" in update:
        other = write_service_account(tmp_path / "other.json", peers.fcm.token_url, PROJECT)
        assert settings.fcm is not None
        settings.fcm = settings.fcm.model_copy(update={"service_account_file": other})
    if "fcm_project" in update:
        assert settings.fcm is not None
        settings.fcm = settings.fcm.model_copy(update={"project_id": update["fcm_project"]})
    if "store_url" in update:
        settings.store_url = update["store_url"]
    checks = by_name(await run_checks(settings))
    failed = [check for check in checks.values() if not check.ok]
    assert [check.name for check in failed] == [name]
    line = failed[0].line()
    assert line.startswith(f"FAIL  {name}") and detail in line
    assert " — fix: " in line and fix in line.split(" — fix: ", 1)[1]
    assert "\n" not in line
    for secret in (LOGIN[1], AUTH_TOKEN, "wrong", "not-the-token"):
        assert secret not in line


async def test_webhook_endpoints_must_resolve_and_be_reachable_in_production(
    peers: Peers,
) -> None:
    settings = peers.settings()
    store = SqliteStore(str(settings.sqlite_path))
    await store.open()
    try:
        from gateway.auth import create_tenant
        from gateway.clock import SystemClock

        now = SystemClock().now()
        tenant, _, _ = await create_tenant(store, "Asker kommune", now)
        for endpoint_id, url in (
            ("we_internal", "http://127.0.0.1:9/hooks"),
            ("we_nowhere", "https://platform.budbringer.invalid/hooks"),
        ):
            await store.create_webhook_endpoint(
                WebhookEndpoint(
                    id=endpoint_id,
                    tenant_id=tenant.id,
                    url=url,
                    event_types=["message.reached"],
                    secret="whsec_" + "A" * 32,
                    created_at=now,
                    updated_at=now,
                )
            )
    finally:
        await store.close()

    development = by_name(await run_checks(settings))
    assert development["webhook we_internal"].ok  # development reaches loopback
    nowhere = development["webhook we_nowhere"]
    assert not nowhere.ok and nowhere.detail == "platform.budbringer.invalid does not resolve"

    production = settings.model_copy(
        update={"environment": "production", "public_url": "https://varsel.asker.no"}
    )
    internal = by_name(await run_checks(production))["webhook we_internal"]
    assert not internal.ok
    assert internal.detail == "127.0.0.1 resolves only to internal addresses (127.0.0.1)"
    assert "BUDBRINGER_WEBHOOKS__ALLOWED_NETWORKS" in internal.fix

    allowed = production.model_copy(
        update={
            "webhooks": production.webhooks.model_copy(update={"allowed_networks": ["127.0.0.0/8"]})
        }
    )
    assert by_name(await run_checks(allowed))["webhook we_internal"].ok


@pytest.mark.slow
async def test_the_doctor_command_prints_a_line_per_check_and_exits_1_on_failure(
    peers: Peers, tmp_path: Path
) -> None:
    gw = gateway_env(
        tmp_path,
        BUDBRINGER_SMTP__HOST=peers.smtp.host,
        BUDBRINGER_SMTP__PORT=str(peers.smtp.port),
        BUDBRINGER_SMTP__CA_FILE=str(peers.smtp.ca_file),
        BUDBRINGER_SMTP__USERNAME=LOGIN[0],
        BUDBRINGER_SMTP__PASSWORD=LOGIN[1],
        BUDBRINGER_SMTP__SENDER="Skolen <skole@asker.test>",
        BUDBRINGER_TWILIO__ACCOUNT_SID=ACCOUNT_SID,
        BUDBRINGER_TWILIO__AUTH_TOKEN=AUTH_TOKEN,
        BUDBRINGER_TWILIO__BASE_URL=peers.twilio.base_url,
        BUDBRINGER_TWILIO__DEFAULT_SENDER="Skolen",
    )
    code, out, err = await run_cli(gw, "doctor")
    assert code == 0, out + err
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["ok", "store"],
        ["ok", "smtp"],
        ["ok", "twilio"],
        ["ok", "fcm"],
        ["ok", "files"],
        ["ok", "webhooks"],
    ]

    gw.env["BUDBRINGER_TWILIO__AUTH_TOKEN"] = "not-the-token-" + "y" * 18
    code, out, _ = await run_cli(gw, "doctor")
    assert code == 1
    [failed] = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert failed.startswith("FAIL  twilio    Twilio refused the credentials (HTTP 401) — fix: ")


async def test_serve_in_production_logs_the_checks_and_starts_even_when_one_fails(
    peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    settings = peers.settings(
        environment="production", public_url="https://varsel.asker.no", port=0
    )
    await peers.smtp.stop()  # the relay is down: logged, but the gateway takes events
    caplog.set_level(logging.INFO, logger="gateway.doctor")
    service = Service(settings)
    await service.start()
    try:
        while len([r for r in caplog.records if r.name == "gateway.doctor"]) < 5:
            await asyncio.sleep(0.05)
        results = {
            getattr(r, "check", None): (r.levelno, r.getMessage())
            for r in caplog.records
            if r.name == "gateway.doctor"
        }
        assert results == {
            "store": (logging.INFO, "doctor: ok"),
            "smtp": (logging.WARNING, "doctor: failed"),
            "twilio": (logging.INFO, "doctor: ok"),
            "fcm": (logging.INFO, "doctor: ok"),
            "files": (logging.INFO, "doctor: ok"),
            "webhooks": (logging.INFO, "doctor: ok"),
        }
        assert service.port is not None
    finally:
        await service.stop()


async def test_the_attachment_bucket_or_folder_is_checked(tmp_path: Path) -> None:
    with S3Peer() as s3:
        s3.create_bucket("skolefiler")
        good = Settings(attachments={"storage": "s3", "s3": s3.settings("skolefiler")})
        assert (await check_files_line(good)).startswith("ok    files     bucket skolefiler")
        missing = Settings(attachments={"storage": "s3", "s3": s3.settings("finnes-ikke")})
        line = await check_files_line(missing)
        assert line.startswith("FAIL  files") and "BUDBRINGER_ATTACHMENTS__S3__BUCKET" in line
        assert "testing-secret-key" not in line
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        settings = Settings(attachments={"folder": str(read_only / "files")})
        line = await check_files_line(settings)
        # root may write anywhere: then the folder passes, as it would in production
        assert line.startswith("ok") == os.access(read_only, os.W_OK), line
    finally:
        read_only.chmod(0o700)
    assert not (read_only / "files").exists()  # a check writes nothing


async def check_files_line(settings: Settings) -> str:
    return (await _one("files", lambda: check_files(settings.attachments))).line()


async def test_at_start_a_provider_refusing_us_shows_as_stopped_at_once(
    peers: Peers, tmp_path: Path
) -> None:
    """A wrong Twilio token in production was logged at start, but /readyz and the
    channel metric said "ok" until a real SMS failed (say at 08:00, the absence alerts).
    A refusal (credentials, our sender) now stops the channel at once; a provider that is
    merely unreachable is only logged, since the next send will find out."""
    settings = peers.settings()
    assert settings.twilio is not None and settings.fcm is not None
    settings.twilio = settings.twilio.model_copy(
        update={"auth_token": SecretStr("not-the-token-" + "y" * 18)}
    )
    other = write_service_account(tmp_path / "other.json", peers.fcm.token_url, PROJECT)
    settings.fcm = settings.fcm.model_copy(update={"service_account_file": other})
    await peers.smtp.stop()  # unreachable: not a refusal
    health = ChannelHealth(ManualClock())
    await log_checks(settings, health)
    states = health.snapshot()
    assert (states["sms"]["state"], states["sms"]["last_error"]) == ("stopped", "doctor_twilio")
    assert (states["push"]["state"], states["push"]["last_error"]) == ("stopped", "doctor_fcm")
    assert states.get("email", {"state": "ok"})["state"] == "ok"


async def test_a_relay_without_starttls_is_named_as_such_not_as_a_wrong_host(
    peers: Peers,
) -> None:
    """SMTP__TLS=starttls against a relay that does not offer it said "cannot connect
    ... check HOST and PORT": the connection worked, the TLS setting is what is wrong."""
    async with SmtpPeer(tls="none") as plain:
        settings = peers.settings()
        assert settings.smtp is not None
        settings.smtp = settings.smtp.model_copy(
            update={"host": plain.host, "port": plain.port, "username": None, "password": None}
        )
        checks = by_name(await run_checks(settings))
    line = checks["smtp"].line()
    assert "does not offer STARTTLS" in line and "BUDBRINGER_SMTP__TLS" in line
    assert "HOST" not in line


async def test_a_relay_refusing_sessions_for_now_says_try_again(peers: Peers) -> None:
    """A 421 greeting (busy, too many connections) is not a TLS setting to change."""
    peers.smtp.greet_with("421 4.7.0 Too many connections, try again later")
    checks = by_name(await run_checks(peers.settings()))
    line = checks["smtp"].line()
    assert "refusing sessions for now (SMTP 421)" in line and "try again" in line
