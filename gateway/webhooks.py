"""Outbound webhooks to the platform: a durable outbox, signed the Standard Webhooks way.

How an event travels:

1. A change is recorded by the store in the same transaction that makes it (a
   status history row, a read, a reply, a child reached, an explanation, an absence
   no staff can receive), into a change feed, only for tenants with an enabled endpoint.
2. One ``webhook_fanout`` job (one job id, so one runs at a time anywhere) reads
   the feed from its cursor and writes one outbox message per (change, subscribed
   endpoint), with a deterministic id, and moves the cursor, in one transaction.
3. One ``webhook_send`` job per message POSTs it. ``webhook-id`` is the message id
   (stable across retries), ``webhook-timestamp`` the wall time of this attempt,
   ``webhook-signature`` one ``v1,`` HMAC-SHA256 per live secret of the endpoint.
   2xx is success; 410 disables the endpoint; anything else is retried on
   ``settings.webhooks.retry_schedule`` (429/503 not before ``Retry-After``),
   then the message is ``failed`` and can be replayed.

Bodies carry personal data (reply texts); they go to the platform and never to logs.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import aiohttp
from standardwebhooks.webhooks import Webhook
from yarl import URL

from gateway import __version__
from gateway.addresses import (
    AddressRefused,
    Network,
    PublicOnlyResolver,
    check_literal,
    parse_networks,
)
from gateway.clock import Clock
from gateway.constants import JOB_WEBHOOK_FANOUT, JOB_WEBHOOK_SEND
from gateway.jobs import JobHandler
from gateway.metrics import WEBHOOK_ATTEMPTS
from gateway.models import (
    Change,
    Job,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    WebhookStatus,
    derive_id,
)
from gateway.pseudonyms import Names, NamesStore, names_for, person_ids_in, pseudonymise_data
from gateway.settings import WebhookSettings
from gateway.store.ports import JobQueue, WebhookEndpoints, WebhookOutbox

log = logging.getLogger(__name__)

USER_AGENT = f"Budbringer-Webhooks/{__version__}"
RESPONSE_KEEP = 200  # characters of a response body kept with an attempt
ENDPOINT_GONE = "endpoint_gone"
ENDPOINT_DISABLED = "endpoint_disabled"
_RETRY_AFTER_STATUSES = frozenset({429, 503})
FANOUT_RETRY = 5.0  # seconds before a failed fan-out round is tried again


def wall_clock() -> datetime:
    """Real time. Signatures always use it: receivers check timestamps against their own
    clock, whatever clock schedules our retries."""
    return datetime.now(UTC)


def envelope(change: Change) -> str:
    """The JSON body of a change, the Standard Webhooks way: type, timestamp, data."""
    return json.dumps(
        {"type": change.type, "timestamp": change.at.isoformat(), "data": change.data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def message_id(change: Change, endpoint: WebhookEndpoint) -> str:
    """The outbox id (and ``webhook-id``) of a change for an endpoint: the same inputs
    always give the same id, so a repeated fan-out writes nothing new."""
    return "msg_" + derive_id("webhook", change.tenant_id, str(change.seq), endpoint.id)


def send_job_id(message_id: str) -> str:
    return f"{JOB_WEBHOOK_SEND}:{message_id}"


def secrets_in_use(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The endpoint's secret, and the previous one while its rotation grace lasts."""
    live = [endpoint.secret]
    if (
        endpoint.previous_secret
        and endpoint.previous_secret_until is not None
        and endpoint.previous_secret_until > now
    ):
        live.append(endpoint.previous_secret)
    return live


def sign(secrets: Sequence[str], msg_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers; one ``v1,`` signature per secret."""
    signatures = [Webhook(s).sign(msg_id=msg_id, timestamp=timestamp, data=body) for s in secrets]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def retry_delay(
    attempts: int, settings: WebhookSettings, retry_after: float | None
) -> float | None:
    """Seconds to wait after ``attempts`` failed attempts, or None when the schedule is done.

    The scheduled wait is stretched by up to ``jitter`` (never shortened, so the whole
    schedule is kept), and is at least the receiver's ``Retry-After`` (capped)."""
    schedule = settings.retry_schedule
    if attempts > len(schedule):
        return None
    delay = schedule[attempts - 1] * (1 + random.uniform(0, settings.jitter))
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.max_retry_after))
    return delay


def _refused_literal(host: str, allowed: Sequence[Network]) -> bool:
    try:
        check_literal(host, allowed)
    except AddressRefused:
        return True
    return False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one POST came to: the attempt record, a failure code (None: delivered), and
    the receiver's Retry-After in seconds."""

    attempt: WebhookAttempt
    code: str | None
    retry_after: float | None


class WebhookStore(WebhookEndpoints, WebhookOutbox, JobQueue, NamesStore, Protocol):
    """What the fan-out and the sends need: endpoints, the feed and outbox, their jobs,
    and the names to pseudonymise."""


class WebhookService:
    """The fan-out and the sender. ``register`` its jobs with a dispatcher, ``start`` it in
    the running loop (one shared aiohttp session), ``aclose`` it at shutdown."""

    def __init__(
        self,
        store: WebhookStore,
        clock: Clock,
        settings: WebhookSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        wall: Callable[[], datetime] = wall_clock,
        public_only: bool = False,
        secret: bytes = b"",
    ) -> None:
        self.store = store
        # Pseudonyms of protected persons for tenants without the protected scope
        # (gateway/pseudonyms.py), the same as the status API shows.
        self.secret = secret
        self.clock = clock
        self.settings = settings
        self.wall = wall
        # Production: reach only public addresses (or allowed networks) — no SSRF.
        self.public_only = public_only
        self._allowed = parse_networks(settings.allowed_networks)
        self._session = session
        self._own_session = session is None

    def handlers(self) -> dict[str, JobHandler]:
        """The fan-out of the change feed and the sends of the outbox."""
        return {JOB_WEBHOOK_FANOUT: self.fan_out, JOB_WEBHOOK_SEND: self.send}

    async def start(self) -> None:
        self._client()

    def _client(self) -> aiohttp.ClientSession:
        """The shared session, made on first use inside the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                connector=aiohttp.TCPConnector(
                    limit=self.settings.connections,
                    resolver=PublicOnlyResolver(self._allowed) if self.public_only else None,
                ),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ fan-out

    async def fan_out(self, job: Job) -> None:
        """Turn one batch of the change feed into outbox messages and their send jobs."""
        try:
            await self._fan_out(job)
        except Exception:
            # Not the dispatcher's backoff: this one job's attempts grow with every batch
            # of a long broadcast, and a hiccup should not hold every webhook for an hour.
            log.exception("webhook fan-out failed; trying again shortly")
            await self.store.retry_job(
                job.id, self.clock.now() + timedelta(seconds=FANOUT_RETRY), "fanout_error"
            )

    async def _fan_out(self, job: Job) -> None:
        cursor = await self.store.webhook_cursor()
        changes, next_cursor = await self.store.changes_since(cursor, self.settings.fanout_batch)
        now = self.clock.now()
        messages: list[WebhookMessage] = []
        jobs: list[Job] = []
        endpoints: dict[str, list[WebhookEndpoint]] = {}
        names: dict[str, Names] = {}
        for tenant_id in dict.fromkeys(c.tenant_id for c in changes):
            persons = {
                p for c in changes if c.tenant_id == tenant_id for p in person_ids_in(c.data)
            }
            names[tenant_id] = await names_for(self.store, self.secret, tenant_id, persons)
        for change in changes:
            if change.tenant_id not in endpoints:
                endpoints[change.tenant_id] = [
                    e
                    for e in await self.store.list_webhook_endpoints(change.tenant_id)
                    if e.enabled
                ]
            name = names[change.tenant_id]
            body = envelope(
                change.model_copy(update={"data": pseudonymise_data(change.data, name)})
            )
            for endpoint in endpoints[change.tenant_id]:
                if change.type not in endpoint.event_types:
                    continue
                msg_id = message_id(change, endpoint)
                messages.append(
                    WebhookMessage(
                        id=msg_id,
                        tenant_id=change.tenant_id,
                        endpoint_id=endpoint.id,
                        event_type=change.type,
                        body=body,
                        next_attempt_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                )
                jobs.append(
                    Job(
                        id=send_job_id(msg_id),
                        tenant_id=change.tenant_id,
                        kind=JOB_WEBHOOK_SEND,
                        ref=msg_id,
                        due_at=now,
                    )
                )
        more = await self.store.enqueue_webhooks(cursor, next_cursor, messages, jobs, job.id)
        if messages:
            log.info(
                "webhook messages queued",
                extra={"messages": len(messages), "changes": len(changes)},
            )
        if more:
            await self.store.retry_job(job.id, now, "more")

    # ------------------------------------------------------------------ send

    async def send(self, job: Job) -> None:
        """POST one outbox message and record the outcome (and the next try, if any)."""
        message = await self.store.get_webhook_message(job.ref)
        if message is None or message.status is not WebhookStatus.pending:
            await self.store.finish_job(job.id)  # delivered, failed or deleted meanwhile
            return
        endpoint = await self.store.get_webhook_endpoint(message.tenant_id, message.endpoint_id)
        if endpoint is None or not endpoint.enabled:
            reason = endpoint.disabled_reason if endpoint else None
            await self.store.record_webhook_attempt(
                message.id,
                job.id,
                None,
                WebhookStatus.failed,
                reason=reason or ENDPOINT_DISABLED,
                at=self.clock.now(),
            )
            return
        outcome = await self._post(endpoint, message)
        attempts = message.attempts + 1
        now = self.clock.now()
        extra = {
            "webhook_id": message.id,
            "endpoint_id": endpoint.id,
            "event_type": message.event_type,
            "status_code": outcome.attempt.status_code,
            "attempt": attempts,
        }
        if outcome.code is None:
            await self.store.record_webhook_attempt(
                message.id, job.id, outcome.attempt, WebhookStatus.delivered, at=now
            )
            log.info("webhook delivered", extra=extra)
            WEBHOOK_ATTEMPTS.labels("delivered").inc()
            return
        if outcome.attempt.status_code == 410:
            await self.store.record_webhook_attempt(
                message.id,
                job.id,
                outcome.attempt,
                WebhookStatus.failed,
                reason=ENDPOINT_GONE,
                at=now,
            )
            stopped = await self.store.disable_webhook_endpoint(
                endpoint.tenant_id, endpoint.id, ENDPOINT_GONE, now
            )
            log.warning(
                "webhook endpoint answered 410 Gone: disabled", extra={**extra, "stopped": stopped}
            )
            WEBHOOK_ATTEMPTS.labels("gone").inc()
            return
        delay = retry_delay(attempts, self.settings, outcome.retry_after)
        if delay is None:
            await self.store.record_webhook_attempt(
                message.id,
                job.id,
                outcome.attempt,
                WebhookStatus.failed,
                reason=outcome.code,
                at=now,
            )
            log.warning("webhook failed after the whole retry schedule", extra=extra)
            WEBHOOK_ATTEMPTS.labels("failed").inc()
            return
        await self.store.record_webhook_attempt(
            message.id,
            job.id,
            outcome.attempt,
            WebhookStatus.pending,
            next_attempt_at=now + timedelta(seconds=delay),
            reason=outcome.code,
            at=now,
        )
        # A receiver that fails is the platform's outage: visible at WARNING, not INFO.
        log.warning(
            "webhook attempt failed; retrying",
            extra={**extra, "code": outcome.code, "retry_in": round(delay, 1)},
        )
        WEBHOOK_ATTEMPTS.labels("retrying").inc()

    async def _post(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> Outcome:
        session = self._client()
        signed_at = self.wall()
        headers = sign(
            secrets_in_use(endpoint, self.clock.now()), message.id, signed_at, message.body
        )
        headers["Content-Type"] = "application/json"
        at = self.clock.now()
        started = time.perf_counter()
        status: int | None = None
        response: str | None = None
        retry_after: float | None = None
        code: str | None
        host = URL(endpoint.url).host or ""
        # aiohttp does not ask the resolver about a literal IP: check it here. Names are
        # checked by the resolver, on every connection.
        if self.public_only and _refused_literal(host, self._allowed):
            attempt = WebhookAttempt(
                at=at, status_code=None, duration_ms=0, error="address_not_public", response=None
            )
            return Outcome(attempt, "address_not_public", None)
        try:
            async with session.post(
                endpoint.url,
                data=message.body.encode(),
                headers=headers,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                raw = await resp.content.read(RESPONSE_KEEP * 4)
                response = raw.decode("utf-8", "replace")[:RESPONSE_KEEP] or None
                if status in _RETRY_AFTER_STATUSES:
                    retry_after = retry_after_seconds(resp.headers.get("Retry-After"), self.wall())
            code = None if 200 <= status < 300 else f"http_{status}"
        except TimeoutError:
            code = "timeout"
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, AddressRefused)
            code = "address_not_public" if refused else "connection_error"
        except aiohttp.ClientConnectionError:
            code = "connection_error"
        except aiohttp.ClientError:
            code = "client_error"
        duration_ms = int((time.perf_counter() - started) * 1000)
        attempt = WebhookAttempt(
            at=at, status_code=status, duration_ms=duration_ms, error=code, response=response
        )
        return Outcome(attempt, code, retry_after)
