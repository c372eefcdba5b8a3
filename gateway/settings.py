"""Settings: environment (BUDBRINGER_, nested with __) and an optional TOML file.

Built once in ``main()`` and passed down; nothing imports a global.
"""

from __future__ import annotations

import sys
from email.headerregistry import Address
from email.utils import getaddresses
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# Share of each claim kept for normal work while urgent work waits (gateway/store/lanes.py
# applies it; the store's own default comes from here).
DEFAULT_NORMAL_SHARE = 0.1

_PLACEHOLDERS = {"changeme", "change-me", "secret", "password", "xxx", ""}


def sender_parts(sender: str) -> tuple[str, str]:
    """(display name, address) of the SMTP sender: the one reading of ``smtp.sender``, by
    the settings' check and the email channel. ValueError unless it is one address."""
    found = getaddresses([sender])
    if len(found) != 1:
        raise ValueError("not one address")
    name, address = found[0]
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        raise ValueError("not an address")
    try:
        Address(addr_spec=address)
    except IndexError as exc:
        raise ValueError("not an address") from exc
    return name, address


class SmtpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str  # the From address, e.g. "Asker kommune <varsel@asker.kommune.no>"
    # Pooled connections per process (opened as needed). Each sends one message at a time,
    # so email throughput is connections / the relay's answer time: 32 at 70 ms ~ 450/s.
    # As many as the email channel's in-flight limit (CHANNEL_CONCURRENCY); below
    # Postfix's 50 per client, far below SendGrid's 10,000. Microsoft 365 (3) and
    # SocketLabs (10) allow fewer: README, "Provider limits".
    connections: int = Field(default=32, ge=1, le=128)
    timeout: float = Field(default=30.0, gt=0)
    # Extra CA bundle to trust for the server certificate (a private relay; tests).
    ca_file: Path | None = None

    @field_validator("sender")
    @classmethod
    def _one_address(cls, value: str) -> str:
        """One address, as the email channel reads it (an unquoted comma in the display
        name makes two, and every email would fail as if the guardian's were wrong)."""
        try:
            sender_parts(value)
        except ValueError as exc:
            raise ValueError(
                "smtp.sender must be one address, with a display name if you like:"
                " Asker kommune <varsel@asker.kommune.no>; a name with a comma goes in double"
                ' quotes: "Asker kommune, Oppvekst" <varsel@asker.kommune.no>'
            ) from exc
        return value


SMS_MAX_SEGMENTS = 4  # an SMS past it goes as its short text
TWILIO_MAX_SEGMENTS = 10  # Twilio's advice: more is not delivered reliably


class TwilioSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr
    # An API key (SK...) and its secret may replace the auth token for the REST calls;
    # the auth token is still what signs callbacks.
    api_key_sid: str | None = None
    api_key_secret: SecretStr | None = None
    base_url: str | None = None  # e.g. http://127.0.0.1:9000 for tests/staging
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    default_sender: str | None = None
    max_segments: int = Field(default=SMS_MAX_SEGMENTS, ge=1, le=TWILIO_MAX_SEGMENTS)
    timeout: float = Field(default=15.0, gt=0)
    hmac_sha256_signatures: bool = False  # accept only HMAC-SHA256 signed webhooks
    # The secret of the SharedKey a Twilio Webhook Setting signs with (requests carrying
    # X-Twilio-Webhooks-Signature-Settings); without it the auth token is used.
    webhook_signing_key: SecretStr | None = None


class FcmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    service_account_file: Path
    project_id: str | None = None
    base_url: str = "https://fcm.googleapis.com"
    token_url: str | None = None  # override the OAuth token endpoint (tests)
    connections: int = Field(default=64, ge=1, le=1024)
    timeout: float = Field(default=10.0, gt=0)


# Default sends in flight per channel and process: with providers answering in 50-300 ms
# that is ~150-1000 SMS/s, well above what a Twilio sender is paced at, and below the
# 100 concurrent requests Twilio allows an account (shared by every process, 429 above);
# FCM takes far more (600,000 messages a minute per project); email: as many as the
# SMTP pool's default connections, each carrying one message at a time (a send beyond
# the pool would wait for a connection holding a dispatch slot).
CHANNEL_CONCURRENCY = {"sms": 48, "push": 64, "email": 32}


def _tenant_rates() -> dict[str, float]:
    return {"voice": 0.5}


class DispatchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    # Sends in flight per process, all channels: room for every channel's default limit.
    concurrency: int = Field(default=144, ge=1, le=4096)
    batch: int = Field(default=256, ge=1, le=10_000)
    lease_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=10, ge=1)
    backoff_base: float = Field(default=2.0, gt=0)
    backoff_max: float = Field(default=3600.0, gt=0)
    # How long after its delivery was made a send may fail as its channel's failing probe
    # without using up an attempt (the provider is down, not this delivery). After it,
    # those failures count, so a send the provider keeps refusing gives up and fails over.
    outage_grace: float = Field(default=6 * 3600.0, ge=0)
    poll_interval: float = Field(default=0.2, gt=0)
    shutdown_timeout: float = Field(default=20.0, gt=0)
    # Share of each claim kept for normal work (general, reminder, digest) while urgent
    # work (emergency, absence) waits: gateway/store/lanes.py.
    normal_share: float = Field(default=DEFAULT_NORMAL_SHARE, ge=0, le=1)
    # Most jobs of a small piece of urgent work (an absence alert's plan, its sends) that
    # the process queueing it runs itself at once, stored as claimed, instead of queueing
    # them behind older urgent work; 0: never (gateway/urgent_handoff.py).
    urgent_handoff: int = Field(default=16, ge=0, le=1000)
    # Sends in flight per channel in one process (a slow provider holds at most this many;
    # the other channels go on). Each channel named here overrides its default in
    # CHANNEL_CONCURRENCY; see in_flight_limit.
    channel_concurrency: dict[str, int] = Field(default_factory=dict)
    # Sends per second per channel for the whole deployment (every process); a channel
    # not named: no limit of ours (Twilio queues and paces per sender itself).
    channel_rate: dict[str, float] = Field(default_factory=dict)
    # Sends per second per channel for each tenant (every process), on top of
    # channel_rate: one school's emergency must not take every call the Twilio account
    # may place (voice: 30 calls a minute per tenant, the account's 1 a second overall).
    tenant_channel_rate: dict[str, float] = Field(default_factory=_tenant_rates)

    def in_flight_limit(self, channel: str) -> int:
        """The most sends of ``channel`` in flight at once in one process."""
        limit = self.channel_concurrency.get(channel, CHANNEL_CONCURRENCY.get(channel))
        return self.concurrency if limit is None else limit

    @field_validator("channel_concurrency")
    @classmethod
    def _positive_limits(cls, value: dict[str, int]) -> dict[str, int]:
        for channel, limit in value.items():
            if limit < 1:
                raise ValueError(f"channel_concurrency of {channel!r} must be at least 1")
        return value

    @field_validator("channel_rate", "tenant_channel_rate")
    @classmethod
    def _positive_rates(cls, value: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        for channel, rate in value.items():
            if rate <= 0:
                raise ValueError(f"{info.field_name} of {channel!r} must be above 0")
        return value


class WebhookSettings(BaseModel):
    """Outbound webhooks to the platform."""

    # Seconds before retry 1, 2, ...: about 26 hours in all; then the message is failed.
    retry_schedule: list[float] = Field(
        default=[5, 30, 120, 600, 1800, 3600, 7200, 14_400, 28_800, 36_000], min_length=1
    )
    # Each wait is stretched by up to this fraction at random, never shortened.
    jitter: float = Field(default=0.25, ge=0, le=1)
    timeout: float = Field(default=10.0, gt=0)
    max_retry_after: float = Field(default=36_000.0, gt=0)  # cap on a receiver's Retry-After
    fanout_batch: int = Field(default=500, ge=1, le=10_000)
    connections: int = Field(default=32, ge=1, le=1024)
    # After a secret rotation the old secret keeps signing (a second signature) this long.
    rotation_grace: float = Field(default=86_400.0, ge=0)
    # In production only public addresses are reached; list internal networks (CIDR) the
    # platform really lives on, e.g. ["10.20.0.0/16"].
    allowed_networks: list[str] = Field(default_factory=list)

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        import ipaddress

        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a network in CIDR form: {cidr}") from exc
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(delay <= 0 for delay in value):
            raise ValueError("every retry delay must be positive")
        return value


class EscalationDelays(BaseModel):
    """Minutes an unread message waits before it goes out on the next channel, per category."""

    model_config = ConfigDict(extra="forbid")

    general: int = Field(default=24 * 60, ge=1, le=30 * 24 * 60)
    reminder: int = Field(default=12 * 60, ge=1, le=30 * 24 * 60)
    confidential: int = Field(default=24 * 60, ge=1, le=30 * 24 * 60)
    emergency: int = Field(default=15, ge=1, le=30 * 24 * 60)
    absence: int = Field(default=10, ge=1, le=30 * 24 * 60)


EscalationChannel = Literal["push", "sms", "email", "voice"]


def _escalation_order() -> list[EscalationChannel]:
    return ["push", "sms", "email"]


class EscalationSettings(BaseModel):
    """Escalation of messages that ask for a read receipt (emergency and absence always):
    unread after ``after_minutes`` of its category, a message goes out again on the next
    channel of ``channels`` the recipient has and has not been sent on. A tenant may
    override these (``PUT /v1/settings/escalation``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    after_minutes: EscalationDelays = Field(default_factory=EscalationDelays)
    channels: list[EscalationChannel] = Field(default_factory=_escalation_order, max_length=4)

    @field_validator("channels")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a channel may appear only once")
        return value


class AbsenceSettings(BaseModel):
    """Absence alerts (gateway/absence.py). A tenant may override these
    (``PUT /v1/settings/absence``). How long an unread alert waits before the next channel
    is the escalation policy's ``after_minutes.absence``."""

    model_config = ConfigDict(extra="forbid")

    # Repeated marks of one child, day and lesson within this many minutes make one alert.
    dedup_window_minutes: int = Field(default=120, ge=0, le=24 * 60)
    # No guardian reached this many minutes after the alert: the unit's staff are told, once.
    staff_after_minutes: int = Field(default=30, ge=1, le=24 * 60)


class HttpSettings(BaseModel):
    """Limits of the HTTP server against slow or greedy clients (README "Timeouts and
    limits")."""

    model_config = ConfigDict(extra="forbid")

    # Seconds a connection may take to send a complete request head, from when it opens or
    # its previous response was sent (also how long an idle kept-alive connection lives).
    header_timeout: float = Field(default=15.0, gt=0, le=3600)
    # Seconds a request may take to send its whole body once the head is in.
    body_timeout: float = Field(default=60.0, gt=0, le=3600)
    # Connections open at once; more are answered 503 and closed.
    max_connections: int = Field(default=1024, ge=1, le=100_000)
    # Body limits of the routes whose schema allows more than ``max_body_bytes``:
    # POST /v1/directory (100,000 persons, 200,000 relations) and its OneRoster zip.
    directory_max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # POST /v1/events: an audience of up to 100,000 ids per list.
    events_max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)


class ArchiveSettings(BaseModel):
    """Limits of a zipped OneRoster export, enforced while it unpacks (zip bombs)."""

    model_config = ConfigDict(extra="forbid")

    max_entries: int = Field(default=100, ge=1, le=100_000)
    max_file_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    max_total_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    # Uncompressed / compressed size of one file; CSV exports compress about 5-20 times.
    max_ratio: float = Field(default=100.0, ge=1)


CategoryName = Literal["emergency", "absence", "general", "reminder", "confidential"]


def _emergency_only() -> list[CategoryName]:
    return ["emergency"]


class VoiceSettings(BaseModel):
    """Phone calls over Twilio's Calls API (channels/voice.py): ``<Say>`` the message in
    the guardian's language where Twilio has a voice for it, then ``<Gather>`` "press 1
    to confirm"; pressing 1 counts as read. Used as the last escalation step of the
    ``categories`` (or wherever a tenant's escalation ``channels`` list "voice")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    caller_id: str | None = Field(default=None, pattern=r"^\+[1-9][0-9]{6,14}$")  # Twilio number
    categories: list[CategoryName] = Field(default_factory=_emergency_only)
    ring_seconds: int = Field(default=30, ge=5, le=600)  # Twilio's Timeout

    @model_validator(mode="after")
    def _caller(self) -> VoiceSettings:
        if self.enabled and self.caller_id is None:
            raise ValueError("voice.caller_id (the Twilio number calls come from) must be set")
        return self


class TranslationSettings(BaseModel):
    """Machine translation of staff text (gateway/translations.py). ``provider`` "none"
    (the default) sends every message in the language it was written in."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["none", "libretranslate", "deepl"] = "none"
    # LibreTranslate: the server (required), e.g. https://translate.kommune.no.
    # DeepL: optional; by default api-free.deepl.com for keys ending in ":fx", else
    # api.deepl.com.
    url: str = ""
    api_key: SecretStr | None = None  # DeepL: required; LibreTranslate: if the server wants one
    timeout: float = Field(default=10.0, gt=0, le=120)  # seconds per request
    attempts: int = Field(default=3, ge=1, le=10)  # tries per batch (429, 5xx, timeouts)
    # Longest wait between tries; a provider asking for longer (Retry-After) counts as
    # down and the original goes out at once.
    max_wait: float = Field(default=5.0, ge=0, le=60)

    @model_validator(mode="after")
    def _provider_complete(self) -> TranslationSettings:
        if self.provider == "libretranslate" and not self.url:
            raise ValueError("translation.url must name the LibreTranslate server")
        if self.provider == "deepl" and (
            self.api_key is None or not self.api_key.get_secret_value().strip()
        ):
            raise ValueError("translation.api_key must be set for DeepL")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError("translation.url must start with http:// or https://")
        return self


class S3Settings(BaseModel):
    """An S3-compatible bucket for attachment files (AWS S3, MinIO, Ceph, Garage...)."""

    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]+[a-z0-9]$")
    # e.g. https://s3.eu-north-1.amazonaws.com or http://127.0.0.1:9000 (MinIO); None: AWS
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None  # None: the usual AWS credential chain
    secret_access_key: SecretStr | None = None
    prefix: str = Field(default="attachments/", max_length=200)  # key prefix in the bucket

    @model_validator(mode="after")
    def _both_or_neither(self) -> S3Settings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither")
        return self


class AttachmentSettings(BaseModel):
    """Files sent with messages (README "Attachments"): limits and where they are kept."""

    model_config = ConfigDict(extra="forbid")

    # "folder": files under ``folder`` (one process or a shared disk); "s3": a bucket, for
    # many processes on many machines.
    storage: Literal["folder", "s3"] = "folder"
    folder: Path = Path("./attachments")
    s3: S3Settings | None = None
    max_file_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=1024**3)
    max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=1024, le=4 * 1024**3)
    max_files: int = Field(default=10, ge=1, le=20)  # per message
    # Files up to this size travel in the email itself; larger ones as a link. Most mail
    # systems refuse messages above 10-25 MB, and base64 adds a third.
    email_max_bytes: int = Field(default=2 * 1024 * 1024, ge=0, le=15 * 1024 * 1024)
    # Largest width or height of a re-encoded image; larger photos are scaled down.
    max_image_pixels: int = Field(default=4096, ge=256, le=16_384)
    # An upload no message has used is removed after this many hours.
    unused_hours: int = Field(default=24, ge=1, le=24 * 30)

    @model_validator(mode="after")
    def _consistent(self) -> AttachmentSettings:
        if self.max_file_bytes > self.max_message_bytes:
            raise ValueError("max_file_bytes must not be larger than max_message_bytes")
        if self.storage == "s3" and self.s3 is None:
            raise ValueError("storage = 's3' needs the s3 settings (at least s3.bucket)")
        return self


ChannelName = Literal["inapp", "push", "sms", "email"]


def _all_channels() -> list[ChannelName]:
    return ["inapp", "push", "sms", "email"]


class Settings(BaseSettings):
    """Everything configurable. With nothing set, runs on ./budbringer.db and ./outbox/."""

    model_config = SettingsConfigDict(
        env_prefix="BUDBRINGER_", env_nested_delimiter="__", extra="forbid"
    )

    environment: Literal["development", "production"] = "development"
    store_url: str = "sqlite:///./budbringer.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"  # how providers and guardians reach us
    secret_key: SecretStr | None = None  # signs guardian tokens and read links
    outbox_dir: Path = Path("./outbox")
    templates_dir: Path | None = None  # default: templates/ of the source tree
    # Corrections of our texts: <lang>.po files whose entries win over templates/locale/.
    locale_dir: Path | None = None
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    guardian_token_ttl: int = Field(default=3600, ge=60, le=86_400)
    read_link_ttl_days: int = Field(default=30, ge=1, le=366)  # read links in email/SMS
    # Staff pages: sign-in links (POST /v1/staff/{id}/tokens) and the session they open.
    staff_link_ttl: int = Field(default=600, ge=30, le=86_400)
    staff_session_ttl: int = Field(default=8 * 3600, ge=60, le=7 * 86_400)
    # Parent pages: the session a read link opens under /p/.
    parent_session_ttl: int = Field(default=3600, ge=60, le=86_400)
    # Delivery records, messages and replies are kept this long: a school year plus margin.
    retention_days: int = Field(default=396, ge=1, le=3650)
    # How far ahead a message.created may set send_at (scheduled sending).
    schedule_horizon_days: int = Field(default=90, ge=1, le=366)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # One line per HTTP request (method, route template, status, duration, tenant).
    access_log: bool = True
    # The channels this deployment sends on. In production each needs its provider.
    channels: list[ChannelName] = Field(default_factory=_all_channels, min_length=1)
    # Production normally refuses to write email/SMS/push into outbox_dir; a staging box
    # may say so explicitly (a WARNING is logged at every start).
    outbox_in_production: bool = False
    # The event loop of `serve` and `worker` (gateway/event_loop.py): uvloop spends less
    # CPU per delivery (docs/performance.md); asyncio is Python's own (and Windows' only).
    event_loop: Literal["uvloop", "asyncio"] = "asyncio" if sys.platform == "win32" else "uvloop"

    smtp: SmtpSettings | None = None
    twilio: TwilioSettings | None = None
    fcm: FcmSettings | None = None
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    absence: AbsenceSettings = Field(default_factory=AbsenceSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    translation: TranslationSettings = Field(default_factory=TranslationSettings)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    attachments: AttachmentSettings = Field(default_factory=AttachmentSettings)

    @field_validator("public_url")
    @classmethod
    def _a_web_address(cls, value: str) -> str:
        """Every read, settings and unsubscribe link in an email or SMS starts with it:
        an address a phone can open (http or https, a host, no space, no query)."""
        parts = urlsplit(value)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if (
            parts.scheme.lower() not in ("http", "https")
            or not parts.hostname
            or not port_ok
            or parts.username is not None
            or any(c.isspace() or c in "?#" for c in value)
        ):
            raise ValueError(
                "public_url must be the address guardians' phones open the links at, such as"
                " https://varsel.asker.kommune.no (http or https, a host, no user name, no"
                " spaces, no ? or #)"
            )
        # The scheme and host as every check of "https://" and every link expect them.
        netloc = parts.netloc.lower()
        return urlunsplit((parts.scheme.lower(), netloc, parts.path, "", ""))

    @field_validator("store_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "redis://", "rediss://")):
            raise ValueError("store_url must start with sqlite:// or redis://")
        return value

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        if self.environment == "production":
            if self.secret_key is None or self.secret_key.get_secret_value() in _PLACEHOLDERS:
                raise ValueError("secret_key must be set to a real secret in production")
            if len(self.secret_key.get_secret_value()) < 32:
                raise ValueError("secret_key must be at least 32 characters in production")
        return self

    @model_validator(mode="after")
    def _in_flight_within_the_connection_pools(self) -> Settings:
        """A send beyond its channel's connection pool (SMTP's, FCM's) only waits for a
        connection, holding one of ``dispatch.concurrency``'s slots that the other
        channels could use and spending its timeout in the queue: the channel's in-flight
        limit follows a smaller pool by default, and a larger one set by hand is refused."""
        pools = {
            "email": ("smtp.connections", self.smtp.connections if self.smtp else None),
            "push": ("fcm.connections", self.fcm.connections if self.fcm else None),
        }
        for channel, (name, pool) in pools.items():
            if pool is None:
                continue
            limit = self.dispatch.channel_concurrency.get(channel)
            if limit is not None and limit > pool:
                raise ValueError(
                    f"dispatch.channel_concurrency.{channel} ({limit}) is more than {name} "
                    f"({pool}): the extra sends would only wait for a connection; raise "
                    f"{name} or lower the {channel} limit"
                )
            if limit is None and pool < self.dispatch.in_flight_limit(channel):
                limits = {**self.dispatch.channel_concurrency, channel: pool}
                self.dispatch.channel_concurrency = limits
        return self

    @model_validator(mode="after")
    def _sends_end_within_their_lease(self) -> Settings:
        """A send starts only while half its job's lease is left (gateway/dispatcher.py)
        and may take its provider's whole timeout; a longer timeout lets a live worker's
        lease run out mid-send, and another worker send the same message again
        (docs/redis.md, "A live worker's lease can run out"). The timeout is per request:
        a send of several (an SMS retry's look-up, a push's token refresh) can still take
        longer, and is reported when it outlasts its lease."""
        lease = self.dispatch.lease_seconds
        for name, section in (("smtp", self.smtp), ("twilio", self.twilio), ("fcm", self.fcm)):
            if section is not None and section.timeout > lease / 2:
                raise ValueError(
                    f"{name}.timeout ({section.timeout:g} s) is more than half of "
                    f"dispatch.lease_seconds ({lease:g} s): a send that takes that long could "
                    f"outlast its lease and be sent again by another worker; lower "
                    f"{name}.timeout or raise dispatch.lease_seconds"
                )
        return self

    @property
    def sqlite_path(self) -> Path:
        return Path(self.store_url.removeprefix("sqlite:///").removeprefix("sqlite://"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        toml_file = _TOML_FILE.get("path")
        if toml_file is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=toml_file),)
        return sources


_TOML_FILE: dict[str, Path] = {}


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings: explicit overrides, then environment, then the TOML file."""
    import os

    from gateway.config_names import check_names

    _TOML_FILE.clear()
    if config_file is not None:
        from gateway.errors import ConfigError

        if not config_file.is_file():
            raise ConfigError(f"config file not found: {config_file}")
    # Before the TOML file is handed to the settings source: a refusal must not leave it
    # behind for the next Settings() of this process.
    check_names(os.environ, config_file, Settings)
    if config_file is not None:
        _TOML_FILE["path"] = config_file
    try:
        return Settings(**overrides)
    finally:
        _TOML_FILE.clear()
