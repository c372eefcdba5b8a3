"""``budbringer doctor``: checks every peer a configuration depends on, without sending.

One line per check, each failure with what to fix:

* store — opens and pings the configured store;
* SMTP — connects, says EHLO, STARTTLS (or implicit TLS) and AUTH as configured, then
  QUIT: no mail is sent;
* Twilio — fetches the account (``GET /2010-04-01/Accounts/{sid}.json``), read-only;
* FCM — fetches an OAuth access token for the service account;
* files — the attachment folder is writable, or the S3 bucket answers (``HeadBucket``,
  read-only) with the configured credentials;
* webhooks — each enabled endpoint's host resolves, and in production to an address
  the gateway may reach (public, or in ``webhooks.allowed_networks``).

``serve`` runs the same checks in production once it listens and logs the results
(a provider that is down must not keep the gateway from taking events).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import aiosmtplib

from gateway.addresses import parse_networks, permitted
from gateway.channel_health import ChannelHealth
from gateway.errors import BudbringerError, ChannelUnavailable, DeliveryError
from gateway.settings import (
    AttachmentSettings,
    FcmSettings,
    Settings,
    SmtpSettings,
    TwilioSettings,
    sender_parts,
)

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 10.0  # seconds one check may take at most
TWILIO_API = "https://api.twilio.com"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found; never a secret or personal data
    fix: str = ""
    # a provider's check: its channel, and whether the provider refused us (credentials,
    # our sender): then the channel cannot work until IT fixes it
    channel: str = ""
    refused: bool = False

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        text = f"{mark}  {self.name:<9} {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix else text


class Failed(Exception):
    """A check failed: ``detail`` says what was found, ``fix`` what to do; ``refused``:
    the provider refused our credentials or sender (not merely unreachable)."""

    def __init__(self, detail: str, fix: str, *, refused: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix
        self.refused = refused


# ---------------------------------------------------------------------- store


async def check_store(settings: Settings) -> str:
    from gateway.store.backends import open_store

    store = open_store(settings.store_url)
    try:
        await store.open()
        if not await store.ping():
            raise Failed("the store does not answer", "start it, or fix BUDBRINGER_STORE_URL")
    except Failed:
        raise
    except Exception as exc:
        raise Failed(
            f"cannot open the store ({type(exc).__name__})",
            "check BUDBRINGER_STORE_URL: is Redis running and reachable, is the SQLite "
            "folder writable?",
        ) from exc
    finally:
        await store.close()
    return f"{settings.store_url.split('://', 1)[0]} store answers"


# ---------------------------------------------------------------------- attachment files


async def check_files(files: AttachmentSettings) -> str:
    if files.storage == "folder":
        folder = files.folder.resolve()
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
            raise Failed(
                f"cannot write attachments under {folder}",
                "make BUDBRINGER_ATTACHMENTS__FOLDER a folder the gateway may write to",
            )
        return f"attachments go to {folder}"
    s3 = files.s3
    if s3 is None:  # the settings refuse this already
        raise Failed("no bucket configured", "set BUDBRINGER_ATTACHMENTS__S3__BUCKET")
    from aiobotocore.session import get_session

    secret = s3.secret_access_key.get_secret_value() if s3.secret_access_key else None
    try:
        async with get_session().create_client(
            "s3",
            endpoint_url=s3.endpoint_url,
            region_name=s3.region,
            aws_access_key_id=s3.access_key_id,
            aws_secret_access_key=secret,
        ) as client:
            await client.head_bucket(Bucket=s3.bucket)
    except Exception as exc:  # botocore's errors: no credentials, 403, 404, no connection
        raise Failed(
            f"the bucket {s3.bucket} does not answer ({type(exc).__name__})",
            "check BUDBRINGER_ATTACHMENTS__S3__BUCKET, __ENDPOINT_URL and the credentials",
        ) from exc
    return f"bucket {s3.bucket} answers (read-only check)"


# ---------------------------------------------------------------------- SMTP


async def check_smtp(smtp: SmtpSettings) -> str:
    where = f"{smtp.host}:{smtp.port}"
    context: ssl.SSLContext | None = None
    if smtp.tls != "none":
        context = ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)
    client = aiosmtplib.SMTP(
        hostname=smtp.host,
        port=smtp.port,
        timeout=min(smtp.timeout, CHECK_TIMEOUT),
        use_tls=smtp.tls == "implicit",
        start_tls=smtp.tls == "starttls",
        tls_context=context,
    )
    try:
        try:
            await client.connect()  # EHLO and STARTTLS (when configured) happen here
        except (OSError, TimeoutError, aiosmtplib.SMTPException) as exc:
            raise _connect_failure(exc, where) from exc
        steps = "connected" + (", STARTTLS" if smtp.tls == "starttls" else "")
        steps += ", implicit TLS" if smtp.tls == "implicit" else ""
        if smtp.username:
            password = smtp.password.get_secret_value() if smtp.password else ""
            try:
                await client.login(smtp.username, password)
            except aiosmtplib.SMTPException as exc:
                raise Failed(
                    f"{where} refused AUTH ({_reason(exc)})",
                    "check BUDBRINGER_SMTP__USERNAME and BUDBRINGER_SMTP__PASSWORD",
                    refused=True,
                ) from exc
            steps += ", AUTH"
        await _check_sender(client, smtp, where)
        return f"{where}: {steps}, MAIL FROM taken (no mail sent)"
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


async def _check_sender(client: aiosmtplib.SMTP, smtp: SmtpSettings, where: str) -> None:
    """MAIL FROM our sender, then RSET: a relay that wants authentication, or does not
    let us send as this address, says so here, before every email fails on it."""
    sender = sender_parts(smtp.sender)[1]
    try:
        await client.mail(sender)
    except aiosmtplib.SMTPResponseException as exc:
        offered = " (the relay offers STARTTLS)" if client.supports_extension("starttls") else ""
        raise Failed(
            f"{where} refused our sender at MAIL FROM ({_reason(exc)}){offered}",
            "check BUDBRINGER_SMTP__SENDER is an address the relay lets this host send as,"
            " and BUDBRINGER_SMTP__USERNAME/__PASSWORD and __TLS if it wants a login",
            refused=True,
        ) from exc
    await client.rset()


def _connect_failure(exc: BaseException, where: str) -> Failed:
    causes = (exc, exc.__cause__, exc.__context__)
    if any(isinstance(cause, ssl.SSLError) for cause in causes):
        return Failed(
            f"TLS with {where} failed",
            "check BUDBRINGER_SMTP__TLS (starttls on 587, implicit on 465) and "
            "BUDBRINGER_SMTP__CA_FILE for a private CA",
        )
    if type(exc) is aiosmtplib.SMTPException and "STARTTLS" in str(exc):
        # connected and greeted: the TLS setting is wrong, not the host or port
        return Failed(
            f"{where} does not offer STARTTLS",
            "set BUDBRINGER_SMTP__TLS=implicit for a TLS port (465), or use the relay's"
            " STARTTLS port (587); none only for a relay on this host",
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code == 421:
        return Failed(
            f"{where} is refusing sessions for now (SMTP 421)",
            "try again; if it lasts, check the relay's connection limits and that it"
            " lets this host in",
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return Failed(
            f"{where} refused the session ({_reason(exc)})",
            "check BUDBRINGER_SMTP__TLS matches what the relay offers, and that it lets "
            "this host in",
        )
    return Failed(
        f"cannot connect to {where} ({_reason(exc)})",
        "check BUDBRINGER_SMTP__HOST and __PORT and that the relay lets this host in",
    )


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        return f"SMTP {code}"
    for cause in (exc, exc.__cause__, exc.__context__):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, TimeoutError | aiosmtplib.SMTPTimeoutError):
            return "timed out"
        if isinstance(cause, socket.gaierror):
            return "the name does not resolve"
    return type(exc).__name__


# ---------------------------------------------------------------------- Twilio


async def check_twilio(twilio: TwilioSettings) -> str:
    base = (twilio.base_url or TWILIO_API).rstrip("/")
    url = f"{base}/2010-04-01/Accounts/{twilio.account_sid}.json"
    if twilio.api_key_sid and twilio.api_key_secret:
        login, password = twilio.api_key_sid, twilio.api_key_secret.get_secret_value()
    else:
        login, password = twilio.account_sid, twilio.auth_token.get_secret_value()
    basic = base64.b64encode(f"{login}:{password}".encode()).decode()
    timeout = aiohttp.ClientTimeout(total=min(twilio.timeout, CHECK_TIMEOUT))
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(url, headers={"Authorization": f"Basic {basic}"}) as resp,
        ):
            status = resp.status
            body = await resp.json(content_type=None) if status < 500 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise Failed(
            f"cannot reach {base} ({type(exc).__name__})",
            "check outbound HTTPS to api.twilio.com (or BUDBRINGER_TWILIO__BASE_URL)",
        ) from exc
    if status in (401, 403):
        raise Failed(
            f"Twilio refused the credentials (HTTP {status})",
            "check BUDBRINGER_TWILIO__ACCOUNT_SID and __AUTH_TOKEN (or __API_KEY_SID and "
            "__API_KEY_SECRET)",
            refused=True,
        )
    if status != 200:
        raise Failed(f"Twilio answered HTTP {status}", "try again; see status.twilio.com")
    state = body.get("status") if isinstance(body, dict) else None
    if state not in (None, "active"):
        raise Failed(f"the Twilio account is {state}", "reactivate the account in Twilio")
    return "credentials accepted (account fetched, read-only)"


# ---------------------------------------------------------------------- FCM


async def check_fcm(fcm: FcmSettings, public_url: str) -> str:
    from channels.push import PushChannel

    channel = PushChannel(fcm, public_url)
    try:
        await asyncio.wait_for(channel.start(), CHECK_TIMEOUT)
        await asyncio.wait_for(channel.verify(), CHECK_TIMEOUT)
    except DeliveryError as exc:
        if not (exc.code or "").startswith("fcm_token"):  # the token came; the send did not
            raise Failed(
                f"FCM will not send for the project ({exc.code})",
                "check BUDBRINGER_FCM__PROJECT_ID (or the service account's project_id) is"
                " the Firebase project of the parent app, and that the account may send",
                refused=isinstance(exc, ChannelUnavailable),
            ) from exc
        raise Failed(
            f"no access token ({exc.code})",
            "check BUDBRINGER_FCM__SERVICE_ACCOUNT_FILE is a current key of a service "
            "account with the Firebase Cloud Messaging API enabled, and outbound HTTPS",
            refused=isinstance(exc, ChannelUnavailable),  # the token server said no
        ) from exc
    except BudbringerError as exc:
        raise Failed(str(exc), "check BUDBRINGER_FCM__SERVICE_ACCOUNT_FILE") from exc
    except TimeoutError as exc:
        raise Failed("the token endpoint timed out", "check outbound HTTPS") from exc
    finally:
        await channel.aclose()
    return "access token fetched, a message to the project validated (none sent)"


# ---------------------------------------------------------------------- webhooks


async def check_webhooks(settings: Settings) -> list[Check]:
    from gateway.store.backends import open_store

    store = open_store(settings.store_url)
    await store.open()
    try:
        endpoints = [
            endpoint
            for tenant in await store.list_tenants()
            for endpoint in await store.list_webhook_endpoints(tenant.id)
            if endpoint.enabled
        ]
    finally:
        await store.close()
    allowed = parse_networks(settings.webhooks.allowed_networks)
    production = settings.environment == "production"
    loop = asyncio.get_running_loop()
    checks = []
    for endpoint in endpoints:
        name = f"webhook {endpoint.id}"
        host = urlsplit(endpoint.url).hostname or ""
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, None), CHECK_TIMEOUT)
        except (OSError, TimeoutError):
            checks.append(
                Check(name, False, f"{host} does not resolve", "fix the endpoint's URL or DNS")
            )
            continue
        addresses = sorted({str(info[4][0]) for info in infos})
        if production and not any(permitted(a, allowed) for a in addresses):
            checks.append(
                Check(
                    name,
                    False,
                    f"{host} resolves only to internal addresses ({', '.join(addresses)})",
                    "list the platform's network in BUDBRINGER_WEBHOOKS__ALLOWED_NETWORKS, or "
                    "use its public address",
                )
            )
            continue
        checks.append(Check(name, True, f"{host} resolves ({', '.join(addresses)})"))
    if not endpoints:
        checks.append(Check("webhooks", True, "no enabled endpoints"))
    return checks


# ---------------------------------------------------------------------- all


async def _one(name: str, probe: Callable[[], Awaitable[str]], channel: str = "") -> Check:
    try:
        return Check(name, True, await probe(), channel=channel)
    except Failed as exc:
        return Check(name, False, exc.detail, exc.fix, channel=channel, refused=exc.refused)


async def run_checks(settings: Settings) -> list[Check]:
    """Every check of ``settings``, in a fixed order."""
    checks = [await _one("store", lambda: check_store(settings))]
    smtp, twilio, fcm = settings.smtp, settings.twilio, settings.fcm
    providers: list[tuple[str, str, Callable[[], Awaitable[str]] | None]] = [
        ("smtp", "email", (lambda: check_smtp(smtp)) if smtp else None),
        ("twilio", "sms", (lambda: check_twilio(twilio)) if twilio else None),
        ("fcm", "push", (lambda: check_fcm(fcm, settings.public_url)) if fcm else None),
    ]
    for name, channel, probe in providers:
        if channel not in settings.channels:
            checks.append(Check(name, True, f"not used ({channel} is not in channels)"))
        elif probe is not None:
            checks.append(await _one(name, probe, channel))
        elif settings.environment == "production" and not settings.outbox_in_production:
            checks.append(Check(name, False, "not configured", f"configure it for {channel}"))
        else:
            checks.append(
                Check(name, True, f"not configured: {channel} goes into {settings.outbox_dir}/")
            )
    checks.append(await _one("files", lambda: check_files(settings.attachments)))
    if checks[0].ok:
        checks += await check_webhooks(settings)
    return checks


async def doctor(settings: Settings) -> int:
    """``budbringer doctor``: print one line per check; 1 if any failed."""
    checks = await run_checks(settings)
    for check in checks:
        print(check.line())
    return 0 if all(check.ok for check in checks) else 1


async def log_checks(settings: Settings, health: ChannelHealth | None = None) -> None:
    """At ``serve`` start in production: the same checks, into the log; a provider that
    refused our credentials or sender marks its channel stopped in ``health`` at once
    (on /readyz and the metric), rather than show "ok" until a real send fails. The
    breaker probes it once a minute, as any stopped channel."""
    try:
        checks = await run_checks(settings)
    except Exception:
        log.exception("doctor checks could not run")
        return
    for check in checks:
        extra = {"check": check.name, "detail": check.detail}
        if check.ok:
            log.info("doctor: ok", extra=extra)
        else:
            log.warning("doctor: failed", extra={**extra, "fix": check.fix})
            if health is not None and check.refused and check.channel:
                health.refused(check.channel, f"doctor_{check.name}", probe=False)
