"""Reading and validating JSON bodies, with errors that say what and where."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.errors import PayloadTooLarge, ValidationFailed

M = TypeVar("M", bound=BaseModel)


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as JSON rows: loc, message, type. Input values are left out
    on purpose: they may be personal data."""
    return [
        {"loc": list(err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


async def read_raw(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    # StreamReader.read(n) returns what is buffered, not n bytes: read to the end.
    raw = bytearray()
    async for chunk in request.content.iter_any():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
    return bytes(raw)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = getattr(exc, "lineno", None), getattr(exc, "colno", None)
        raise ValidationFailed(
            "malformed JSON",
            errors=[
                {
                    "loc": ["body"],
                    "message": f"{exc.__class__.__name__} at line {where[0]} column {where[1]}",
                    "type": "json_invalid",
                }
            ],
        ) from exc


def to_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed("the body is not valid", errors=validation_errors(exc)) from exc


async def read_model(request: web.Request, model: type[M], limit: int) -> M:
    return to_model(model, parse_json(await read_raw(request, limit)))
