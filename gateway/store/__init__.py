"""The backend-neutral store interface.

Everything above ``store/`` talks to the ports it needs (:mod:`gateway.store.ports`)
and never knows which backend runs; :class:`Store`, the union of the ports, is for
wiring only. Backends: ``sqlite`` (embedded default) and, later, ``redis``.
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

from typing import Protocol

from gateway.store.ports import (
    AbsenceStore,
    AttachmentFiles,
    AudienceReader,
    ChangeFeed,
    DeliveryReport,
    DeliveryStore,
    DigestFiles,
    DirectoryStore,
    GuardianStore,
    InboxStore,
    JobQueue,
    KeyStore,
    Lifecycle,
    MessageStore,
    PolicyStore,
    ProviderLookup,
    RateLimiter,
    ReachStore,
    ReplyStore,
    RetentionStore,
    ScheduleFiles,
    SendLedger,
    StaffSessionStore,
    TenantStore,
    Translations,
    WebhookEndpoints,
    WebhookOutbox,
)
from gateway.store.records import LEASE_ENDED, FlagHistoryEntry, SendOutcome

__all__ = ["LEASE_ENDED", "FlagHistoryEntry", "SendOutcome", "Store"]


class Store(
    Lifecycle,
    TenantStore,
    KeyStore,
    AudienceReader,
    DirectoryStore,
    GuardianStore,
    MessageStore,
    DeliveryStore,
    ProviderLookup,
    DeliveryReport,
    SendLedger,
    JobQueue,
    InboxStore,
    ReachStore,
    ReplyStore,
    ChangeFeed,
    WebhookEndpoints,
    WebhookOutbox,
    PolicyStore,
    AbsenceStore,
    RateLimiter,
    StaffSessionStore,
    RetentionStore,
    AttachmentFiles,
    ScheduleFiles,
    DigestFiles,
    Translations,
    Protocol,
):
    """Every port at once: what a backend implements and what the service wires. Flow
    code takes the ports it uses instead (gateway/store/ports.py)."""
