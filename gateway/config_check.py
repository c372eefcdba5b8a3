"""Checks a configuration before anything starts: unknown names and unsafe production set-ups.

* Every ``BUDBRINGER_*`` environment variable and every TOML key must be a setting;
  a misspelt one (``BUDBRINGER_SMTP_HOST``, one underscore) is an error that names it
  and suggests the closest known name, instead of being ignored without a word.
* Production refuses to start without a real provider for each channel it uses
  (unless ``outbox_in_production`` says so for a staging box) and without an https
  ``public_url`` (read and unsubscribe links in real emails must not point to localhost).
"""

from __future__ import annotations

import difflib
import tomllib
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from pydantic import BaseModel

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.settings import Settings

ENV_PREFIX = "BUDBRINGER_"
NESTED = "__"
# Variables of the test suite (e.g. BUDBRINGER_TEST_REDIS_URL), not settings.
NOT_SETTINGS = "BUDBRINGER_TEST_"

# channel -> (the settings section of its provider, what to set)
PROVIDERS: dict[str, tuple[str, str]] = {
    "email": ("smtp", "an SMTP relay (BUDBRINGER_SMTP__HOST and BUDBRINGER_SMTP__SENDER)"),
    "sms": (
        "twilio",
        "Twilio (BUDBRINGER_TWILIO__ACCOUNT_SID and BUDBRINGER_TWILIO__AUTH_TOKEN)",
    ),
    "push": ("fcm", "FCM (BUDBRINGER_FCM__SERVICE_ACCOUNT_FILE)"),
}


def _section(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (``SmtpSettings | None`` too), or None for a leaf."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _section(arg)
            if found is not None:
                return found
    return None


def known_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every settable path of ``model``: ("port",), ("smtp",), ("smtp", "host"), ..."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        yield path
        section = _section(field.annotation)
        if section is not None:
            yield from known_paths(section, path)


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_env(environ: Mapping[str, str], model: type[BaseModel]) -> list[str]:
    """One problem per ``BUDBRINGER_*`` variable that is no setting."""
    known = [ENV_PREFIX + NESTED.join(path).upper() for path in known_paths(model)]
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            if upper.startswith(NOT_SETTINGS):
                continue
            problems.append(f"unknown variable {name}{_suggest(upper, known)}")
    return problems


def _unknown_keys(
    table: Mapping[str, Any], model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[str]:
    fields = model.model_fields
    for key, value in table.items():
        path = ".".join((*prefix, key))
        if key not in fields:
            yield f"unknown key {path}{_suggest(key, list(fields))}"
            continue
        section = _section(fields[key].annotation)
        if section is not None and isinstance(value, Mapping):
            yield from _unknown_keys(value, section, (*prefix, key))


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file as a dict; a syntax error is one line naming the file and the place."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror}") from None


def unknown_toml(table: Mapping[str, Any], model: type[BaseModel]) -> list[str]:
    """One problem per key of the TOML file that is no setting."""
    return list(_unknown_keys(table, model))


def check_names(environ: Mapping[str, str], toml_file: Path | None) -> None:
    """Refuse unknown variables and keys, all of them named in one error."""
    from gateway.settings import Settings

    problems = unknown_env(environ, Settings)
    if toml_file is not None:
        problems += unknown_toml(read_toml(toml_file), Settings)
    if problems:
        raise ConfigError("; ".join(problems))


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
    if not settings.public_url.startswith("https://"):
        problems.append(
            "BUDBRINGER_PUBLIC_URL must be the https:// address guardians and providers reach"
            " (read and unsubscribe links in emails and SMS point there)"
        )
    return problems


def refuse_unsafe_production(settings: Settings) -> None:
    """Raise ConfigError naming every problem of a production configuration."""
    if settings.environment != "production":
        return
    problems = production_problems(settings)
    if problems:
        raise ConfigError("refusing to start in production: " + "; ".join(problems))
