"""The answer of ``GET /v1/messages/{id}`` (gateway/api/status.py): a message, who it
reached, its deliveries and replies, and for an absence message the absence.

Persons with a protected address appear as ``protected-<hex>`` pseudonyms unless the
key has the ``protected`` scope; the models only carry what status.py names."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from gateway import scheduling
from gateway.api.responses import Instant
from gateway.models import AbsenceKind, Category, DeliveryStatus, Role


class HistoryEntry(BaseModel):
    status: DeliveryStatus
    at: Instant
    detail: str | None


class DeliveryView(BaseModel):
    """One delivery; never the address, never names."""

    id: str
    recipient_id: str
    recipient_role: Role
    channel: str
    target: str
    status: DeliveryStatus
    reason: str | None
    segments: int | None
    language: str = Field(description="The language asked for (the guardian's choice), as given.")
    wrapper_language: str = Field(
        description="The language our own texts (header, footer, links) were written in."
    )
    language_fallback: bool = Field(
        description="True when we have no texts in `language` and wrote in Bokmål (nb) instead."
    )
    child_ids: list[str]
    history: list[HistoryEntry]
    waiting_for: str | None = Field(
        description="Why a delivery that is not out yet waits: `quiet_hours until <time>`, "
        "`digest at <time>` (held for the guardian's daily digest), "
        "`channel_stopped: sms` / `channel_degraded: email`, or the last retry of its send "
        "or of its digest (`retry at <time>, attempt 3: smtp_connection`); null when it is "
        "not waiting."
    )


class ReplyTranslationView(BaseModel):
    """A guardian's reply in the message's language, for staff (`body` of the reply stays
    the original); `failed` with `reason` when the provider could not."""

    language: str
    origin: Literal["machine", "failed"]
    provider: str | None
    reason: str | None
    body: str | None


class ReplyView(BaseModel):
    id: str
    channel: str
    person_id: str | None
    body: str
    received_at: Instant
    translation: ReplyTranslationView | None = None


class TranslationView(BaseModel):
    """The message in one recipients' language: the teacher's own, the machine's, or why
    there is none (`failed`: the original went out; `reason` e.g. `provider_503`,
    `rate_limited`, `timeout`, `unsupported_language`, `no_provider`)."""

    language: str
    origin: Literal["teacher", "machine", "failed"]
    provider: str | None
    reason: str | None
    subject: str | None = Field(description="null when the subject is hidden (protected)")
    body: str | None = Field(description="null when the subject is hidden (protected)")
    at: Instant


class ChildStatus(BaseModel):
    """One child the message concerns: reached once a recipient with rights to it read it."""

    child_id: str
    reached: bool
    reached_by: list[str]
    reached_at: Instant | None
    reason: Literal["no_recipient", "all_suppressed", "all_failed"] | None = Field(
        description="Why nobody could be told about this child: nobody is related to it"
        " (`no_recipient`), everyone related was left out (`all_suppressed`, see the"
        " suppression records), or every send failed for good (`all_failed`); null while"
        " somebody was or may still be told."
    )


class GuardianStatus(BaseModel):
    """One recipient: the best status across channels (read > opened > delivered > sent ...)."""

    recipient_id: str
    role: Role
    best_status: DeliveryStatus
    channels: dict[str, DeliveryStatus]
    read_at: Instant | None
    via: str | None


class StatusSummary(BaseModel):
    guardians_total: int
    guardians_read: int
    children_total: int
    children_reached: int
    children_not_reached: list[str]
    children_not_told: int = Field(
        description="Children of the audience about whom nobody could be told (reason set)"
    )


class ExplanationView(BaseModel):
    """A guardian's answer to an absence alert (in the app or an SMS keyword)."""

    id: str
    by: str
    kind: AbsenceKind
    text: str
    via: str
    at: Instant
    translation: ReplyTranslationView | None = Field(
        default=None, description="The text in the alert's language, for staff"
    )


class AbsenceView(BaseModel):
    """The absence of an absence message (alert, correction, notice, report, ...)."""

    kind: Literal["recorded", "reported"]
    absence_message_id: str
    absence_event_id: str
    child_id: str
    dates: list[str]
    lesson: dict[str, Any] | None
    expected_arrival: str | None
    recorded_by: str | None
    note: str | None
    reported_by: str | None
    reason: AbsenceKind | None
    text: str | None
    marks: list[str]
    cancelled_at: Instant | None
    cancel_event_id: str | None
    unrouted: Literal["no_staff"] | None = Field(
        default=None,
        description="A report no contact teacher or unit staff could receive"
        " (an `absence.unrouted` webhook was raised)",
    )
    explanations: list[ExplanationView]


class ScheduleView(BaseModel):
    """A scheduled message (``send_at`` on message.created): ``scheduled`` until its
    planning starts at ``send_at``, then ``started``; ``cancelled`` after a cancel."""

    state: Literal["scheduled", "started", "cancelled"]
    send_at: Instant
    cancelled_at: Instant | None

    @classmethod
    def of(cls, view: scheduling.ScheduleView) -> ScheduleView:
        return cls.model_validate(
            {"state": view.state, "send_at": view.send_at, "cancelled_at": view.cancelled_at}
        )


class CancelAnswer(BaseModel):
    """``POST /v1/messages/{id}/cancel``: the message's schedule after the cancel."""

    id: str
    schedule: ScheduleView


class MessageStatus(BaseModel):
    """Persons with a protected address appear as `protected-<hex>` pseudonyms unless the
    key has the `protected` scope."""

    id: str
    event_id: str
    category: Category
    subject: str
    read_receipt: bool
    created_at: Instant
    planned_at: Instant | None
    schedule: ScheduleView | None = Field(
        description="Scheduled sending (send_at on message.created); null when sent at once"
    )
    counts: dict[str, int]
    sms_segments: int = Field(description="SMS segments sent for this message, every recipient")
    summary: StatusSummary
    children: list[ChildStatus]
    guardians: list[GuardianStatus]
    deliveries: list[DeliveryView]
    replies: list[ReplyView]
    absence: AbsenceView | None
    language: str = Field(description="The language subject and body were written in")
    translations: list[TranslationView]
