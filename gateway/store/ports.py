"""The store's ports: one small Protocol per kind of consumer.

A flow module is typed by the ports it uses (the dispatcher needs a job queue,
deliveries and messages, not the whole store); :class:`gateway.store.Store` is
their union and is only for wiring (the service, the CLI, tests). Each backend
implements every port; the contract suite (``tests/contract/``) has a file per
port and runs each on SQLite, Redis and Redis Cluster. docs/architecture.md
lists the ports with their methods and their consumers.

The rules every backend keeps are in the docstring of :mod:`gateway.store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

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
from gateway.store.attachments import AttachmentStore
from gateway.store.digests import Digests
from gateway.store.directory_apply import CHUNK_ROWS, ChunkHook
from gateway.store.lanes import DEFAULT_NORMAL_SHARE
from gateway.store.records import FlagHistoryEntry, SendOutcome
from gateway.store.schedules import Schedules
from gateway.store.translations import TranslationStore


class Lifecycle(Protocol):
    """Open, close and health of the backend (the service and ``/readyz``)."""

    async def open(self) -> None:
        """Create the schema if missing and get ready."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers (for /readyz)."""


class TenantStore(Protocol):
    """Tenants and the legacy tenant-wide scopes (auth, CLI)."""

    async def create_tenant(self, tenant: Tenant, first_key: ApiKey | None = None) -> None:
        """Insert a tenant and the key row of ``tenant.api_key_hash`` (``first_key``, else
        ``first_api_key(tenant)``); raises Conflict if the id or the key exists."""

    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def list_tenants(self) -> list[Tenant]: ...

    async def get_tenant_scopes(self, tenant_id: str) -> list[str]:
        """Legacy: the scopes of a tenant's single key from before keys had their own
        (read once, when the store gives that key its row); ``["staff"]`` unless set."""

    async def set_tenant_scopes(self, tenant_id: str, scopes: Sequence[str]) -> None:
        """Legacy: replace the tenant-wide scopes (deduplicated, sorted)."""


class KeyStore(Protocol):
    """API keys: several per tenant, each with scopes; only hashes are stored."""

    async def add_api_key(self, key: ApiKey) -> None:
        """Insert a key; raises Conflict if its id or hash exists."""

    async def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this sha256, whatever its tenant, revoked or expired included."""

    async def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        """The tenant's keys, oldest first, revoked and expired ones included."""

    async def revoke_api_key(self, tenant_id: str, key_id: str, at: datetime) -> ApiKey | None:
        """Revoke this tenant's key (a second revocation keeps the first time); the key as
        it is now, or None if the tenant has no key with this id."""


class AudienceReader(Protocol):
    """The directory's small read port: who a message may reach (planning, rechecks,
    withdrawal, pseudonyms)."""

    async def get_person(self, tenant_id: str, person_id: str) -> Person | None: ...

    async def missing_ids(self, tenant_id: str, audience: Audience) -> list[tuple[str, str]]:
        """The (kind, id) pairs of the audience that do not exist; kind is the Audience field.

        A person listed with the wrong role (a guardian under ``children``) counts
        as missing: children are persons with role child or learner, guardians
        role guardian, staff role staff."""

    async def load_audience(self, tenant_id: str, audience: Audience) -> DirectorySnapshot:
        """Everything the resolver needs for this audience.

        ``audience_children``: children and learners listed, in the listed
        groups, or in the listed units (deduplicated, sorted). ``persons``:
        those children, every person related to them, the listed guardians and
        staff. ``relations``: all relations of those children and of the
        listed guardians, with flags. ``preferences`` and ``devices`` for every
        guardian in ``persons``. ``units``/``groups``: those the persons belong to.
        """

    async def protected_persons(self, tenant_id: str, person_ids: Sequence[str]) -> set[str]:
        """Those of ``person_ids`` with a protected address (protection other than none)."""


class DirectoryStore(Protocol):
    """The directory's writes and their audit (the directory API, imports)."""

    async def apply_directory(
        self,
        tenant_id: str,
        batch: DirectoryBatch,
        at: datetime | None = None,
        *,
        chunk_rows: int = CHUNK_ROWS,
        on_chunk: ChunkHook | None = None,
    ) -> dict[str, int]:
        """Upsert all rows of the batch; return counts per kind.

        The whole batch is checked first, then written in transactions of at most
        ``chunk_rows`` rows in dependency order, under the tenant's directory lock
        (:mod:`gateway.store.directory_apply`: every committed prefix is consistent;
        ``on_chunk`` is awaited after each chunk). Manual relation flags are never
        changed here. Each person is merged with the
        stored one by :func:`gateway.protection.merge_imported` in the same transaction:
        protection only goes up (a raise is written to the protection history at
        ``at``, default now), an absent language or consent_guardians keeps the stored
        value. Preferences in a batch
        only apply to guardians who have not set their own in the app.
        Upserting a person replaces its unit and group memberships. A relation's
        child must have role child or learner and its guardian role guardian.
        Referential errors (a group of an unknown unit, a relation to an
        unknown person, a person in an unknown group) raise ValidationFailed
        naming the row (``loc`` like ``["relations", 3, "guardian_id"]``) and
        write nothing. Ids may refer to rows in the same batch.
        """

    async def delete_directory(self, tenant_id: str, deletion: DirectoryDeletion) -> dict[str, int]:
        """Delete rows by id in one transaction (under the tenant's directory lock);
        return counts actually deleted.

        Deleting a person removes their relations, memberships, devices and
        preferences too. Unknown ids raise ValidationFailed and delete nothing.
        """

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
        """Set one manual flag (with its reason, who and when) and keep a history row.

        Flags live apart from the imported relation: they exist even before the
        relation is imported and survive every re-import and a deletion of the
        relation. Revoking (value False) keeps the reason of the revocation.
        Raises NotFound if either person is unknown.
        """

    async def flag_history(
        self, tenant_id: str, child_id: str, guardian_id: str
    ) -> list[FlagHistoryEntry]:
        """Every change of the manual flags of this relation, oldest first."""

    async def set_protection(
        self,
        tenant_id: str,
        person_id: str,
        level: Protection,
        reason: str,
        actor: str,
        at: datetime,
    ) -> ProtectionHistoryEntry:
        """Set a person's protection level (the only way to lower it) and keep a history
        row with reason, actor and the previous level. Raises NotFound for an unknown
        person."""

    async def protection_history(
        self, tenant_id: str, person_id: str
    ) -> list[ProtectionHistoryEntry]:
        """Every change of this person's protection level, oldest first (explicit calls
        and raises by imports)."""


class GuardianStore(Protocol):
    """A person's contact settings: a guardian's own preferences and devices (guardian API,
    parent pages), and contact points found failing (gateway/followups.py)."""

    async def set_preferences(self, tenant_id: str, guardian_id: str, prefs: Preferences) -> None:
        """Preferences set by the guardian in the app; an import never overwrites them."""

    async def get_preferences(self, tenant_id: str, guardian_id: str) -> Preferences | None: ...

    async def upsert_device(self, tenant_id: str, guardian_id: str, device: Device) -> None:
        """Insert or replace a device by id. A token or fid belongs to one device: any
        other device row of the tenant with the same token or fid is removed, so a
        handed-on phone never receives the previous owner's messages."""

    async def remove_device(self, tenant_id: str, guardian_id: str, device_id: str) -> bool: ...

    async def list_devices(self, tenant_id: str, guardian_id: str) -> list[Device]: ...

    async def mark_contact_failing(
        self, tenant_id: str, person_id: str, kind: str, address: str, code: str, at: datetime
    ) -> None:
        """Mark a person's contact point (kind "email" or "phone", at this address) as
        failing. The planner skips it while the person's current address is that one;
        a re-import with another address clears it by itself."""


class MessageStore(Protocol):
    """Accepted messages (events API, planning)."""

    async def accept_message(self, message: Message, job: Job) -> Message:
        """Store a new message and its planning job in one transaction; return
        ``message`` itself (the same object) when it was stored now with ``job`` as
        given (only then may the caller hand ``job`` over, gateway/urgent_handoff.py).
        Redis stores the two in two steps: a repost in between may queue the job first;
        unless it is ``job`` as given (stored as claimed, due when the caller's lease
        ends), the caller then gets an equal copy of ``message``.

        If a message with this id exists already, store nothing and return the
        stored one (the caller compares ``body_hash`` for 409).
        """

    async def get_message(self, tenant_id: str, message_id: str) -> Message | None: ...

    async def list_messages(
        self,
        tenant_id: str,
        *,
        limit: int = 50,
        before: datetime | None = None,
        before_id: str | None = None,
    ) -> list[Message]:
        """The tenant's messages, newest first (``created_at``, then id, descending).
        With ``before`` and ``before_id`` (the last message of a page) only those after
        it in that order; with ``before`` alone, those created before it."""

    async def mark_planned(self, tenant_id: str, message_id: str, at: datetime) -> None: ...


class DeliveryStore(Protocol):
    """Deliveries and their forward-only status (dispatcher, tracker, escalation); with
    no deliveries, ``add_deliveries`` also queues jobs of any kind."""

    async def add_deliveries(self, deliveries: Sequence[Delivery], jobs: Sequence[Job]) -> int:
        """Insert deliveries (existing ids are left untouched) and their jobs in one
        transaction; return how many deliveries were new. A job whose id exists is
        left untouched too. A status history row is written for each new delivery."""

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def get_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, Delivery]:
        """The deliveries of these ids that exist, by id (one round trip for a batch)."""

    async def list_deliveries(self, tenant_id: str, message_id: str) -> list[Delivery]: ...

    async def recipient_deliveries(
        self, tenant_id: str, message_id: str, recipient_id: str
    ) -> list[Delivery]:
        """Every delivery of one message to one recipient (suppression records included),
        ordered by channel and target: what a read or an escalation looks at."""

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
        """Move a delivery forward (see can_transition) and append history.

        Returns False, changing nothing, if the move is not forward. The
        optional fields are stored on the delivery when given, even if the
        status does not move (e.g. a provider id arriving with a late receipt);
        ``reason`` only with a move, since it explains the current status, and
        ``detail`` goes to the history row only.

        ``jobs`` (follow-ups of the move: gateway/followups.py) are stored with it, moved
        or not (existing ids are left untouched): SQLite in the same transaction; Redis in
        the same round trip, queued before the move and due at the earliest
        ``FOLLOWUP_GRACE`` seconds after their ``due_at``, so a crash never leaves a move
        without its follow-ups and a follow-up never runs before its move.
        """

    async def note_attempt(self, delivery_id: str, at: datetime, detail: str) -> bool:
        """Append a history row for a failed attempt of a send being retried: the status
        stays ``sending``, ``detail`` says which attempt, why and when the next one is.
        False, writing nothing, if the delivery is unknown or not ``sending``."""


class ProviderLookup(Protocol):
    """The delivery an inbound callback or reply is about (tracker, provider callbacks).
    Only the channels in :data:`gateway.constants.LOOKUP_CHANNELS` are looked up (SMS):
    any other channel's provider id or address is None."""

    async def delivery_by_provider_id(self, channel: str, provider_id: str) -> Delivery | None: ...

    async def latest_delivery_to(
        self, tenant_id: str, channel: str, address: str
    ) -> Delivery | None:
        """The most recent delivery on this channel to this address (for linking replies)."""

    async def tenant_for_address(self, channel: str, address: str) -> str | None:
        """The tenant of the most recent delivery to this address on this channel."""


class DeliveryReport(Protocol):
    """Counts and histories of deliveries (status API, metrics)."""

    async def history(self, delivery_ids: Sequence[str]) -> dict[str, list[StatusChange]]:
        """Status history per delivery, oldest first."""

    async def count_by_status(self, tenant_id: str, message_id: str) -> dict[str, int]: ...

    async def delivery_stats(self) -> dict[tuple[str, str], int]:
        """(channel, status) -> count over all tenants, for /metrics."""


class SendLedger(Protocol):
    """A finished send and the end of its job in one write (the dispatcher's hot path)."""

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
        """``transition`` and ``finish_job`` in one transaction (the hot path).

        The job is removed even if the transition is refused."""

    async def finish_sends(self, outcomes: Sequence[SendOutcome]) -> int:
        """Many ``finish_send`` in one transaction (the dispatcher batches commits under
        load); return how many deliveries moved. Outcomes apply in order, so two for
        one delivery behave as two calls. Each outcome's ``jobs`` are stored with it, as
        :meth:`transition` stores its ``jobs``."""


class JobQueue(Protocol):
    """The durable work queue every worker claims from."""

    async def claim_jobs(
        self,
        kinds: Sequence[str],
        limit: int,
        now: datetime,
        lease_seconds: float,
        *,
        normal_share: float = DEFAULT_NORMAL_SHARE,
    ) -> list[Job]:
        """Lease up to ``limit`` due jobs of these kinds, urgent lane first, oldest due
        first in each lane; ``normal_share`` of the claim is kept for the normal lane
        (split by :func:`gateway.store.lanes.split`). Urgent jobs come first in the list.

        A job is due when ``due_at <= now`` and it has no lease or its lease
        ended. Claiming sets the lease to now + lease_seconds and increments
        ``attempts``. Two concurrent claimers never get the same job. A job taken over
        because the lease of the claim before ended (its worker stopped or stalled, and
        may have done it) comes with ``last_error`` :data:`~gateway.store.records.LEASE_ENDED`.
        """

    def hold_handed(self, jobs: Sequence[Job]) -> None:
        """Jobs this process just stored as claimed by itself (handed over past the queue,
        gateway/urgent_handoff.py: first attempt counted, due when their lease ends). Its
        retry or give-back of such a job applies only while no claim has taken the job
        since, as for a job it claimed (docs/redis.md, "A live worker's lease can run
        out")."""

    async def finish_job(self, job_id: str) -> None:
        """The job is done: remove it."""

    async def retry_job(self, job_id: str, due_at: datetime, error: str) -> None:
        """Release the lease and make the job due again at ``due_at`` (``attempts`` is kept)."""

    async def postpone_job(self, job_id: str, due_at: datetime, reason: str) -> None:
        """Like :meth:`retry_job`, but the claim that led here does not count: ``attempts``
        goes back down by one. For work put off without trying it (quiet hours, a stopped
        channel), so a long wait never uses up the attempts of real sends."""

    async def get_jobs(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """id -> job (``due_at``, ``attempts``, ``last_error`` as stored now) for the ids
        that exist; for the status API's ``waiting_for``."""

    async def queue_stats(self, now: datetime) -> dict[str, tuple[int, float]]:
        """kind -> (jobs waiting, age in seconds of the oldest due job).

        Waiting = not leased right now (due or deferred); the age is 0.0 when no
        waiting job is due yet."""


class InboxStore(Protocol):
    """The in-app inbox and reads."""

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
        """The in-app deliveries of this recipient (not suppressed or cancelled, not
        deferred past ``now``), newest message first (by the message's ``created_at``,
        then its id, both descending), joined with their message. Paging is by that key:
        with ``before`` and ``before_id`` (the last item's message) only items after it
        in that order; with ``before`` alone, messages created before it. ``now``
        defaults to the system clock."""

    async def inbox_item(
        self, tenant_id: str, guardian_id: str, message_id: str, *, now: datetime | None = None
    ) -> InboxItem | None:
        """One item of the inbox, with the same rules as :meth:`list_inbox`."""

    async def mark_read(
        self, tenant_id: str, guardian_id: str, message_id: str, at: datetime, via: str
    ) -> bool:
        """Record that this recipient read this message (via "inapp", "link", ...):
        a row in reads (first read kept) and the in-app delivery moved to read.
        False if the recipient has no delivery of that message (suppressed and
        cancelled ones do not count)."""


class ReachStore(Protocol):
    """Reached subjects and the reads they come from (tracker, escalation, status)."""

    async def add_reached(self, rows: Sequence[Reached]) -> list[Reached]:
        """Record subjects reached for the first time; return the rows that were new.

        A subject is (tenant, message, subject_kind, subject_id): the first row kept is
        never replaced, so a later read by someone else changes nothing. Each new row
        records a ``message.reached`` change (data: :func:`gateway.models.reached_data`)
        in the same transaction, as :meth:`append_change` would."""

    async def list_reached(self, tenant_id: str, message_id: str) -> list[Reached]:
        """The reached rows of a message in the order they were recorded."""

    async def list_reads(self, tenant_id: str, message_id: str) -> list[ReadRecord]:
        """The first read of each recipient of a message (rows of :meth:`mark_read`),
        oldest first."""


class ReplyStore(Protocol):
    """Inbound replies."""

    async def add_reply(self, reply: Reply) -> bool:
        """Store an inbound reply; False if its id exists already."""

    async def list_replies(self, tenant_id: str, message_id: str) -> list[Reply]: ...


class ChangeFeed(Protocol):
    """Events no table records by itself, into the webhook feed."""

    async def append_change(
        self, tenant_id: str, event_type: str, data: dict[str, Any], at: datetime
    ) -> int | None:
        """Add an event no table records by itself (e.g. ``message.reached``) to the feed
        and make sure the fan-out job exists; return its seq. None, recording nothing,
        when the tenant has no enabled endpoint."""


class WebhookEndpoints(Protocol):
    """The tenant's webhook endpoints."""

    async def create_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        """Insert an endpoint. From then on, while the tenant has an enabled endpoint, its
        changes enter the feed (see :meth:`changes_since`)."""

    async def list_webhook_endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        """The tenant's endpoints, oldest first, secrets included (callers hide them)."""

    async def get_webhook_endpoint(
        self, tenant_id: str, endpoint_id: str
    ) -> WebhookEndpoint | None: ...

    async def update_webhook_endpoint(self, endpoint: WebhookEndpoint) -> bool:
        """Replace the stored endpoint of this tenant and id; False if there is none."""

    async def delete_webhook_endpoint(self, tenant_id: str, endpoint_id: str) -> bool:
        """Delete an endpoint with its outbox messages, their attempts and send jobs."""

    async def disable_webhook_endpoint(
        self, tenant_id: str, endpoint_id: str, reason: str, at: datetime
    ) -> int:
        """Disable an endpoint (``disabled_reason`` = reason) and fail its pending messages
        with that reason, removing their send jobs; return how many were failed."""


class WebhookOutbox(Protocol):
    """The change feed's fan-out and the outbox of webhook messages."""

    async def changes_since(self, cursor: int, limit: int) -> tuple[list[Change], int]:
        """Up to ``limit`` changes with ``seq > cursor`` in commit order, and the cursor to
        pass next (the last seq returned, or ``cursor`` when there are none).

        Only tenants with an enabled endpoint at the time of the change are recorded.
        A change is ``delivery.updated`` (a new status history row, except the internal
        steps planned/queued/sending; data: message_id, delivery_id, recipient_id, channel,
        status, reason, at), ``message.read`` (a new read; message_id, recipient_id, via,
        at), ``reply.received`` (a new reply; reply_id, message_id, recipient_id, channel,
        body, received_at) or whatever :meth:`append_change` added. Times in ``data`` are
        ISO 8601 strings. Recording a change also makes sure the fan-out job
        (``webhook_fanout``, tenant "") exists, due at the change's time."""

    async def webhook_cursor(self) -> int:
        """The fan-out's position in the feed (0 before the first fan-out)."""

    async def enqueue_webhooks(
        self,
        cursor: int,
        next_cursor: int,
        messages: Sequence[WebhookMessage],
        jobs: Sequence[Job],
        fanout_job_id: str,
    ) -> bool:
        """One fan-out step, atomically: if the stored cursor is still ``cursor``, insert the
        messages and their jobs (existing ids are left untouched), move the cursor to
        ``next_cursor`` and forget the feed up to it. A message's send job has the id
        ``webhook_send:<message id>``. The fan-out job is removed when the
        feed holds nothing after the cursor. Returns True when the fan-out should run
        again (more changes, or the cursor had moved and nothing was written)."""

    async def get_webhook_message(self, message_id: str) -> WebhookMessage | None: ...

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
        """The tenant's outbox, newest first (``created_at``, then id, both descending).
        Paging is by that key: with ``before`` and ``before_id`` (the last message seen)
        only messages after it in that order; with ``before`` alone, those created
        before it (many share one ``created_at``: page with both)."""

    async def webhook_attempts(self, message_id: str) -> list[WebhookAttempt]:
        """Every attempt of a message, oldest first (replays keep the earlier ones)."""

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
        """The outcome of one send, atomically: append the attempt (if any), count it, and
        move the message to ``status``: pending = the job becomes due at
        ``next_attempt_at``; delivered or failed = the job is removed. Only a pending
        message changes; False (nothing written) otherwise."""

    async def replay_webhook_message(
        self, tenant_id: str, message_id: str, at: datetime
    ) -> WebhookMessage | None:
        """A failed message back to pending, due at ``at``, attempts counted from zero,
        with its send job; same id. None if unknown; Conflict if it is not failed."""


class PolicyStore(Protocol):
    """Per-tenant overrides of escalation and absence settings."""

    async def get_escalation_override(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's escalation override as stored (a partial EscalationSettings), or None."""

    async def set_escalation_override(
        self, tenant_id: str, override: dict[str, Any] | None
    ) -> None:
        """Replace the tenant's escalation override; None removes it."""

    async def get_absence_settings(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's override of AbsenceSettings as stored, or None."""

    async def set_absence_settings(self, tenant_id: str, override: dict[str, Any] | None) -> None:
        """Replace the tenant's absence settings override; None removes it."""


class AbsenceStore(Protocol):
    """Absence alerts and reports (gateway/absence.py): records, de-duplication of
    repeated marks, guardians' explanations, records by day, alert phones, staff
    lookups."""

    async def claim_absence(
        self,
        record: AbsenceRecord,
        body_hash: str,
        window_start: datetime,
        *,
        unrouted: dict[str, Any] | None = None,
    ) -> AbsenceClaim:
        """Claim ``record.event_id`` for an absence, atomically (two racing marks never
        make two alerts).

        * The event id was claimed before: change nothing; ``known``, with the record it
          went into and the body hash stored then.
        * ``record.key`` is not "" and a record with that key, not cancelled, was created at
          or after ``window_start``: fold the event into it (``data`` replaced by
          ``record.data``, the event id appended to ``marks``, ``updated_at`` set);
          ``merged``, with that record.
        * Otherwise store ``record`` (it becomes the key's latest record); ``new``. With
          ``unrouted``, a new record records an ``absence.unrouted`` change with that data
          in the same transaction, as :meth:`append_change` would.
        """

    async def get_absence(self, tenant_id: str, message_id: str) -> AbsenceRecord | None: ...

    async def find_absence(
        self, tenant_id: str, *, event_id: str | None = None, key: str | None = None
    ) -> AbsenceRecord | None:
        """The record an event id was claimed into, or the latest record of a key."""

    async def cancel_absence(
        self, tenant_id: str, message_id: str, event_id: str, at: datetime
    ) -> AbsenceRecord | None:
        """Mark a record cancelled by ``event_id`` (the first cancellation is kept) and
        return it; None if there is no such record. From then on
        ``find_absence(event_id=event_id)`` finds the record too."""

    async def add_absence_explanation(
        self, explanation: AbsenceExplanation, *, change: dict[str, Any] | None = None
    ) -> bool:
        """Store a guardian's explanation; False if its id exists already. With ``change``,
        a new explanation records an ``absence.explained`` change with that data in the
        same transaction, as :meth:`append_change` would."""

    async def list_absence_explanations(
        self, tenant_id: str, message_id: str
    ) -> list[AbsenceExplanation]:
        """The explanations of one alert, oldest first."""

    async def absences_on(self, tenant_id: str, days: Sequence[str]) -> list[AbsenceRecord]:
        """The records whose days (:meth:`AbsenceRecord.days`) include any of ``days``
        (ISO dates), cancelled ones too, each once, newest first: a day's absence
        whenever it was reported, without reading other days' records."""

    async def add_alert_phones(self, rows: Sequence[AlertPhone]) -> None:
        """Remember the phone numbers of an alert's recipients (a row again is kept once);
        rows older than two days are dropped on the way."""

    async def alert_phones(self, phone: str, since: datetime) -> list[AlertPhone]:
        """The alerts of every tenant whose recipients have this number, from ``since`` on,
        oldest first."""

    async def staff_members(
        self, tenant_id: str, *, group_ids: Sequence[str] = (), unit_ids: Sequence[str] = ()
    ) -> list[str]:
        """Ids of the persons with role staff who belong to any of these groups or units,
        sorted."""


class RateLimiter(Protocol):
    """Deployment-wide rate limits."""

    async def acquire_rate(
        self,
        key: str,
        rate_per_second: float,
        burst: int,
        now: datetime,
        *,
        max_wait: float | None = None,
    ) -> float:
        """Take the next slot of the limit ``key`` (GCRA: ``rate_per_second`` on average,
        up to ``burst`` at once) and return the seconds to wait before using it (0.0: go
        now). One limit for the whole deployment: every process shares it. If the wait
        would exceed ``max_wait``, take nothing and return that wait."""


class StaffSessionStore(Protocol):
    """What a signature cannot take back (the staff pages, gateway/api/staff_pages.py):
    sign-in links used once, and sessions ended by a sign-out."""

    async def use_signin_link(
        self, tenant_id: str, link_id: str, now: datetime, expires_at: datetime
    ) -> bool:
        """Record the sign-in link ``link_id`` as used until ``expires_at``: True the
        first time, False for every later use before then, by any process; of two uses
        at once exactly one gets True. The record goes once ``expires_at`` has passed
        (by ``now``; the link is refused as expired then), so used links do not pile up."""

    async def staff_session_generation(self, tenant_id: str, staff_id: str) -> str:
        """The staff member's session generation: "" until their first sign-out."""

    async def end_staff_sessions(self, tenant_id: str, staff_id: str) -> str:
        """Give the staff member a new session generation (random, never ""), ending
        every session made with an earlier one; return it."""


class RetentionStore(Protocol):
    """Removal of what is older than the retention period."""

    async def purge_before(self, cutoff: datetime) -> int:
        """Remove messages created before ``cutoff`` with their deliveries, status history,
        reads and replies, and replies received before it; absence records created before
        it with their claimed event ids and explanations; finished (delivered or failed)
        webhook outbox messages created before it with their attempts (pending ones stay
        until they finish). Return how many deliveries were removed."""


class Translations(Protocol):
    @property
    def translations(self) -> TranslationStore:
        """A message's subject and body per language (gateway/store/translations.py)."""


class AttachmentFiles(Protocol):
    @property
    def attachments(self) -> AttachmentStore:
        """Uploads and the messages that took them (gateway/store/attachments.py)."""


class ScheduleFiles(Protocol):
    @property
    def schedules(self) -> Schedules:
        """Scheduled messages: send_at and cancels (gateway/store/schedules.py)."""


class DigestFiles(Protocol):
    @property
    def digests(self) -> Digests:
        """The daily digest's entries (gateway/store/digests.py)."""
