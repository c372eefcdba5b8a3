"""Assembles a running gateway: store, channels, renderer, dispatcher and HTTP API.

``budbringer serve`` runs API and workers in one process; ``--no-workers``
runs the API only; ``budbringer worker`` runs workers only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import signal
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from channels import Channel, build_channels
from gateway import sms_status
from gateway.absence import Absences, alert_cancelled
from gateway.api.app import create_app
from gateway.api.context import AppContext
from gateway.api.limits import listen, runner_options
from gateway.attachments import Attachments
from gateway.audience_handoff import AudienceHandoff
from gateway.clock import Clock, SystemClock
from gateway.config_check import refuse_unsafe_production
from gateway.digest import DigestSender
from gateway.dispatcher import Dispatcher
from gateway.doctor import log_checks
from gateway.errors import ChannelUnavailable, ConfigError
from gateway.escalation import Escalator
from gateway.filestore import open_file_store
from gateway.gcpause import settle
from gateway.jobs import registry
from gateway.readlinks import read_link_maker
from gateway.render import Renderer
from gateway.retention import Retention
from gateway.settings import Settings
from gateway.store import Store
from gateway.store.backends import open_store
from gateway.translations import Translations
from gateway.translators import build_translator
from gateway.urgent_handoff import UrgentHandoff
from gateway.webhooks import WebhookService

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def sms_fallback_sender(settings: Settings) -> str | None:
    """The SMS sender of a unit without its own (as channels/sms.py chooses it)."""
    twilio = settings.twilio
    return None if twilio is None else twilio.messaging_service_sid or twilio.default_sender


def load_secret(settings: Settings) -> bytes:
    """The key that signs guardian tokens and read links.

    Production requires ``secret_key``. In development a random key is kept in a
    file beside the SQLite database, so tokens survive a restart.
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    if settings.environment == "production" or not settings.store_url.startswith("sqlite"):
        raise ConfigError("BUDBRINGER_SECRET_KEY must be set")
    path = settings.sqlite_path.parent / ".budbringer-secret"
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()
    except OSError as exc:
        raise ConfigError(
            f"cannot keep the development secret beside the SQLite store in {path.parent}:"
            f" {exc.strerror} (BUDBRINGER_STORE_URL)"
        ) from exc


class Service:
    """One gateway process. ``start`` then ``stop``; ``port`` is the bound port."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        api: bool = True,
        workers: bool = True,
        store: Store | None = None,
        channels: dict[str, Channel] | None = None,
    ) -> None:
        refuse_unsafe_production(settings)
        if settings.environment == "production" and settings.outbox_in_production:
            log.warning(
                "outbox_in_production: channels without a provider write into files, "
                "nothing reaches a guardian",
                extra={"outbox_dir": str(settings.outbox_dir)},
            )
        self.settings = settings
        self.clock = clock or SystemClock()
        self.api = api
        self.workers = workers
        self.store = store or open_store(
            settings.store_url,
            retention_days=settings.retention_days,
            concurrency=settings.dispatch.concurrency,
        )
        self.channels = channels if channels is not None else build_channels(settings)
        secret = load_secret(settings)
        self.files = open_file_store(settings.attachments)
        self.attachments = Attachments(self.store, self.files, settings.attachments, self.clock)
        self.renderer = Renderer(
            settings.templates_dir or TEMPLATES_DIR,
            settings.public_url,
            link_for=read_link_maker(
                secret,
                settings.public_url,
                timedelta(days=settings.read_link_ttl_days),
            ),
            sms_fallback_sender=sms_fallback_sender(settings),
            locale_dir=settings.locale_dir,
            email_max_bytes=settings.attachments.email_max_bytes,
        )
        # Set whenever new work is queued, so idle workers wake at once.
        wake = asyncio.Event()
        # The intake's audience snapshot for this process's planner: only where both run.
        audiences = AudienceHandoff() if api and workers else None
        # Small urgent work to this process's dispatcher past the queue
        # (gateway/urgent_handoff.py).
        handoff = UrgentHandoff(settings.dispatch.urgent_handoff)
        self.escalator = Escalator(
            self.store,
            self.clock,
            settings.escalation,
            work_available=wake,
            stop=functools.partial(alert_cancelled, self.store),
            voice=settings.voice,
        )
        self.absences = Absences(
            self.store,
            self.clock,
            settings,
            renderer=self.renderer,
            escalator=self.escalator,
            work_available=wake,
            handoff=handoff,
            audiences=audiences,
        )
        self.webhooks = WebhookService(
            self.store,
            self.clock,
            settings.webhooks,
            public_only=settings.environment == "production",
            secret=secret,
        )
        self.retention = Retention(
            self.store, self.clock, settings.retention_days, attachments=self.attachments
        )
        # The daily digest (gateway/digest.py): one job per guardian and digest time.
        self.digests = DigestSender(
            self.store,
            self.channels,
            self.renderer,
            self.clock,
            settings=settings.dispatch,
            work_available=wake,
        )
        # Staff text per recipient language, made once (gateway/translations.py).
        self.translations = Translations(
            self.store, build_translator(settings.translation), self.clock
        )
        # One registry of every feature's jobs: a kind claimed twice stops the start here.
        self.dispatcher = Dispatcher(
            self.store,
            self.channels,
            self.renderer,
            self.clock,
            settings.dispatch,
            work_available=wake,
            attachments=self.attachments,
            translations=self.translations,
            handlers=registry(
                self.translations.handlers(),
                self.webhooks.handlers(),
                self.escalator.handlers(),
                self.absences.handlers(),
                self.retention.handlers(),
                sms_status.handlers(self.store, self.clock, wake),
                self.digests.handlers(),
            ),
            on_planned=self.escalator.after_plan,
            audiences=audiences,
            handoff=handoff,
        )
        # A digest's send is let in as every send is: rate limits, breaker, in-flight.
        self.digests.admission = self.dispatcher.admitted
        self.ctx = AppContext(
            settings=settings,
            store=self.store,
            clock=self.clock,
            secret=secret,
            renderer=self.renderer,
            work_available=wake,
            channel_health=self.dispatcher.health if workers else None,
            absences=self.absences,
            attachments=self.attachments,
            audiences=audiences,
        )
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self.port: int | None = None
        self._doctor_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.open()
        if self.workers:
            for name, channel in self.channels.items():
                try:
                    await channel.start()
                except ChannelUnavailable as exc:
                    # The provider refuses our credentials (an FCM key it rejects): that
                    # channel is stopped and probed once a minute, logged and on
                    # /readyz; the gateway still takes events and sends the rest.
                    self.dispatcher.health.refused(name, exc.code or "unavailable", probe=False)
            await self.webhooks.start()
            await self.retention.schedule()
            self._worker_task = asyncio.create_task(self.dispatcher.run())
        if self.api:
            self._runner = web.AppRunner(
                create_app(self.ctx),
                access_log=None,
                shutdown_timeout=self.settings.dispatch.shutdown_timeout,
                **runner_options(self.settings.http),
            )
            await self._runner.setup()
            self._server = await listen(self._runner, self.settings)
            sockets = self._server.sockets
            self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
            log.info("listening", extra={"host": self.settings.host, "port": self.port})
        if self.settings.environment == "production":
            # The doctor's checks, into the log; a provider that is down must not keep the
            # gateway from taking events, so this never stops the start.
            health = self.dispatcher.health if self.workers else None
            self._doctor_task = asyncio.create_task(log_checks(self.settings, health))

    async def stop(self) -> None:
        """Stop intake first, then let in-flight sends finish within the timeout."""
        if self._doctor_task is not None:
            self._doctor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._doctor_task
        if self._worker_task is not None:
            # At once, not after the HTTP drain (which clients can stretch to its timeout):
            # no new job is claimed from here on, while in-flight sends go on.
            self.dispatcher.stop()
        if self._server is not None:
            self._server.close()  # no new connections; the runner drains the open ones
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._worker_task is not None:
            await self._worker_task
            self._worker_task = None
        if self.workers:
            # Also after a failed start: channels opened before the failure are closed.
            for channel in self.channels.values():
                with contextlib.suppress(Exception):
                    await channel.aclose()
            await self.webhooks.aclose()
        await self.translations.aclose()
        await self.files.aclose()
        await self.store.close()


async def run_until_signalled(service: Service) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Inside the try: a start that fails half-way (a missing credentials file, a
        # port in use) must still close the store, or its threads keep the process alive.
        await service.start()
        settle()  # a long-running process: the collector tuned for it (gateway/gcpause.py)
        await stop.wait()
        log.info("stopping")
    finally:
        await service.stop()
