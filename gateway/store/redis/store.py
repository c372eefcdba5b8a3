"""The scale-out store backend: Redis through redis-py's asyncio client.

Any number of ``budbringer serve`` and ``budbringer worker`` processes share one
Redis. The key layout is in :mod:`gateway.store.redis.keys`, the atomic scripts in
``redis/lua/*.lua`` (composed by :mod:`gateway.store.redis.scripts`), the deployment
notes in docs/redis.md.

:class:`RedisStore` owns the connection's lifecycle and nothing else: it builds one
:class:`~gateway.store.redis.base.RedisHandle` (client, key names, scripts, retention)
and each feature with it, in a module of its own named as in ``store/sqlite/``
(tenants, api_keys, directory, guardians, messages, deliveries, jobs, inbox, replies,
tracking, webhooks, policy, absence, alert_phones, ratelimit, staff_sessions, retention,
translations, attachments, schedules, digests). A feature that needs another gets it as a
constructor argument. The port methods are the features' bound methods, assigned in ``__init__``:
mypy strict checks them against the Store Protocol as it would methods.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.exceptions import RedisError

from gateway.store.attachments import AttachmentStore
from gateway.store.digests import Digests
from gateway.store.mapping import mapping
from gateway.store.redis import keys
from gateway.store.redis.absence import RedisAbsence
from gateway.store.redis.alert_phones import RedisAlertPhones
from gateway.store.redis.api_keys import RedisApiKeys
from gateway.store.redis.attachments import RedisAttachments
from gateway.store.redis.base import RedisHandle
from gateway.store.redis.deliveries import DeliveryOwners, RedisDeliveries
from gateway.store.redis.digests import RedisDigests
from gateway.store.redis.directory import RedisDirectory
from gateway.store.redis.feed import FeedMarks
from gateway.store.redis.guardians import RedisGuardians
from gateway.store.redis.inbox import RedisInbox
from gateway.store.redis.jobs import RedisJobs, RedisSendLedger
from gateway.store.redis.messages import RedisMessages
from gateway.store.redis.policy import RedisPolicy
from gateway.store.redis.ratelimit import RateLimits
from gateway.store.redis.replies import RedisReplies
from gateway.store.redis.retention import RedisRetention
from gateway.store.redis.schedules import RedisSchedules
from gateway.store.redis.staff_sessions import RedisStaffSessions
from gateway.store.redis.tenants import RedisTenants
from gateway.store.redis.tracking import RedisTracking
from gateway.store.redis.translations import RedisTranslations
from gateway.store.redis.webhooks import RedisWebhooks
from gateway.store.schedules import Schedules
from gateway.store.translations import TranslationStore

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "bb"
DEFAULT_RETENTION_DAYS = 396
# Keys live a day longer than the retention: the daily purge job normally removes them
# first (and keeps the counters right); the expiry is the guarantee.
_TTL_MARGIN = 86_400

_mapped = mapping((RedisError,), "the Redis store failed")


def split_url(url: str) -> tuple[str, str | None, bool]:
    """The Redis URL without our own query parameters, the ``prefix`` it names, and
    whether ``cluster`` (``?cluster=1``: the URL names any node of a Redis Cluster)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), None)
    cluster = next((v for k, v in query if k == "cluster"), "").lower() in ("1", "true", "yes")
    rest = urlencode([(k, v) for k, v in query if k not in ("prefix", "cluster")])
    return urlunsplit(parts._replace(query=rest)), prefix, cluster


class RedisStore:
    """The :class:`gateway.store.Store` on Redis. ``url`` is a redis:// or rediss:// URL
    (``?cluster=1``: of any node of a Redis Cluster, through redis-py's RedisCluster);
    a ``prefix`` query parameter (or the keyword) names the keyspace, ``bb`` by default.
    ``retention_days`` is how long per-message keys live; ``consumer`` names this
    process in the queue's consumer group (default: host, pid and a random tag)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        consumer: str | None = None,
        max_connections: int = 128,
    ) -> None:
        self._url, url_prefix, self._cluster = split_url(url)
        # A pool that is exhausted must make callers wait, never fail: a failed outcome
        # commit means the job is retried and the message sent twice.
        self._max_connections = max_connections
        name = prefix or url_prefix or DEFAULT_PREFIX
        ttl = retention_days * 86_400 + _TTL_MARGIN
        self._db = db = RedisHandle(name, ttl, FeedMarks(keys.queue_prefix(name)))
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._wire(db)
        self.digests: Digests = RedisDigests(db)
        self.translations: TranslationStore = RedisTranslations(db)
        self.attachments: AttachmentStore = RedisAttachments(db)

    def _wire(self, db: RedisHandle) -> None:
        """Build the features and expose their port methods."""
        owners = DeliveryOwners(db)
        jobs = RedisJobs(db, self.consumer, owners.remember)
        deliveries = RedisDeliveries(db, owners, jobs)
        self._keys = api_keys = RedisApiKeys(db)
        self._tenants = tenants = RedisTenants(db, api_keys)
        self._webhooks = webhooks = RedisWebhooks(db)
        self._jobs = jobs
        self._absence = absence = RedisAbsence(db)
        retention = RedisRetention(
            db, tenants=tenants, absence=absence, webhooks=webhooks, owners=owners
        )
        self._expose_tenants(tenants, api_keys)
        directory = RedisDirectory(db)
        messages = RedisMessages(db, jobs)
        self.schedules: Schedules = RedisSchedules(db, messages, jobs)
        self._expose_directory(directory, RedisGuardians(db))
        self._expose_sending(messages, deliveries, jobs)
        self._expose_tracking(RedisInbox(db), RedisReplies(db), RedisTracking(db))
        self._expose_webhooks(webhooks)
        self._expose_policy(RedisPolicy(db), absence, RedisAlertPhones(db))
        self.staff_members = directory.staff_members  # AbsenceStore: the directory's rows
        self.acquire_rate = RateLimits(db).acquire_rate
        staff_sessions = RedisStaffSessions(db)
        self.use_signin_link = staff_sessions.use_signin_link
        self.staff_session_generation = staff_sessions.staff_session_generation
        self.end_staff_sessions = staff_sessions.end_staff_sessions
        self.purge_before = retention.purge_before

    def _expose_tenants(self, tenants: RedisTenants, api_keys: RedisApiKeys) -> None:
        self.create_tenant = tenants.create_tenant
        self.get_tenant = tenants.get_tenant
        self.list_tenants = tenants.list_tenants
        self.get_tenant_scopes = tenants.get_tenant_scopes
        self.set_tenant_scopes = tenants.set_tenant_scopes
        self.add_api_key = api_keys.add_api_key
        self.api_key_by_hash = api_keys.api_key_by_hash
        self.list_api_keys = api_keys.list_api_keys
        self.revoke_api_key = api_keys.revoke_api_key

    def _expose_directory(self, directory: RedisDirectory, guardians: RedisGuardians) -> None:
        self.get_person = directory.get_person
        self.missing_ids = directory.missing_ids
        self.load_audience = directory.load_audience
        self.protected_persons = directory.protected_persons
        self.apply_directory = directory.apply_directory
        self.delete_directory = directory.delete_directory
        self.set_relation_flag = directory.set_relation_flag
        self.flag_history = directory.flag_history
        self.set_protection = directory.set_protection
        self.protection_history = directory.protection_history
        self.set_preferences = guardians.set_preferences
        self.get_preferences = guardians.get_preferences
        self.upsert_device = guardians.upsert_device
        self.remove_device = guardians.remove_device
        self.list_devices = guardians.list_devices
        self.mark_contact_failing = guardians.mark_contact_failing

    def _expose_sending(
        self, messages: RedisMessages, deliveries: RedisDeliveries, jobs: RedisJobs
    ) -> None:
        self.accept_message = messages.accept_message
        self.get_message = messages.get_message
        self.list_messages = messages.list_messages
        self.mark_planned = messages.mark_planned
        self.add_deliveries = deliveries.add_deliveries
        self.get_delivery = deliveries.get_delivery
        self.get_deliveries = deliveries.get_deliveries
        self.list_deliveries = deliveries.list_deliveries
        self.recipient_deliveries = deliveries.recipient_deliveries
        self.transition = deliveries.transition
        self.note_attempt = deliveries.note_attempt
        self.delivery_by_provider_id = deliveries.delivery_by_provider_id
        self.latest_delivery_to = deliveries.latest_delivery_to
        self.tenant_for_address = deliveries.tenant_for_address
        self.history = deliveries.history
        self.count_by_status = deliveries.count_by_status
        self.delivery_stats = deliveries.delivery_stats
        ledger = RedisSendLedger(self._db, deliveries.apply_moves)
        self.finish_send = ledger.finish_send
        self.finish_sends = ledger.finish_sends
        self.claim_jobs = jobs.claim_jobs
        self.finish_job = jobs.finish_job
        self.retry_job = jobs.retry_job
        self.hold_handed = jobs.hold_handed
        self.postpone_job = jobs.postpone_job
        self.get_jobs = jobs.get_jobs
        self.queue_stats = jobs.queue_stats

    def _expose_tracking(
        self, inbox: RedisInbox, replies: RedisReplies, tracking: RedisTracking
    ) -> None:
        self.list_inbox = inbox.list_inbox
        self.inbox_item = inbox.inbox_item
        self.mark_read = inbox.mark_read
        self.add_reply = replies.add_reply
        self.list_replies = replies.list_replies
        self.add_reached = tracking.add_reached
        self.list_reached = tracking.list_reached
        self.list_reads = tracking.list_reads

    def _expose_webhooks(self, webhooks: RedisWebhooks) -> None:
        self.append_change = webhooks.append_change
        self.create_webhook_endpoint = webhooks.create_webhook_endpoint
        self.list_webhook_endpoints = webhooks.list_webhook_endpoints
        self.get_webhook_endpoint = webhooks.get_webhook_endpoint
        self.update_webhook_endpoint = webhooks.update_webhook_endpoint
        self.delete_webhook_endpoint = webhooks.delete_webhook_endpoint
        self.disable_webhook_endpoint = webhooks.disable_webhook_endpoint
        self.changes_since = webhooks.changes_since
        self.webhook_cursor = webhooks.webhook_cursor
        self.enqueue_webhooks = webhooks.enqueue_webhooks
        self.get_webhook_message = webhooks.get_webhook_message
        self.list_webhook_messages = webhooks.list_webhook_messages
        self.webhook_attempts = webhooks.webhook_attempts
        self.record_webhook_attempt = webhooks.record_webhook_attempt
        self.replay_webhook_message = webhooks.replay_webhook_message

    def _expose_policy(
        self, policy: RedisPolicy, absence: RedisAbsence, phones: RedisAlertPhones
    ) -> None:
        self.get_escalation_override = policy.get_escalation_override
        self.set_escalation_override = policy.set_escalation_override
        self.get_absence_settings = policy.get_absence_settings
        self.set_absence_settings = policy.set_absence_settings
        self.claim_absence = absence.claim_absence
        self.get_absence = absence.get_absence
        self.find_absence = absence.find_absence
        self.cancel_absence = absence.cancel_absence
        self.add_absence_explanation = absence.add_absence_explanation
        self.list_absence_explanations = absence.list_absence_explanations
        self.absences_on = absence.absences_on
        self.add_alert_phones = phones.add_alert_phones
        self.alert_phones = phones.alert_phones

    # ------------------------------------------------------------------ lifecycle

    @_mapped
    async def open(self) -> None:
        """Connect, check Redis answers, load the scripts; relay changes a crash left
        unmarked and give old tenants' keys their rows."""
        if self._db.client is not None:
            return
        client = self._db.client = self._connect()
        client.set_response_callback("EVALSHA", self._db.feed.unwrap)
        try:
            await client.ping()
            await self._db.load_scripts()
            await self._webhooks.sweep_feeds()
            await self._tenants.migrate_api_keys()
            await self._absence.index_days([t.id for t in await self._tenants.list_tenants()])
        except BaseException:
            await client.aclose()
            self._db.client = None
            raise

    def _connect(self) -> Redis | RedisCluster:
        if self._cluster:
            # RedisCluster fails a call when a node's pool is exhausted (it has no blocking
            # pool), so its limit is set far above any real concurrency.
            return RedisCluster.from_url(
                self._url,
                max_connections=max(self._max_connections, 10_000),
                decode_responses=True,
                socket_connect_timeout=10,
                health_check_interval=30,
            )
        pool = BlockingConnectionPool.from_url(
            self._url,
            max_connections=self._max_connections,
            timeout=30,
            decode_responses=True,
            socket_connect_timeout=10,
            health_check_interval=30,
        )
        return Redis.from_pool(pool)  # closing the client closes the pool

    @_mapped
    async def close(self) -> None:
        client, self._db.client = self._db.client, None
        if client is None:
            return
        try:
            await self._jobs.forget_consumer(client)
        except Exception:  # tidying the consumer group is a courtesy, closing matters more
            log.debug("could not tidy the consumer group", exc_info=True)
        finally:
            await client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._db.redis.ping())
        except Exception:
            return False
