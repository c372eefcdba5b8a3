"""The 202 of an accepted event: ``POST /v1/events`` and the parent app's absence report
(``POST /v1/me/absences``) answer alike."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

from gateway.api.responses import Absent, omitted
from gateway.models import Message


class Accepted(NamedTuple):
    """What an event's handler says: the message as stored, whether it was stored before,
    and fields of the 202 only the handler knows (message.created: the recipients)."""

    message: Message
    duplicate: bool
    fields: dict[str, Any] | None = None


class EventAccepted(BaseModel):
    message_id: str
    event_id: str
    status: Literal["accepted"]
    duplicate: bool
    deduplicated_into: str | Absent = omitted(
        description="absence.recorded: the earlier alert a repeated mark went into (its message id)"
    )
    # message.created: who the audience resolves to now (a preview; the status says what
    # happened). 0 recipients is said at once; confidential content to nobody is a 422.
    recipients: int | Absent = omitted(
        description="Persons the audience resolves to now (message.created)"
    )
    suppressed: dict[str, int] | Absent = omitted(
        description="Reason code -> how many were left out (blocked, confidential_not_named,"
        " no_recipient, ...), message.created only",
    )
    scheduled_for: str | Absent = omitted(
        description="message.created with send_at: when it will be sent (ISO 8601)"
    )
