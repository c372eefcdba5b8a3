"""Values the store ports take or give that are not domain models (gateway/models.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.models import DeliveryStatus, Job

# The last error of a job a claim took over because the lease of the claim before had
# ended (its worker stopped or stalled): that worker may have done it already.
LEASE_ENDED = "lease_ended"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """One finished send for :meth:`SendLedger.finish_sends`: a transition plus the end
    of its job."""

    job_id: str
    delivery_id: str
    status: DeliveryStatus
    at: datetime
    detail: str | None = None
    reason: str | None = None
    provider_id: str | None = None
    segments: int | None = None
    # Follow-ups the outcome causes (gateway/followups.py), stored with it.
    jobs: tuple[Job, ...] = ()


@dataclass(frozen=True, slots=True)
class FlagHistoryEntry:
    """One change of a manual relation flag, kept for audit (who, when, what, why)."""

    flag: str  # "information_granted" or "blocked"
    value: bool
    reason: str
    actor: str
    at: datetime
