"""The backend-neutral store interface.

Everything above ``store/`` talks to a :class:`Store` and never knows which
backend runs. Backends: ``sqlite`` (embedded default) and, later, ``redis``.
One contract suite (``tests/contract/``) runs against each.

Rules every backend keeps:

* Every write method is atomic: it happens completely or not at all.
* Everything is scoped by ``tenant_id``; a read with the wrong tenant finds nothing.
* Ids of messages, deliveries and jobs are deterministic; inserting an id that
  exists already is a no-op (never an error, never a second row).
* Delivery status only moves forward (:func:`gateway.models.can_transition`);
  a refused transition returns False and changes nothing.
* Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.models import (
    Audience,
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
    RelationFlags,
    Reply,
    StatusChange,
    Tenant,
)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """One finished send for :meth:`Store.finish_sends`: a transition plus the end of its job."""

    job_id: str
    delivery_id: str
    status: DeliveryStatus
    at: datetime
    detail: str | None = None
    reason: str | None = None
    provider_id: str | None = None
    segments: int | None = None


@dataclass(frozen=True, slots=True)
class FlagHistoryEntry:
    """One change of a manual relation flag, kept for audit (who, when, what, why)."""

    flag: str  # "information_granted" or "blocked"
    value: bool
    reason: str
    actor: str
    at: datetime


class Store(Protocol):
    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Create the schema if missing and get ready."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers (for /readyz)."""

    # ------------------------------------------------------------------ tenants
    async def create_tenant(self, tenant: Tenant) -> None:
        """Insert a tenant; raises Conflict if the id exists."""

    async def tenant_by_key_hash(self, api_key_hash: str) -> Tenant | None: ...

    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def list_tenants(self) -> list[Tenant]: ...

    # ------------------------------------------------------------------ directory
    async def apply_directory(self, tenant_id: str, batch: DirectoryBatch) -> dict[str, int]:
        """Upsert all rows of the batch in one transaction; return counts per kind.

        Manual relation flags are never changed here. Preferences in a batch
        only apply to guardians who have not set their own in the app.
        Upserting a person replaces its unit and group memberships. A relation's
        child must have role child or learner and its guardian role guardian.
        Referential errors (a group of an unknown unit, a relation to an
        unknown person, a person in an unknown group) raise ValidationFailed
        naming the row (``loc`` like ``["relations", 3, "guardian_id"]``) and
        write nothing. Ids may refer to rows in the same batch.
        """

    async def delete_directory(self, tenant_id: str, deletion: DirectoryDeletion) -> dict[str, int]:
        """Delete rows by id in one transaction; return counts actually deleted.

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

    # ------------------------------------------------------------------ guardian self-service
    async def set_preferences(self, tenant_id: str, guardian_id: str, prefs: Preferences) -> None:
        """Preferences set by the guardian in the app; an import never overwrites them."""

    async def get_preferences(self, tenant_id: str, guardian_id: str) -> Preferences | None: ...

    async def upsert_device(self, tenant_id: str, guardian_id: str, device: Device) -> None:
        """Insert or replace a device by id. A token or fid belongs to one device: any
        other device row of the tenant with the same token or fid is removed, so a
        handed-on phone never receives the previous owner's messages."""

    async def remove_device(self, tenant_id: str, guardian_id: str, device_id: str) -> bool: ...

    async def list_devices(self, tenant_id: str, guardian_id: str) -> list[Device]: ...

    # ------------------------------------------------------------------ events and messages
    async def accept_message(self, message: Message, job: Job) -> Message:
        """Store a new message and its planning job in one transaction.

        If a message with this id exists already, store nothing and return the
        stored one (the caller compares ``body_hash`` for 409).
        """

    async def get_message(self, tenant_id: str, message_id: str) -> Message | None: ...

    async def mark_planned(self, tenant_id: str, message_id: str, at: datetime) -> None: ...

    # ------------------------------------------------------------------ deliveries
    async def add_deliveries(self, deliveries: Sequence[Delivery], jobs: Sequence[Job]) -> int:
        """Insert deliveries (existing ids are left untouched) and their jobs in one
        transaction; return how many deliveries were new. A job whose id exists is
        left untouched too. A status history row is written for each new delivery."""

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def get_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, Delivery]:
        """The deliveries of these ids that exist, by id (one round trip for a batch)."""

    async def list_deliveries(self, tenant_id: str, message_id: str) -> list[Delivery]: ...

    async def history(self, delivery_ids: Sequence[str]) -> dict[str, list[StatusChange]]:
        """Status history per delivery, oldest first."""

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
    ) -> bool:
        """Move a delivery forward (see can_transition) and append history.

        Returns False, changing nothing, if the move is not forward. The
        optional fields are stored on the delivery when given, even if the
        status does not move (e.g. a provider id arriving with a late receipt);
        ``reason`` only with a move, since it explains the current status, and
        ``detail`` goes to the history row only.
        """

    async def delivery_by_provider_id(self, channel: str, provider_id: str) -> Delivery | None: ...

    async def count_by_status(self, tenant_id: str, message_id: str) -> dict[str, int]: ...

    async def delivery_stats(self) -> dict[tuple[str, str], int]:
        """(channel, status) -> count over all tenants, for /metrics."""

    async def latest_delivery_to(
        self, tenant_id: str, channel: str, address: str
    ) -> Delivery | None:
        """The most recent delivery on this channel to this address (for linking replies)."""

    async def tenant_for_address(self, channel: str, address: str) -> str | None:
        """The tenant of the most recent delivery to this address on this channel."""

    async def mark_contact_failing(
        self, tenant_id: str, person_id: str, kind: str, address: str, code: str, at: datetime
    ) -> None:
        """Mark a person's contact point (kind "email" or "phone", at this address) as
        failing. The planner skips it while the person's current address is that one;
        a re-import with another address clears it by itself."""

    # ------------------------------------------------------------------ replies
    async def add_reply(self, reply: Reply) -> bool:
        """Store an inbound reply; False if its id exists already."""

    async def list_replies(self, tenant_id: str, message_id: str) -> list[Reply]: ...

    # ------------------------------------------------------------------ inbox (in-app)
    async def list_inbox(
        self,
        tenant_id: str,
        guardian_id: str,
        *,
        limit: int = 50,
        before: datetime | None = None,
        now: datetime | None = None,
    ) -> list[InboxItem]:
        """The in-app deliveries of this recipient (not suppressed or cancelled, not
        deferred past ``now``), newest message first, joined with their message.
        ``before`` pages by the message's ``created_at``; ``now`` defaults to the
        system clock."""

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

    # ------------------------------------------------------------------ work queue
    async def claim_jobs(
        self, kinds: Sequence[str], limit: int, now: datetime, lease_seconds: float
    ) -> list[Job]:
        """Lease up to ``limit`` due jobs of these kinds, oldest due first.

        A job is due when ``due_at <= now`` and it has no lease or its lease
        ended. Claiming sets the lease to now + lease_seconds and increments
        ``attempts``. Two concurrent claimers never get the same job.
        """

    async def finish_job(self, job_id: str) -> None:
        """The job is done: remove it."""

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
        one delivery behave as two calls."""

    async def retry_job(self, job_id: str, due_at: datetime, error: str) -> None:
        """Release the lease and make the job due again at ``due_at`` (``attempts`` is kept)."""

    async def queue_stats(self, now: datetime) -> dict[str, tuple[int, float]]:
        """kind -> (jobs waiting, age in seconds of the oldest due job).

        Waiting = not leased right now (due or deferred); the age is 0.0 when no
        waiting job is due yet."""


def open_store(url: str) -> Store:
    """The backend for a store URL (``sqlite:///path`` or ``redis://...``)."""
    if url.startswith("sqlite:"):
        from gateway.store.sqlite import SqliteStore

        path = url.removeprefix("sqlite:///").removeprefix("sqlite://") or "budbringer.db"
        return SqliteStore(path)
    raise ValueError("unsupported store URL scheme")
