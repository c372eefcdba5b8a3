"""Unknown configuration names: every ``BUDBRINGER_*`` environment variable and every
TOML key must be a setting. A misspelt one (``BUDBRINGER_SMTP_HOST``, one underscore) is
an error that names it and suggests the closest known name, instead of being ignored
without a word. Works on any settings model passed in (gateway/settings.py passes its
``Settings``), so this module imports nothing of the settings.
"""

from __future__ import annotations

import difflib
import tomllib
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from gateway.errors import ConfigError

ENV_PREFIX = "BUDBRINGER_"
NESTED = "__"
# Variables of the test suite (e.g. BUDBRINGER_TEST_REDIS_URL), not settings.
NOT_SETTINGS = "BUDBRINGER_TEST_"


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
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text (TOML files are UTF-8)") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror}") from None


def unknown_toml(table: Mapping[str, Any], model: type[BaseModel]) -> list[str]:
    """One problem per key of the TOML file that is no setting."""
    return list(_unknown_keys(table, model))


def check_names(environ: Mapping[str, str], toml_file: Path | None, model: type[BaseModel]) -> None:
    """Refuse unknown variables and keys of ``model`` (the Settings), all of them named in
    one error. The model is passed in: settings.py calls this, and this module does not
    import it back."""
    problems = unknown_env(environ, model)
    if toml_file is not None:
        problems += unknown_toml(read_toml(toml_file), model)
    if problems:
        raise ConfigError("; ".join(problems))
