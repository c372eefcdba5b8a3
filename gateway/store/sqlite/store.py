"""The embedded store backend: SQLite in WAL mode through aiosqlite.

:class:`SqliteStore` opens the handle (``base.SqliteHandle``: one writer connection,
one reader), creates the schema of every feature, and builds each feature with the
handle; its port methods forward to the feature that implements them. Each feature
has the same file name here and in ``store/redis/`` (``tenants``, ``api_keys``,
``directory``, ``guardians``, ``messages``, ``deliveries``, ``jobs``, ``inbox``,
``replies``, ``tracking``, ``webhooks``, ``policy``, ``absence``, ``alert_phones``,
``ratelimit``, ``staff_sessions``, ``retention``, and the parts ``translations``,
``attachments``, ``schedules``, ``digests``). Explicit forwarding keeps the class checked
against the ``Store`` Protocol by mypy strict, which ``__getattr__`` would not.

Datetimes are stored as integer microseconds since the epoch (exact, and compared
cheaply), JSON columns as text. Sets of ids are passed as one JSON array and
expanded with ``json_each``, so no query grows with the size of an audience.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.errors import StoreError
from gateway.models import (
    AbsenceClaim,
    AbsenceExplanation,
    AbsenceRecord,
    AlertPhone,
    ApiKey,
    Audience,
    Change,
    Delivery,
    DeliveryStatus,
    Device,
    DirectoryBatch,
    DirectoryDeletion,
    DirectorySnapshot,
    InboxItem,
    Job,
    Message,
    Person,
    Preferences,
    Protection,
    Reached,
    ReadRecord,
    RelationFlags,
    Reply,
    StatusChange,
    Tenant,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    WebhookStatus,
)
from gateway.protection import ProtectionHistoryEntry
from gateway.store.digests import Digests
from gateway.store.directory_apply import CHUNK_ROWS, ChunkHook
from gateway.store.lanes import DEFAULT_NORMAL_SHARE
from gateway.store.records import FlagHistoryEntry, SendOutcome
from gateway.store.schedules import Schedules
from gateway.store.sqlite.absence import SqliteAbsence, index_absence_days
from gateway.store.sqlite.alert_phones import SqliteAlertPhones
from gateway.store.sqlite.api_keys import SqliteApiKeys, migrate_api_keys
from gateway.store.sqlite.attachments import SqliteAttachments
from gateway.store.sqlite.base import SqliteFeature, SqliteHandle, mapped, settle
from gateway.store.sqlite.deliveries import SqliteDeliveries, drop_unused_lookup_indexes
from gateway.store.sqlite.digests import SqliteDigests
from gateway.store.sqlite.directory import SqliteDirectory
from gateway.store.sqlite.guardians import SqliteGuardians
from gateway.store.sqlite.inbox import SqliteInbox
from gateway.store.sqlite.jobs import SqliteJobs, add_job_lanes
from gateway.store.sqlite.messages import SqliteMessages
from gateway.store.sqlite.policy import SqlitePolicy
from gateway.store.sqlite.ratelimit import SqliteRateLimits
from gateway.store.sqlite.replies import SqliteReplies
from gateway.store.sqlite.retention import SqliteRetention
from gateway.store.sqlite.schedules import SqliteSchedules
from gateway.store.sqlite.staff_sessions import SqliteStaffSessions
from gateway.store.sqlite.tenants import SqliteTenants
from gateway.store.sqlite.tracking import SqliteTracking
from gateway.store.sqlite.translations import SqliteTranslations
from gateway.store.sqlite.webhooks import SqliteWebhooks
from gateway.store.translations import TranslationStore

SCHEMA_VERSION = 1


class SqliteStore:
    """The :class:`gateway.store.Store` on one SQLite file (WAL, one writer connection)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self._db = db = SqliteHandle(str(path), busy_timeout_ms)
        self._tenants = SqliteTenants(db)
        self._keys = SqliteApiKeys(db)
        self._directory = SqliteDirectory(db)
        self._guardians = SqliteGuardians(db)
        self._messages = SqliteMessages(db)
        self._deliveries = SqliteDeliveries(db)
        self._jobs = SqliteJobs(db)
        self._inbox = SqliteInbox(db)
        self._replies = SqliteReplies(db)
        self._tracking = SqliteTracking(db)
        self._webhooks = SqliteWebhooks(db)
        self._policy = SqlitePolicy(db)
        self._absence = SqliteAbsence(db)
        self._alert_phones = SqliteAlertPhones(db)
        self._rates = SqliteRateLimits(db)
        self._staff_sessions = SqliteStaffSessions(db)
        self._retention = SqliteRetention(db)
        self.translations: TranslationStore = SqliteTranslations(db)
        self.attachments = SqliteAttachments(db)
        self.schedules: Schedules = SqliteSchedules(db)
        self.digests: Digests = SqliteDigests(db)

    # ------------------------------------------------------------------ lifecycle

    @mapped
    async def open(self) -> None:
        """Open both connections, switch to WAL and create the schema if missing."""
        await self._db.open(self._create_schema)

    def _features(self) -> list[SqliteFeature]:
        return [f for f in vars(self).values() if isinstance(f, SqliteFeature)]

    async def _create_schema(self, db: aiosqlite.Connection) -> None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            for feature in self._features():
                for statement in feature.SCHEMA.split(";"):
                    if statement.strip():
                        await db.execute(statement)
            await add_job_lanes(db)
            await drop_unused_lookup_indexes(db)
            await migrate_api_keys(db)
            await index_absence_days(db)
            rows = list(await db.execute_fetchall("SELECT version FROM schema_version"))
            if not rows:
                await db.execute(
                    "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
                )
            elif rows[0][0] > SCHEMA_VERSION:
                raise StoreError("the database was written by a newer Budbringer")
            await db.execute("COMMIT")
        except BaseException:
            await settle(db)
            raise

    @mapped
    async def close(self) -> None:
        """Wait for the running read and write, then close both connections."""
        await self._db.close()

    @mapped
    async def ping(self) -> bool:
        try:
            async with self._db.read() as db:
                rows = list(await db.execute_fetchall("SELECT 1"))
        except StoreError:
            return False
        return rows == [(1,)]

    # ------------------------------------------------------------------ the ports

    # TenantStore
    async def create_tenant(self, tenant: Tenant, first_key: ApiKey | None = None) -> None:
        await self._tenants.create_tenant(tenant, first_key)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return await self._tenants.get_tenant(tenant_id)

    async def list_tenants(self) -> list[Tenant]:
        return await self._tenants.list_tenants()

    async def get_tenant_scopes(self, tenant_id: str) -> list[str]:
        return await self._tenants.get_tenant_scopes(tenant_id)

    async def set_tenant_scopes(self, tenant_id: str, scopes: Sequence[str]) -> None:
        await self._tenants.set_tenant_scopes(tenant_id, scopes)

    # KeyStore
    async def add_api_key(self, key: ApiKey) -> None:
        await self._keys.add_api_key(key)

    async def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        return await self._keys.api_key_by_hash(key_hash)

    async def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        return await self._keys.list_api_keys(tenant_id)

    async def revoke_api_key(self, tenant_id: str, key_id: str, at: datetime) -> ApiKey | None:
        return await self._keys.revoke_api_key(tenant_id, key_id, at)

    # AudienceReader
    async def get_person(self, tenant_id: str, person_id: str) -> Person | None:
        return await self._directory.get_person(tenant_id, person_id)

    async def missing_ids(self, tenant_id: str, audience: Audience) -> list[tuple[str, str]]:
        return await self._directory.missing_ids(tenant_id, audience)

    async def load_audience(self, tenant_id: str, audience: Audience) -> DirectorySnapshot:
        return await self._directory.load_audience(tenant_id, audience)

    async def protected_persons(self, tenant_id: str, person_ids: Sequence[str]) -> set[str]:
        return await self._directory.protected_persons(tenant_id, person_ids)

    # DirectoryStore
    async def apply_directory(
        self,
        tenant_id: str,
        batch: DirectoryBatch,
        at: datetime | None = None,
        *,
        chunk_rows: int = CHUNK_ROWS,
        on_chunk: ChunkHook | None = None,
    ) -> dict[str, int]:
        return await self._directory.apply_directory(
            tenant_id, batch, at, chunk_rows=chunk_rows, on_chunk=on_chunk
        )

    async def delete_directory(self, tenant_id: str, deletion: DirectoryDeletion) -> dict[str, int]:
        return await self._directory.delete_directory(tenant_id, deletion)

    async def set_relation_flag(
        self,
        tenant_id: str,
        child_id: str,
        guardian_id: str,
        flag: str,  # "information_granted" or "blocked"
        value: bool,
        reason: str,
        actor: str,
        at: datetime,
    ) -> RelationFlags:
        return await self._directory.set_relation_flag(
            tenant_id, child_id, guardian_id, flag, value, reason, actor, at
        )

    async def flag_history(
        self, tenant_id: str, child_id: str, guardian_id: str
    ) -> list[FlagHistoryEntry]:
        return await self._directory.flag_history(tenant_id, child_id, guardian_id)

    async def set_protection(
        self,
        tenant_id: str,
        person_id: str,
        level: Protection,
        reason: str,
        actor: str,
        at: datetime,
    ) -> ProtectionHistoryEntry:
        return await self._directory.set_protection(tenant_id, person_id, level, reason, actor, at)

    async def protection_history(
        self, tenant_id: str, person_id: str
    ) -> list[ProtectionHistoryEntry]:
        return await self._directory.protection_history(tenant_id, person_id)

    # GuardianStore
    async def set_preferences(self, tenant_id: str, guardian_id: str, prefs: Preferences) -> None:
        await self._guardians.set_preferences(tenant_id, guardian_id, prefs)

    async def get_preferences(self, tenant_id: str, guardian_id: str) -> Preferences | None:
        return await self._guardians.get_preferences(tenant_id, guardian_id)

    async def upsert_device(self, tenant_id: str, guardian_id: str, device: Device) -> None:
        await self._guardians.upsert_device(tenant_id, guardian_id, device)

    async def remove_device(self, tenant_id: str, guardian_id: str, device_id: str) -> bool:
        return await self._guardians.remove_device(tenant_id, guardian_id, device_id)

    async def list_devices(self, tenant_id: str, guardian_id: str) -> list[Device]:
        return await self._guardians.list_devices(tenant_id, guardian_id)

    async def mark_contact_failing(
        self, tenant_id: str, person_id: str, kind: str, address: str, code: str, at: datetime
    ) -> None:
        await self._guardians.mark_contact_failing(tenant_id, person_id, kind, address, code, at)

    # MessageStore
    async def accept_message(self, message: Message, job: Job) -> Message:
        return await self._messages.accept_message(message, job)

    async def get_message(self, tenant_id: str, message_id: str) -> Message | None:
        return await self._messages.get_message(tenant_id, message_id)

    async def list_messages(
        self,
        tenant_id: str,
        *,
        limit: int = 50,
        before: datetime | None = None,
        before_id: str | None = None,
    ) -> list[Message]:
        return await self._messages.list_messages(
            tenant_id, limit=limit, before=before, before_id=before_id
        )

    async def mark_planned(self, tenant_id: str, message_id: str, at: datetime) -> None:
        await self._messages.mark_planned(tenant_id, message_id, at)

    # DeliveryStore
    async def add_deliveries(self, deliveries: Sequence[Delivery], jobs: Sequence[Job]) -> int:
        return await self._deliveries.add_deliveries(deliveries, jobs)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        return await self._deliveries.get_delivery(delivery_id)

    async def get_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, Delivery]:
        return await self._deliveries.get_deliveries(delivery_ids)

    async def list_deliveries(self, tenant_id: str, message_id: str) -> list[Delivery]:
        return await self._deliveries.list_deliveries(tenant_id, message_id)

    async def recipient_deliveries(
        self, tenant_id: str, message_id: str, recipient_id: str
    ) -> list[Delivery]:
        return await self._deliveries.recipient_deliveries(tenant_id, message_id, recipient_id)

    async def transition(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        at: datetime,
        *,
        detail: str | None = None,
        reason: str | None = None,
        provider_id: str | None = None,
        segments: int | None = None,
        jobs: Sequence[Job] = (),
    ) -> bool:
        return await self._deliveries.transition(
            delivery_id,
            status,
            at,
            detail=detail,
            reason=reason,
            provider_id=provider_id,
            segments=segments,
            jobs=jobs,
        )

    async def note_attempt(self, delivery_id: str, at: datetime, detail: str) -> bool:
        return await self._deliveries.note_attempt(delivery_id, at, detail)

    # ProviderLookup
    async def delivery_by_provider_id(self, channel: str, provider_id: str) -> Delivery | None:
        return await self._deliveries.delivery_by_provider_id(channel, provider_id)

    async def latest_delivery_to(
        self, tenant_id: str, channel: str, address: str
    ) -> Delivery | None:
        return await self._deliveries.latest_delivery_to(tenant_id, channel, address)

    async def tenant_for_address(self, channel: str, address: str) -> str | None:
        return await self._deliveries.tenant_for_address(channel, address)

    # DeliveryReport
    async def history(self, delivery_ids: Sequence[str]) -> dict[str, list[StatusChange]]:
        return await self._deliveries.history(delivery_ids)

    async def count_by_status(self, tenant_id: str, message_id: str) -> dict[str, int]:
        return await self._deliveries.count_by_status(tenant_id, message_id)

    async def delivery_stats(self) -> dict[tuple[str, str], int]:
        return await self._deliveries.delivery_stats()

    # SendLedger
    async def finish_send(
        self,
        job_id: str,
        delivery_id: str,
        status: DeliveryStatus,
        at: datetime,
        *,
        detail: str | None = None,
        reason: str | None = None,
        provider_id: str | None = None,
        segments: int | None = None,
    ) -> bool:
        return await self._jobs.finish_send(
            job_id,
            delivery_id,
            status,
            at,
            detail=detail,
            reason=reason,
            provider_id=provider_id,
            segments=segments,
        )

    async def finish_sends(self, outcomes: Sequence[SendOutcome]) -> int:
        return await self._jobs.finish_sends(outcomes)

    # JobQueue
    async def claim_jobs(
        self,
        kinds: Sequence[str],
        limit: int,
        now: datetime,
        lease_seconds: float,
        *,
        normal_share: float = DEFAULT_NORMAL_SHARE,
    ) -> list[Job]:
        return await self._jobs.claim_jobs(
            kinds, limit, now, lease_seconds, normal_share=normal_share
        )

    async def finish_job(self, job_id: str) -> None:
        await self._jobs.finish_job(job_id)

    def hold_handed(self, jobs: Sequence[Job]) -> None:
        self._jobs.hold_handed(jobs)

    async def retry_job(self, job_id: str, due_at: datetime, error: str) -> None:
        await self._jobs.retry_job(job_id, due_at, error)

    async def postpone_job(self, job_id: str, due_at: datetime, reason: str) -> None:
        await self._jobs.postpone_job(job_id, due_at, reason)

    async def get_jobs(self, job_ids: Sequence[str]) -> dict[str, Job]:
        return await self._jobs.get_jobs(job_ids)

    async def queue_stats(self, now: datetime) -> dict[str, tuple[int, float]]:
        return await self._jobs.queue_stats(now)

    # InboxStore
    async def list_inbox(
        self,
        tenant_id: str,
        guardian_id: str,
        *,
        limit: int = 50,
        before: datetime | None = None,
        before_id: str | None = None,
        now: datetime | None = None,
    ) -> list[InboxItem]:
        return await self._inbox.list_inbox(
            tenant_id, guardian_id, limit=limit, before=before, before_id=before_id, now=now
        )

    async def inbox_item(
        self, tenant_id: str, guardian_id: str, message_id: str, *, now: datetime | None = None
    ) -> InboxItem | None:
        return await self._inbox.inbox_item(tenant_id, guardian_id, message_id, now=now)

    async def mark_read(
        self, tenant_id: str, guardian_id: str, message_id: str, at: datetime, via: str
    ) -> bool:
        return await self._inbox.mark_read(tenant_id, guardian_id, message_id, at, via)

    # ReachStore
    async def add_reached(self, rows: Sequence[Reached]) -> list[Reached]:
        return await self._tracking.add_reached(rows)

    async def list_reached(self, tenant_id: str, message_id: str) -> list[Reached]:
        return await self._tracking.list_reached(tenant_id, message_id)

    async def list_reads(self, tenant_id: str, message_id: str) -> list[ReadRecord]:
        return await self._tracking.list_reads(tenant_id, message_id)

    # ReplyStore
    async def add_reply(self, reply: Reply) -> bool:
        return await self._replies.add_reply(reply)

    async def list_replies(self, tenant_id: str, message_id: str) -> list[Reply]:
        return await self._replies.list_replies(tenant_id, message_id)

    # ChangeFeed
    async def append_change(
        self, tenant_id: str, event_type: str, data: dict[str, Any], at: datetime
    ) -> int | None:
        return await self._webhooks.append_change(tenant_id, event_type, data, at)

    # WebhookEndpoints
    async def create_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        await self._webhooks.create_webhook_endpoint(endpoint)

    async def list_webhook_endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        return await self._webhooks.list_webhook_endpoints(tenant_id)

    async def get_webhook_endpoint(
        self, tenant_id: str, endpoint_id: str
    ) -> WebhookEndpoint | None:
        return await self._webhooks.get_webhook_endpoint(tenant_id, endpoint_id)

    async def update_webhook_endpoint(self, endpoint: WebhookEndpoint) -> bool:
        return await self._webhooks.update_webhook_endpoint(endpoint)

    async def delete_webhook_endpoint(self, tenant_id: str, endpoint_id: str) -> bool:
        return await self._webhooks.delete_webhook_endpoint(tenant_id, endpoint_id)

    async def disable_webhook_endpoint(
        self, tenant_id: str, endpoint_id: str, reason: str, at: datetime
    ) -> int:
        return await self._webhooks.disable_webhook_endpoint(tenant_id, endpoint_id, reason, at)

    # WebhookOutbox
    async def changes_since(self, cursor: int, limit: int) -> tuple[list[Change], int]:
        return await self._webhooks.changes_since(cursor, limit)

    async def webhook_cursor(self) -> int:
        return await self._webhooks.webhook_cursor()

    async def enqueue_webhooks(
        self,
        cursor: int,
        next_cursor: int,
        messages: Sequence[WebhookMessage],
        jobs: Sequence[Job],
        fanout_job_id: str,
    ) -> bool:
        return await self._webhooks.enqueue_webhooks(
            cursor, next_cursor, messages, jobs, fanout_job_id
        )

    async def get_webhook_message(self, message_id: str) -> WebhookMessage | None:
        return await self._webhooks.get_webhook_message(message_id)

    async def list_webhook_messages(
        self,
        tenant_id: str,
        *,
        status: WebhookStatus | None = None,
        endpoint_id: str | None = None,
        limit: int = 100,
        before: datetime | None = None,
        before_id: str | None = None,
    ) -> list[WebhookMessage]:
        return await self._webhooks.list_webhook_messages(
            tenant_id,
            status=status,
            endpoint_id=endpoint_id,
            limit=limit,
            before=before,
            before_id=before_id,
        )

    async def webhook_attempts(self, message_id: str) -> list[WebhookAttempt]:
        return await self._webhooks.webhook_attempts(message_id)

    async def record_webhook_attempt(
        self,
        message_id: str,
        job_id: str,
        attempt: WebhookAttempt | None,
        status: WebhookStatus,
        *,
        next_attempt_at: datetime | None = None,
        reason: str | None = None,
        at: datetime,
    ) -> bool:
        return await self._webhooks.record_webhook_attempt(
            message_id,
            job_id,
            attempt,
            status,
            next_attempt_at=next_attempt_at,
            reason=reason,
            at=at,
        )

    async def replay_webhook_message(
        self, tenant_id: str, message_id: str, at: datetime
    ) -> WebhookMessage | None:
        return await self._webhooks.replay_webhook_message(tenant_id, message_id, at)

    # PolicyStore
    async def get_escalation_override(self, tenant_id: str) -> dict[str, Any] | None:
        return await self._policy.get_escalation_override(tenant_id)

    async def set_escalation_override(
        self, tenant_id: str, override: dict[str, Any] | None
    ) -> None:
        await self._policy.set_escalation_override(tenant_id, override)

    async def get_absence_settings(self, tenant_id: str) -> dict[str, Any] | None:
        return await self._policy.get_absence_settings(tenant_id)

    async def set_absence_settings(self, tenant_id: str, override: dict[str, Any] | None) -> None:
        await self._policy.set_absence_settings(tenant_id, override)

    # AbsenceStore
    async def claim_absence(
        self,
        record: AbsenceRecord,
        body_hash: str,
        window_start: datetime,
        *,
        unrouted: dict[str, Any] | None = None,
    ) -> AbsenceClaim:
        return await self._absence.claim_absence(record, body_hash, window_start, unrouted=unrouted)

    async def get_absence(self, tenant_id: str, message_id: str) -> AbsenceRecord | None:
        return await self._absence.get_absence(tenant_id, message_id)

    async def find_absence(
        self, tenant_id: str, *, event_id: str | None = None, key: str | None = None
    ) -> AbsenceRecord | None:
        return await self._absence.find_absence(tenant_id, event_id=event_id, key=key)

    async def cancel_absence(
        self, tenant_id: str, message_id: str, event_id: str, at: datetime
    ) -> AbsenceRecord | None:
        return await self._absence.cancel_absence(tenant_id, message_id, event_id, at)

    async def add_absence_explanation(
        self, explanation: AbsenceExplanation, *, change: dict[str, Any] | None = None
    ) -> bool:
        return await self._absence.add_absence_explanation(explanation, change=change)

    async def list_absence_explanations(
        self, tenant_id: str, message_id: str
    ) -> list[AbsenceExplanation]:
        return await self._absence.list_absence_explanations(tenant_id, message_id)

    async def absences_on(self, tenant_id: str, days: Sequence[str]) -> list[AbsenceRecord]:
        return await self._absence.absences_on(tenant_id, days)

    async def add_alert_phones(self, rows: Sequence[AlertPhone]) -> None:
        await self._alert_phones.add_alert_phones(rows)

    async def alert_phones(self, phone: str, since: datetime) -> list[AlertPhone]:
        return await self._alert_phones.alert_phones(phone, since)

    async def staff_members(
        self, tenant_id: str, *, group_ids: Sequence[str] = (), unit_ids: Sequence[str] = ()
    ) -> list[str]:
        return await self._directory.staff_members(
            tenant_id, group_ids=group_ids, unit_ids=unit_ids
        )

    # RateLimiter
    async def acquire_rate(
        self,
        key: str,
        rate_per_second: float,
        burst: int,
        now: datetime,
        *,
        max_wait: float | None = None,
    ) -> float:
        return await self._rates.acquire_rate(key, rate_per_second, burst, now, max_wait=max_wait)

    # StaffSessionStore
    async def use_signin_link(
        self, tenant_id: str, link_id: str, now: datetime, expires_at: datetime
    ) -> bool:
        return await self._staff_sessions.use_signin_link(tenant_id, link_id, now, expires_at)

    async def staff_session_generation(self, tenant_id: str, staff_id: str) -> str:
        return await self._staff_sessions.staff_session_generation(tenant_id, staff_id)

    async def end_staff_sessions(self, tenant_id: str, staff_id: str) -> str:
        return await self._staff_sessions.end_staff_sessions(tenant_id, staff_id)

    # RetentionStore
    async def purge_before(self, cutoff: datetime) -> int:
        return await self._retention.purge_before(cutoff)
