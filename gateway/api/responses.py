"""How a JSON answer leaves the API: a pydantic response model, serialised in one place.

Each handler's response model lives beside it (or in ``<area>_models.py`` next to it);
:func:`respond_json` turns it into the HTTP response, and the route's description
(``OPERATIONS``, :mod:`gateway.api.spec`) names the same model for ``gateway/openapi.json``,
so the document says what the code sends.

Two field types keep answers as they always were:

* :data:`Instant` – a date-time written with ``datetime.isoformat()`` (``+00:00``), as the
  hand-built answers did; a plain ``datetime`` field is written by pydantic (``Z``).
* ``X | Absent = omitted()`` – a field left out of the answer while it is ``None``
  (absent, never ``null``), for answers whose keys depend on the case; the document
  shows it as an optional ``X``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, Field, PlainSerializer, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

Instant = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str, when_used="json"),
    WithJsonSchema({"format": "date-time", "type": "string"}, mode="serialization"),
]

Absent = SkipJsonSchema[None]


def _is_none(value: object) -> bool:
    return value is None


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def omitted(**kwargs: Any) -> Any:
    """A field that is left out of the answer while it is ``None``: ``x: int | Absent =
    omitted()``."""
    return Field(default=None, exclude_if=_is_none, json_schema_extra=_no_default, **kwargs)


def dump(model: BaseModel) -> Any:
    """The JSON value of a response model (for the rare caller that needs the data)."""
    return model.model_dump(mode="json")


def respond_json(model: BaseModel, status: int = 200) -> web.Response:
    """The HTTP response for a response model (``application/json``)."""
    return web.json_response(dump(model), status=status)


class ErrorRow(BaseModel):
    loc: list[str | int]
    message: str
    type: str


class Error(BaseModel):
    """Every error response: a code, a message, and for input errors the rows at fault."""

    error: str
    message: str
    errors: list[ErrorRow] = Field(default=[], exclude_if=lambda rows: not rows)
