"""Who an accepted message will reach, said at once in the 202 (issue 10).

A message whose audience resolves to nobody used to be accepted in silence: a school
nurse would believe a ``confidential`` message to a child id was sent while the rules
(confidential content only to persons named by id) told nobody. The intake now
resolves the audience once, the same way the planner will
(:func:`gateway.resolver.resolve` on the same snapshot):

* every 202 of ``message.created`` says ``"recipients": N`` and ``"suppressed"``
  (reason code -> how many persons/children were left out for it), so a sender sees
  ``"recipients": 0`` at once;
* a ``confidential`` message that would reach nobody is refused with 422 naming the
  reasons, unless the event says ``"allow_no_recipients": true``.

The numbers are a preview: the directory may change before planning, and the status
(``GET /v1/messages/{id}``) is what happened. The snapshot read here goes on to the
planner of the same process (``gateway/audience_handoff.py``), which then does not
read the audience again and plans exactly the recipients counted here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from gateway.api.context import AppContext
from gateway.constants import DEFAULT_TIME_ZONE
from gateway.errors import ValidationFailed
from gateway.models import Audience, Category, DirectorySnapshot, MessageCreated
from gateway.resolver import resolve
from gateway.store.ports import AudienceReader

NO_RECIPIENTS = "no_recipients"


class _Ports(AudienceReader, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


@dataclass(frozen=True, slots=True)
class Preview:
    recipients: int
    suppressed: dict[str, int]  # reason code -> count, sorted by code

    def answer(self) -> dict[str, Any]:
        return {"recipients": self.recipients, "suppressed": self.suppressed}


@dataclass(frozen=True, slots=True)
class Read:
    """The audience as the intake read it, for the preview and then the planner."""

    snapshot: DirectorySnapshot
    read_at: float  # AudienceHandoff.now() when the read began


async def read(ctx: AppContext, tenant_id: str, audience: Audience) -> Read:
    read_at = ctx.audiences.now() if ctx.audiences is not None else 0.0
    return Read(await _store(ctx).load_audience(tenant_id, audience), read_at)


def preview(ctx: AppContext, snapshot: DirectorySnapshot, event: MessageCreated) -> Preview:
    """Resolve the audience as the planner will, now."""
    data = event.data
    zone = next(iter(snapshot.units.values())).time_zone if snapshot.units else DEFAULT_TIME_ZONE
    on = ctx.clock.now().astimezone(ZoneInfo(zone)).date()
    resolution = resolve(snapshot, data.audience, data.category, on)
    reasons = Counter(s.reason for s in resolution.suppressed)
    return Preview(len(resolution.recipients), dict(sorted(reasons.items())))


def refuse_confidential_to_nobody(seen: Preview, event: MessageCreated) -> None:
    """422 for confidential content that would reach nobody, unless the sender accepts it."""
    data = event.data
    if data.category is not Category.confidential or data.allow_no_recipients:
        return
    if seen.recipients:
        return
    why = ", ".join(f"{code}: {n}" for code, n in seen.suppressed.items()) or NO_RECIPIENTS
    raise ValidationFailed(
        "this confidential message would reach nobody",
        errors=[
            {
                "loc": ["data", "audience"],
                "message": (
                    f"resolves to no recipient ({why}); confidential content reaches only"
                    " persons named by id under data.audience.guardians or data.audience.staff;"
                    ' send "allow_no_recipients": true to accept it anyway'
                ),
                "type": NO_RECIPIENTS,
            }
        ],
    )
