"""Pydantic models of the directory, events, messages and deliveries.

These are the shapes every layer shares. ``models`` imports nothing of ours
but ``constants`` and ``headertext``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date, datetime, time
from enum import StrEnum
from typing import Annotated, Any, Literal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from gateway.constants import DEFAULT_PHONE_REGION, DEFAULT_TIME_ZONE
from gateway.headertext import body_text_problem, header_text_problem, typed_text

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"  # an id of ours: printable, no slash, no space
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=ID_PATTERN)]


def _refused_by(problem_of: Callable[[str], str | None]) -> Callable[[str], str]:
    """A validator that refuses text ``problem_of`` finds a problem in (422 saying it)."""

    def check(value: str) -> str:
        problem = problem_of(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    return check


# Text that may reach an email header (subjects, names): no control characters, also
# not inside RFC 2047 encoded words (gateway/headertext.py).
HeaderText = Annotated[str, AfterValidator(_refused_by(header_text_problem))]
# Text people write for others to read (a message's body): no direction controls,
# which could make a link in it read as another.
BodyText = Annotated[str, AfterValidator(_refused_by(body_text_problem))]
# What a guardian types in the app: kept without direction or control characters
# rather than refused (a keyboard or a paste puts them in; the parent forms and SMS
# answers are cleaned the same way, gateway/headertext.py typed_text).
GuardianText = Annotated[str, AfterValidator(typed_text)]


class Strict(BaseModel):
    """Base for input models: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --------------------------------------------------------------------------- enums


class UnitKind(StrEnum):
    kindergarten = "kindergarten"
    school = "school"
    sfo = "sfo"
    adult_education = "adult_education"


class GroupKind(StrEnum):
    class_ = "class"
    base_group = "base_group"
    department = "department"


class Role(StrEnum):
    child = "child"  # a kindergarten child or a pupil
    guardian = "guardian"
    staff = "staff"
    learner = "learner"  # adult education: never has guardians


class Protection(StrEnum):
    none = "none"
    confidential = "confidential"  # fortrolig adresse
    strictly_confidential = "strictly_confidential"  # strengt fortrolig adresse


class Category(StrEnum):
    general = "general"
    reminder = "reminder"
    emergency = "emergency"
    confidential = "confidential"
    absence = "absence"


class Urgency(StrEnum):
    normal = "normal"
    high = "high"


class ChannelName(StrEnum):
    inapp = "inapp"
    email = "email"
    sms = "sms"
    push = "push"
    voice = "voice"  # a phone call: only as an escalation step (gateway/escalation.py)


class DeliveryStatus(StrEnum):
    planned = "planned"
    queued = "queued"
    sending = "sending"
    sent = "sent"
    delivered = "delivered"
    opened = "opened"
    read = "read"
    # terminal outcomes
    failed = "failed"
    undelivered = "undelivered"
    bounced = "bounced"
    expired = "expired"
    suppressed = "suppressed"
    cancelled = "cancelled"


PROGRESS: tuple[DeliveryStatus, ...] = (
    DeliveryStatus.planned,
    DeliveryStatus.queued,
    DeliveryStatus.sending,
    DeliveryStatus.sent,
    DeliveryStatus.delivered,
    DeliveryStatus.opened,
    DeliveryStatus.read,
)
TERMINAL_FAILURES = frozenset(
    {
        DeliveryStatus.failed,
        DeliveryStatus.undelivered,
        DeliveryStatus.bounced,
        DeliveryStatus.expired,
        DeliveryStatus.suppressed,
        DeliveryStatus.cancelled,
    }
)
# A delivery in one of these needs no more work from the dispatcher.
FINAL = TERMINAL_FAILURES | {
    DeliveryStatus.sent,
    DeliveryStatus.delivered,
    DeliveryStatus.opened,
    DeliveryStatus.read,
}
_RANK = {status: rank for rank, status in enumerate(PROGRESS)}


def can_transition(old: DeliveryStatus, new: DeliveryStatus) -> bool:
    """The forward-only rule: a late or out-of-order update never moves a delivery back.

    Progress states only move up. A terminal failure can only replace a state
    before ``delivered`` (a provider may report ``undelivered`` after ``sent``),
    and nothing leaves a terminal failure.
    """
    if old in TERMINAL_FAILURES:
        return False
    if new in TERMINAL_FAILURES:
        return _RANK[old] < _RANK[DeliveryStatus.delivered]
    return _RANK[new] > _RANK[old]


# --------------------------------------------------------------------------- directory


def normalise_phone(value: str, region: str = DEFAULT_PHONE_REGION) -> str:
    """Parse a phone number and return it in E.164; raise ValueError if it is not valid."""
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError("not a valid email address") from exc


class Unit(Strict):
    id: Id
    kind: UnitKind
    name: HeaderText = Field(min_length=1, max_length=200)
    time_zone: str = DEFAULT_TIME_ZONE
    sender_name: HeaderText | None = Field(default=None, max_length=200)
    # SMS sender: alphanumeric id (1-11), an E.164 number or a Messaging Service SID.
    sms_sender: str | None = Field(default=None, max_length=34)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone") from exc
        return value


class Group(Strict):
    id: Id
    unit_id: Id
    kind: GroupKind
    name: HeaderText = Field(min_length=1, max_length=200)


# The categories a guardian may take as a daily digest (never absence or emergency).
DigestCategory = Literal["general", "reminder"]


class Preferences(Strict):
    """A guardian's language and channels per category. Absent category = default routing."""

    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    channels: dict[Category, list[ChannelName]] = Field(default_factory=dict)
    # Quiet hours in the unit's time zone, "HH:MM"; messages are deferred, not dropped.
    quiet_start: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    quiet_end: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    # Daily digest per category (general, reminder only): "HH:MM" in the unit's time zone
    # collects the day's messages into one email, push or SMS then; absent = instantly.
    digest: dict[DigestCategory, Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]] = (
        Field(default_factory=dict)
    )


_REPLACES = "Replaces the stored value; absent clears it."


class Person(Strict):
    """A child/pupil, guardian, staff member or adult learner.

    In a directory batch, an absent ``protection``, ``language`` or
    ``consent_guardians`` keeps the stored value ("absent means keep"), and protection
    is never lowered by an import (gateway/protection.py); every other field is the
    platform's truth and replaces the stored value."""

    id: Id
    role: Role = Field(description="Replaces the stored value.")
    given_name: HeaderText = Field(
        min_length=1, max_length=200, description="Replaces the stored value."
    )
    family_name: HeaderText = Field(default="", max_length=200, description=_REPLACES)
    birth_date: date | None = Field(
        default=None,
        description="Required for children and learners; not after today (Norway), not"
        " before 1900 (422 `implausible_date`). " + _REPLACES,
    )
    protection: Protection = Field(
        default=Protection.none,
        description="Absent means keep. An import may raise it, never lower it (a lower"
        " level is ignored); only PUT /v1/persons/{id}/protection lowers it.",
    )
    email: str | None = Field(default=None, description=_REPLACES)
    phone: str | None = Field(default=None, description="E.164 after normalising. " + _REPLACES)
    language: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        description="Absent means keep; given (also null) replaces.",
    )
    unit_ids: list[Id] = Field(
        default_factory=list, description="The memberships are exactly these. " + _REPLACES
    )
    group_ids: list[Id] = Field(
        default_factory=list, description="The memberships are exactly these. " + _REPLACES
    )
    # A pupil of 18 or more may consent to their guardians still being told.
    consent_guardians: bool = Field(
        default=False,
        description="A pupil of 18+ consents to guardians being told. Absent means keep;"
        " given replaces.",
    )

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value in (None, "") else normalise_email(value)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return None if value in (None, "") else normalise_phone(value)

    @model_validator(mode="after")
    def _birth_date_for_pupils(self) -> Person:
        if self.role in (Role.child, Role.learner) and self.birth_date is None:
            raise ValueError("birth_date is required for children and learners")
        return self


EARLIEST_BIRTH_DATE = date(1900, 1, 1)


def birth_date_problem(birth_date: date, today: date) -> str | None:
    """What makes an imported birth date impossible on ``today``, or None: a typo there
    is not harmless (a date in the future keeps a pupil a minor for decades; one a
    century back makes a child an adult pupil, whose guardians are no longer told).
    The one rule of the directory API and the OneRoster import."""
    if birth_date > today:
        return "the birth date is in the future"
    if birth_date < EARLIEST_BIRTH_DATE:
        return "the birth date is before 1900"
    return None


class Relation(Strict):
    """A child–guardian relation as the student-administration platform knows it.

    The manual flags (information_granted, blocked) are NOT part of this model:
    they are changed only through their own calls and survive every re-import.
    """

    child_id: Id
    guardian_id: Id
    parental_responsibility: bool = Field(
        default=False,
        description="Foreldreansvar. Replaces the stored value (OneRoster keeps the stored one).",
    )
    daily_care: bool = Field(
        default=False,
        description="Daglig omsorg. Replaces the stored value (OneRoster keeps the stored one).",
    )


class RelationFlags(BaseModel):
    """Manual flags on a relation, set by staff with a reason. Never touched by an import."""

    information_granted: bool = False
    information_reason: str | None = None
    blocked: bool = False
    blocked_reason: str | None = None
    updated_by: str | None = None
    updated_at: datetime | None = None


class RelationRecord(Relation):
    """A relation with its manual flags, as read from the store."""

    model_config = ConfigDict(extra="forbid")
    flags: RelationFlags = Field(default_factory=RelationFlags)


class FlagChange(Strict):
    """Body of the explicit flag calls. A reason is required to set a flag."""

    value: bool
    reason: str = Field(min_length=3, max_length=1000)
    actor: str = Field(min_length=1, max_length=200)


class ProtectionChange(Strict):
    """Body of ``PUT /v1/persons/{id}/protection``: the only call that lowers protection."""

    level: Protection
    reason: str = Field(min_length=3, max_length=1000)
    actor: str = Field(min_length=1, max_length=200)


class RelationKey(Strict):
    child_id: Id
    guardian_id: Id


class DirectoryBatch(Strict):
    """One upsert of directory rows, validated all or nothing (then written in chunks)."""

    units: list[Unit] = Field(default_factory=list, max_length=10_000)
    groups: list[Group] = Field(default_factory=list, max_length=50_000)
    persons: list[Person] = Field(default_factory=list, max_length=100_000)
    relations: list[Relation] = Field(default_factory=list, max_length=200_000)
    preferences: dict[Id, Preferences] = Field(default_factory=dict)


class DirectoryDeletion(Strict):
    """One all-or-nothing deletion of directory rows by id."""

    units: list[Id] = Field(default_factory=list)
    groups: list[Id] = Field(default_factory=list)
    persons: list[Id] = Field(default_factory=list)
    relations: list[RelationKey] = Field(default_factory=list)


class Device(Strict):
    """A guardian's app installation for push: an FCM registration token or a Firebase
    installation id (fid)."""

    id: Id
    token: str | None = Field(default=None, min_length=1, max_length=4096)
    fid: str | None = Field(default=None, min_length=1, max_length=4096)
    platform: Literal["android", "ios", "web"]
    app_version: str | None = Field(default=None, max_length=50)
    last_seen: datetime | None = None

    @model_validator(mode="after")
    def _one_address(self) -> Device:
        if (self.token is None) == (self.fid is None):
            raise ValueError("give exactly one of token or fid")
        return self


class DirectorySnapshot(BaseModel):
    """What the resolver needs for one audience, loaded by the store in one go."""

    units: dict[str, Unit] = Field(default_factory=dict)
    groups: dict[str, Group] = Field(default_factory=dict)
    persons: dict[str, Person] = Field(default_factory=dict)
    # children in the audience (ids into persons), after expanding groups and units
    audience_children: list[str] = Field(default_factory=list)
    # The units a message names when it concerns no child of a unit (to guardians or staff
    # directly): the sender's, then the audience's (gateway/sender_unit.py); ids into units.
    sender_units: list[str] = Field(default_factory=list)
    relations: list[RelationRecord] = Field(default_factory=list)
    preferences: dict[str, Preferences] = Field(default_factory=dict)
    devices: dict[str, list[Device]] = Field(default_factory=dict)
    # person id -> contact kinds ("email", "phone") whose CURRENT address is failing
    failing: dict[str, list[str]] = Field(default_factory=dict)


# --------------------------------------------------------------------------- events


# The audience rule in JSON Schema: at least one of the lists has an id.
_AUDIENCE_NOT_EMPTY: dict[str, Any] = {
    "anyOf": [
        {"required": [name], "properties": {name: {"minItems": 1}}}
        for name in ("children", "groups", "units", "guardians", "staff")
    ]
}


class Audience(Strict):
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra=_AUDIENCE_NOT_EMPTY
    )

    children: list[Id] = Field(default_factory=list, max_length=100_000)
    groups: list[Id] = Field(default_factory=list, max_length=10_000)
    units: list[Id] = Field(default_factory=list, max_length=10_000)
    guardians: list[Id] = Field(default_factory=list, max_length=100_000)
    staff: list[Id] = Field(default_factory=list, max_length=100_000)

    @model_validator(mode="after")
    def _not_empty(self) -> Audience:
        if not (self.children or self.groups or self.units or self.guardians or self.staff):
            raise ValueError("the audience is empty")
        return self


LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]


class OwnTranslation(Strict):
    """A teacher's own translation of the message into one language (wins over the machine)."""

    subject: HeaderText = Field(min_length=1, max_length=200)
    body: BodyText = Field(min_length=1, max_length=20_000)


class MessageData(Strict):
    sender_id: Id | None = None  # the staff member who sends
    sender_name: HeaderText | None = Field(default=None, max_length=200)
    audience: Audience
    category: Category = Category.general
    subject: HeaderText = Field(min_length=1, max_length=200)
    body: BodyText = Field(min_length=1, max_length=20_000)
    urgency: Urgency = Urgency.normal
    read_receipt: bool = False
    # A confidential message that would reach nobody is refused (422) unless this is true.
    allow_no_recipients: bool = False
    # Scheduled sending: resolved and sent at this time (in the future, within the horizon).
    send_at: AwareDatetime | None = None
    # The language subject and body are written in (ISO 639-1); recipients with another
    # language get a translation (gateway/translations.py).
    language: LanguageCode = "nb"
    # The teacher's own translations by language; these win over machine translation.
    translations: dict[LanguageCode, OwnTranslation] = Field(default_factory=dict, max_length=20)
    # Ids from POST /v1/attachments, each used by one message only (gateway/attachments.py).
    attachments: list[Id] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _absence_not_here(self) -> MessageData:
        if self.category is Category.absence:
            raise ValueError("absence messages come as absence events, not message.created")
        return self


class MessageCreated(Strict):
    """``message.created``: a staff member sends a message to an audience."""

    id: Id
    type: Literal["message.created"]
    timestamp: datetime | None = None
    data: MessageData


Event = MessageCreated  # a discriminated union once more event types arrive


# --------------------------------------------------------------------------- messages


class Tenant(BaseModel):
    id: str
    name: str
    api_key_hash: str
    webhook_secret: str  # whsec_..., needed in clear to verify HMAC signatures
    created_at: datetime


class Scope(StrEnum):
    """What a tenant API key may do (README "Keys and scopes")."""

    events = "events"  # POST /v1/events
    directory = "directory"  # directory, OneRoster import, persons, guardian tokens
    status = "status"  # GET /v1/messages/{id}
    protected = "protected"  # see persons with a protected address (with status/directory)
    webhooks = "webhooks"  # webhook endpoints and messages
    admin = "admin"  # API keys and the tenant's settings


# The scopes of a tenant's first key (and of a key from before keys had scopes): all of
# them but ``protected``, which is granted only on request.
FIRST_KEY_SCOPES = tuple(s for s in Scope if s is not Scope.protected)


class ApiKey(BaseModel):
    """One of a tenant's API keys. Only the sha256 of the key itself is stored."""

    id: str
    tenant_id: str
    key_hash: str
    name: str = ""
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def first_key_id(api_key_hash: str) -> str:
    """The id of a tenant's first key, derived from its hash so that creating it again
    (the migration of tenants from before keys had ids) can never make a second row."""
    return "key_" + hashlib.sha256(b"first-key\x1f" + api_key_hash.encode()).hexdigest()[:16]


def first_api_key(tenant: Tenant, *, protected: bool = False) -> ApiKey:
    """The key record of ``tenant.api_key_hash``, the key made with the tenant."""
    scopes = [*FIRST_KEY_SCOPES, Scope.protected] if protected else list(FIRST_KEY_SCOPES)
    return ApiKey(
        id=first_key_id(tenant.api_key_hash),
        tenant_id=tenant.id,
        key_hash=tenant.api_key_hash,
        name="first key",
        scopes=sorted(scopes),
        created_at=tenant.created_at,
    )


def derive_id(*parts: str) -> str:
    """A stable id from its parts, so the same inputs can never make a second row."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return digest[:32]


class Message(BaseModel):
    """One accepted event. ``id`` derives from (tenant, event id)."""

    id: str
    tenant_id: str
    event_id: str
    event_type: str
    body_hash: str  # sha256 of the canonical event JSON: same id + other body = 409
    category: Category
    subject: str
    body: str
    urgency: Urgency = Urgency.normal
    read_receipt: bool = False
    sender_id: str | None = None
    sender_name: str | None = None
    audience: Audience
    created_at: datetime
    planned_at: datetime | None = None  # set when every delivery has been planned


class Attachment(BaseModel):
    """A file uploaded with ``POST /v1/attachments``: its metadata (the bytes are in the
    file storage under :attr:`key`). ``message_id`` is set once a message uses it."""

    id: str
    tenant_id: str
    name: str  # the file name shown to the recipient (personal data may be in it: not logged)
    content_type: str  # what the bytes are, never what the uploader said
    size: int
    sha256: str
    created_at: datetime
    message_id: str | None = None
    used_at: datetime | None = None  # when a message took it: its retention runs from then
    position: int = 0  # its place in the message's list

    @property
    def key(self) -> str:
        return self.key_of(self.tenant_id, self.id)

    @staticmethod
    def key_of(tenant_id: str, attachment_id: str) -> str:
        """Where the bytes are in the file storage: derived, so a purge needs no lookup."""
        return f"{tenant_id}/{attachment_id}"


class Delivery(BaseModel):
    """One (recipient, channel, target) of one message.

    ``id`` derives from (tenant, event id, recipient, channel, target) so a
    replayed event or a restarted worker never plans a second one. ``target``
    is the device id for push (one delivery per device), a child id for a
    suppression record, and "" otherwise.
    """

    id: str
    tenant_id: str
    message_id: str
    recipient_id: str
    recipient_role: Role
    channel: str  # a ChannelName, or SUPPRESSED_CHANNEL for a suppression record
    target: str = ""
    address: str | None = None  # email, E.164 phone, push token/fid: personal data, never logged
    language: str
    child_ids: list[str] = Field(default_factory=list)
    # denormalised render context (children's first names, unit name, sender name)
    context: dict[str, Any] = Field(default_factory=dict)
    status: DeliveryStatus = DeliveryStatus.planned
    reason: str | None = None  # why suppressed / failed (a code, never personal data)
    provider_id: str | None = None
    segments: int | None = None
    attempts: int = 0
    not_before: datetime | None = None  # quiet hours: deferred until then
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def make_id(
        tenant_id: str, event_id: str, recipient_id: str, channel: str, target: str = ""
    ) -> str:
        return derive_id(tenant_id, event_id, recipient_id, channel, target)


class StatusChange(BaseModel):
    delivery_id: str
    status: DeliveryStatus
    at: datetime
    detail: str | None = None


class Job(BaseModel):
    """A unit of durable work. ``id`` is deterministic (e.g. ``send:<delivery id>``)."""

    id: str
    tenant_id: str
    kind: str
    ref: str
    due_at: datetime
    attempts: int = 0
    last_error: str | None = None
    # The urgent lane (emergency and absence work) is claimed before the normal one; see
    # gateway/store/lanes.py for the share the normal lane keeps.
    urgent: bool = False
    # Urgent work due when queued: its place in its message's work (0: the first), so
    # a small message is not queued behind a big one's backlog (lanes.order_at). Only
    # read when the job is queued; not stored.
    rank: int | None = None


class Rendered(BaseModel):
    """A message rendered for one delivery's channel and language."""

    subject: str
    text: str
    html: str | None = None
    short: str | None = None  # push body / SMS fallback
    # An absence or emergency text: an SMS whose short text is still past
    # TWILIO__MAX_SEGMENTS goes over that budget rather than not at all.
    urgent: bool = False
    language: str | None = None  # the language actually rendered (one of SUPPORTED_LANGUAGES)
    # The language of the staff text itself: a translation's, else the message's own.
    text_language: str | None = None
    # Files the email carries as MIME attachments: (name, content type, bytes).
    files: list[tuple[str, str, bytes]] = Field(default_factory=list)
    # email: the personal one-click unsubscribe link (RFC 8058), None without read links
    unsubscribe_url: str | None = None


class Receipt(BaseModel):
    """What a channel says after handing a delivery over."""

    status: Literal[DeliveryStatus.sent, DeliveryStatus.delivered] = DeliveryStatus.sent
    provider_id: str | None = None
    segments: int | None = None
    detail: str | None = None


class Reply(BaseModel):
    """An inbound reply (e.g. an SMS answer). Personal data: shown to staff, never logged."""

    id: str  # derived from the provider's id, so a redelivered webhook stores nothing new
    tenant_id: str
    channel: str
    message_id: str | None  # the most recent message sent to that address, if any
    person_id: str | None
    body: str
    provider_id: str | None = None
    received_at: datetime


class InboxItem(BaseModel):
    message_id: str
    subject: str
    body: str
    category: Category
    sender_name: str | None
    child_ids: list[str]
    context: dict[str, Any]
    status: DeliveryStatus
    created_at: datetime
    read_at: datetime | None = None
    language: str | None = None  # the in-app delivery's: our own texts are told in it


class ReadRecord(BaseModel):
    """The first read of a message by one recipient (in the app, through a read link, ...)."""

    person_id: str
    at: datetime
    via: str


class Reached(BaseModel):
    """The moment a message first reached a subject: for absence and emergency a child
    (``subject_kind`` "child": a recipient with rights to that child read it), for other
    categories a recipient ("guardian": that guardian, staff member or adult pupil read
    it). ``by_id`` is the recipient who read."""

    tenant_id: str
    message_id: str
    subject_kind: Literal["child", "guardian"]
    subject_id: str
    by_id: str
    at: datetime


def reached_data(row: Reached) -> dict[str, Any]:
    """The ``data`` of a ``message.reached`` webhook event (the store records it with the
    row; ``at`` is added by the feed)."""
    return {
        "message_id": row.message_id,
        "subject_kind": row.subject_kind,
        "subject_id": row.subject_id,
        "recipient_id": row.by_id,
    }


# --------------------------------------------------------------------------- webhooks


class WebhookEndpoint(BaseModel):
    """A platform URL that receives one tenant's events, signed with the endpoint's secret."""

    id: str
    tenant_id: str
    url: str
    event_types: list[str]
    description: str = ""
    enabled: bool = True
    disabled_reason: str | None = None  # e.g. "endpoint_gone" after a 410
    secret: str  # whsec_...: shown once, kept in clear because signing needs it
    # After a rotation the old secret signs too (a second v1 signature) until this time.
    previous_secret: str | None = None
    previous_secret_until: datetime | None = None
    created_at: datetime
    updated_at: datetime


class WebhookStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class WebhookMessage(BaseModel):
    """One event for one endpoint in the outbox. ``id`` is the ``webhook-id``, stable across
    retries and replays; ``body`` is the exact JSON sent every time."""

    id: str
    tenant_id: str
    endpoint_id: str
    event_type: str
    body: str
    status: WebhookStatus = WebhookStatus.pending
    attempts: int = 0  # since it was queued or last replayed
    next_attempt_at: datetime | None = None
    reason: str | None = None  # code of the last failure: http_500, timeout, endpoint_gone, ...
    last_status_code: int | None = None
    created_at: datetime
    updated_at: datetime


class WebhookAttempt(BaseModel):
    """One POST of a webhook message. ``response`` holds at most 200 characters."""

    at: datetime
    status_code: int | None = None
    duration_ms: int = 0
    error: str | None = None  # a code: timeout, connection_error, ...
    response: str | None = None


class Change(BaseModel):
    """One entry of the change feed that the webhook fan-out reads, in commit order."""

    seq: int
    tenant_id: str
    type: str  # a webhook event type
    at: datetime
    data: dict[str, Any]


# --------------------------------------------------------------------------- absence
# Events of the absence flows (gateway/absence.py) and what the store keeps of them.

Day = date  # a field named ``date`` cannot be annotated with ``date`` itself


class AbsenceKind(StrEnum):
    """Why a child is away, as a guardian tells it (a report, or an answer to an alert)."""

    sick = "sick"
    appointment = "appointment"  # doctor, dentist, ...
    leave = "leave"  # permisjon, holiday
    other = "other"


class Lesson(Strict):
    """A lesson or period of the school day; every part is optional."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

    number: int | None = Field(default=None, ge=0, le=20)
    name: HeaderText | None = Field(default=None, min_length=1, max_length=100)
    start: time | None = Field(default=None, alias="from")
    end: time | None = Field(default=None, alias="to")

    @model_validator(mode="after")
    def _ordered(self) -> Lesson:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("a lesson must end after it starts")
        return self

    def key(self) -> str:
        """What tells two marks of one day apart: the number, else the name, else the start."""
        if self.number is not None:
            return f"n{self.number}"
        if self.name:
            return "name:" + " ".join(self.name.casefold().split())
        if self.start is not None:
            return f"at:{self.start:%H:%M}"
        return "day"


class AbsenceRecordedData(Strict):
    """Staff marked a child absent without notice (a lesson or the day), or a kindergarten
    child has not arrived by ``expected_arrival``. ``note`` is for staff only: it is never
    sent to guardians. ``date`` defaults to today in the unit's time zone."""

    child_id: Id
    unit_id: Id | None = None
    group_id: Id | None = None
    date: Day | None = None
    lesson: Lesson | None = None
    expected_arrival: time | None = None
    recorded_by: Id | None = None  # the staff member; None for an automatic mark
    note: str | None = Field(default=None, max_length=2000)


class AbsenceRecorded(Strict):
    """``absence.recorded``: alert every guardian with rights at once (the adult pupil or
    learner themself), without any reason."""

    id: Id
    type: Literal["absence.recorded"]
    timestamp: datetime | None = None
    data: AbsenceRecordedData


NO_DAY = "give date or dates"  # an absence report names no day


class AbsenceReportedData(Strict):
    """A guardian (or an adult pupil) reports an absence: one ``date`` or several ``dates``."""

    child_id: Id
    guardian_id: Id
    date: Day | None = None
    dates: list[Day] = Field(default_factory=list, max_length=31)
    kind: AbsenceKind = AbsenceKind.other
    text: BodyText | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _some_day(self) -> AbsenceReportedData:
        if self.date is None and not self.dates:
            raise ValueError(NO_DAY)
        return self

    def days(self) -> list[Day]:
        """Every day reported, sorted, each once."""
        return sorted({*self.dates, *([self.date] if self.date else [])})


class AbsenceReported(Strict):
    """``absence.reported``: the contact teachers (else the unit's staff) are told, the
    reporter gets a confirmation, the other guardians with rights are informed."""

    id: Id
    type: Literal["absence.reported"]
    timestamp: datetime | None = None
    data: AbsenceReportedData


class AbsenceCancelledData(Strict):
    """Which mark was a mistake: its event id, or the same child, day and lesson."""

    absence_event_id: Id | None = None
    child_id: Id | None = None
    date: Day | None = None
    lesson: Lesson | None = None
    cancelled_by: Id | None = None

    @model_validator(mode="after")
    def _names_one(self) -> AbsenceCancelledData:
        if self.absence_event_id is None and (self.child_id is None or self.date is None):
            raise ValueError("give absence_event_id, or child_id and date")
        return self


class AbsenceCancelled(Strict):
    """``absence.cancelled``: pending alerts are cancelled; who got one gets a correction."""

    id: Id
    type: Literal["absence.cancelled"]
    timestamp: datetime | None = None
    data: AbsenceCancelledData


class AbsenceRecord(BaseModel):
    """An absence alert or report as the store keeps it, by its message.

    ``key`` (child|date|lesson; "" for reports) is what de-duplication compares;
    ``data`` is the event's data (for an alert: of its latest mark); ``marks`` are the
    event ids merged into it, the first first."""

    tenant_id: str
    message_id: str
    event_id: str
    kind: Literal["recorded", "reported"]
    child_id: str
    key: str = ""
    data: dict[str, Any]
    marks: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None = None
    cancel_event_id: str | None = None

    def days(self) -> list[str]:
        """The days it is for (ISO dates): an alert's one ``date``, a report's ``days``.
        The one rule of an absence's days (the stores index records by it)."""
        day = self.data.get("date")
        return list(self.data.get("days") or ([day] if day else []))


class AbsenceClaim(BaseModel):
    """What :meth:`Store.claim_absence` did with an event: ``new`` (stored as is),
    ``merged`` (a repeated mark folded into ``record``) or ``known`` (this event id was
    claimed before: nothing changed). ``body_hash`` is the one stored with the event id."""

    outcome: Literal["new", "merged", "known"]
    record: AbsenceRecord
    body_hash: str


class AlertPhone(BaseModel):
    """An absence alert whose recipient has this phone number: what an SMS answer from the
    number may be about (matched across tenants, gateway/absence.py). Personal data."""

    phone: str  # E.164
    tenant_id: str
    message_id: str
    person_id: str
    at: datetime


class AbsenceExplanation(BaseModel):
    """A guardian's answer to an alert. Personal data: shown to staff, never logged."""

    id: str  # derived from the provider's id (SMS) or the request, so a retry adds nothing
    tenant_id: str
    message_id: str
    child_id: str
    person_id: str
    kind: AbsenceKind
    text: str = ""
    via: str  # "sms" or "inapp"
    at: datetime


class TranslationOrigin(StrEnum):
    source = "source"  # the language the message was written in (no text of its own)
    teacher = "teacher"  # the sender's own translation
    machine = "machine"  # made by the translation provider
    failed = "failed"  # the provider could not: the original went out (``reason`` says why)


class Translation(BaseModel):
    """A message's subject and body in one language, made once and reused by every channel
    and escalation. Personal data like the message itself: never logged."""

    tenant_id: str
    message_id: str
    language: str
    origin: TranslationOrigin
    subject: str = ""
    body: str = ""
    provider: str | None = None
    reason: str | None = None  # why it failed (a code, never personal data)
    at: datetime

    @property
    def usable(self) -> bool:
        return self.origin in (TranslationOrigin.teacher, TranslationOrigin.machine)
