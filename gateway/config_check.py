"""Checks a configuration before anything starts: unsafe production set-ups.

* Production refuses to start without a real provider for each channel it uses
  (unless ``outbox_in_production`` says so for a staging box) and without an https
  ``public_url`` (read and unsubscribe links in real emails must not point to localhost).

Unknown names (misspelt variables and TOML keys) are refused earlier, while the
settings are read (gateway/config_names.py).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.settings import Settings

# channel -> (the settings section of its provider, what to set)
PROVIDERS: dict[str, tuple[str, str]] = {
    "email": ("smtp", "an SMTP relay (BUDBRINGER_SMTP__HOST and BUDBRINGER_SMTP__SENDER)"),
    "sms": (
        "twilio",
        "Twilio (BUDBRINGER_TWILIO__ACCOUNT_SID and BUDBRINGER_TWILIO__AUTH_TOKEN)",
    ),
    "push": ("fcm", "FCM (BUDBRINGER_FCM__SERVICE_ACCOUNT_FILE)"),
}


def production_problems(settings: Settings) -> list[str]:
    """What keeps ``settings`` (environment=production) from being safe to run."""
    problems = []
    if not settings.outbox_in_production:
        for channel in settings.channels:
            if channel in PROVIDERS and getattr(settings, PROVIDERS[channel][0]) is None:
                problems.append(
                    f"the {channel} channel has no provider: configure {PROVIDERS[channel][1]},"
                    f" leave {channel} out of BUDBRINGER_CHANNELS, or set"
                    " BUDBRINGER_OUTBOX_IN_PRODUCTION=true on a staging box"
                )
    if settings.voice.enabled and settings.twilio is None and not settings.outbox_in_production:
        problems.append(
            "voice.enabled needs Twilio (BUDBRINGER_TWILIO__ACCOUNT_SID and"
            " BUDBRINGER_TWILIO__AUTH_TOKEN) for its calls"
        )
    public = urlsplit(settings.public_url)
    if public.scheme != "https":
        problems.append(
            "BUDBRINGER_PUBLIC_URL must be the https:// address guardians and providers reach"
            " (read and unsubscribe links in emails and SMS point there)"
        )
    elif _this_machine(public.hostname or ""):
        problems.append(
            "BUDBRINGER_PUBLIC_URL points to this machine (localhost): the links in emails and"
            " SMS would open on the guardian's own phone; give the public address"
        )
    return problems


def _this_machine(host: str) -> bool:
    """localhost, or a loopback or unspecified address (127.0.0.1, ::1, 0.0.0.0)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def refuse_unsafe_production(settings: Settings) -> None:
    """Raise ConfigError naming every problem of a production configuration."""
    if settings.environment != "production":
        return
    problems = production_problems(settings)
    if problems:
        raise ConfigError("refusing to start in production: " + "; ".join(problems))
