"""What a route is, for gateway/openapi.json: an :class:`Operation` beside its handler.

Each module of ``gateway/api`` that registers routes also describes them in a table
``OPERATIONS: dict[Route, Operation]`` next to its ``setup``; scripts/gen_openapi.py
collects the tables into the document. Request bodies and answers are the pydantic
models the handlers validate with and answer with, so their schemas come from the code;
the rest (summary, parameters, which errors) is written here once per route.

Rules every operation shares live in :func:`render`: the JSON error answers named by
code, and a 403 for any operation that needs a scoped tenant key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from gateway.api.responses import Error

Route = tuple[str, str]
"""``(METHOD, path)`` as the route is registered, e.g. ``("POST", "/v1/events")``."""

Security = tuple[tuple[str, tuple[str, ...]], ...]
"""Alternatives, each a security scheme with the scopes it needs."""

JSON = "application/json"
HTML = "text/html"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
BINARY: Mapping[str, Any] = {"type": "string", "format": "binary"}
TEXT: Mapping[str, Any] = {"type": "string"}
REF = "#/components/schemas/{model}"

PUBLIC: Security = ()
ANY_TENANT: Security = (("bearer", ()),)
GUARDIAN: Security = (("guardianToken", ()),)
SIGNED: Security = (("standardWebhooks", ()),)


def tenant(scope: str) -> Security:
    """A tenant API key with this scope (README "Keys and scopes"); 403 without it."""
    return (("bearer", (scope,)),)


# Ids in paths the handlers check against this pattern (gateway/models.py).
ID: Mapping[str, Any] = {"minLength": 1, "maxLength": 128, "pattern": r"^[A-Za-z0-9_.:\-]+$"}

ERRORS: Mapping[int, str] = {
    400: "Malformed body: not UTF-8 (or with a byte order mark), JSON nested deeper"
    " than 32 levels, a number longer than 40 characters, a key given twice in one"
    " object, a control character other than tab and line or page breaks in a string,"
    " a form that cannot be read",
    401: "Missing or invalid credentials",
    403: "Not allowed for this caller",
    404: "Not found (or another tenant's)",
    409: "Conflict",
    413: "Body too large",
    415: "Unsupported Content-Type, or a charset other than UTF-8",
    422: "Invalid input; `errors` names each location",
}
BODY_ERRORS = (400, 413, 415)
"""What reading any body may answer: every route reads it the same way (api/body.py)."""


@dataclass(frozen=True)
class OneOf:
    """One of several models, told apart by a field (``discriminator``) naming each."""

    discriminator: str
    models: Mapping[str, type[BaseModel]]


Schema = type[BaseModel] | OneOf | Mapping[str, Any]
"""A model, a choice of models, or a JSON schema written out (forms, text, files)."""


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["path", "query", "header"]
    description: str | None = None
    schema: Mapping[str, Any] = field(default_factory=lambda: dict(TEXT))
    required: bool = False


def path(name: str, description: str, **schema: Any) -> Param:
    return Param(name, "path", description, {"type": "string", **schema}, required=True)


def query(name: str, description: str | None = None, **schema: Any) -> Param:
    return Param(name, "query", description, schema or dict(TEXT))


def header(name: str, description: str, required: bool = False) -> Param:
    return Param(name, "header", description, required=required)


@dataclass(frozen=True)
class Body:
    schema: Schema
    media: tuple[str, ...] = (JSON,)
    required: bool = True
    example: Mapping[str, Any] | None = None


def form(schema: Mapping[str, Any]) -> Body:
    """A page's form post: urlencoded or multipart, as browsers send it."""
    return Body(schema, (FORM, MULTIPART))


@dataclass(frozen=True)
class Response:
    description: str
    schema: Schema | None = None
    media: str = JSON


def page(description: str) -> Response:
    """A server-rendered HTML page."""
    return Response(description, TEXT, HTML)


@dataclass(frozen=True)
class Operation:
    tag: str
    summary: str
    security: Security
    responses: Mapping[int, Response]
    description: str | None = None
    params: tuple[Param, ...] | None = None
    """``()`` lists no parameters; ``None`` leaves the list out."""
    body: Body | None = None
    errors: tuple[int, ...] = ()
    """JSON error answers (:data:`ERRORS`); one in ``responses`` says it otherwise."""


# --------------------------------------------------------------------------- rendering


def schema_of(schema: Schema) -> dict[str, Any]:
    if isinstance(schema, OneOf):
        return {
            "oneOf": [_ref(model) for model in schema.models.values()],
            "discriminator": {
                "propertyName": schema.discriminator,
                "mapping": {name: _ref(m)["$ref"] for name, m in schema.models.items()},
            },
        }
    if isinstance(schema, type):
        return _ref(schema)
    return dict(schema)


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _param(param: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": param.name, "in": param.where, "required": param.required}
    if param.description is not None:
        out["description"] = param.description
    return {**out, "schema": dict(param.schema)}


def _body(body: Body) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema_of(body.schema)}
    if body.example is not None:
        media["example"] = body.example
    return {"required": body.required, "content": {kind: media for kind in body.media}}


def _response(response: Response) -> dict[str, Any]:
    if response.schema is None:
        return {"description": response.description}
    content = {response.media: {"schema": schema_of(response.schema)}}
    return {"description": response.description, "content": content}


def scoped(security: Security) -> bool:
    """Whether the operation needs a tenant key with a scope (and so may answer 403)."""
    return any(scheme == "bearer" and scopes for scheme, scopes in security)


def render(op: Operation) -> dict[str, Any]:
    """The operation as an OpenAPI 3.1 operation object."""
    codes = {*op.errors, 403} if scoped(op.security) else set(op.errors)
    answers = {code: Response(ERRORS[code], Error) for code in codes}
    answers.update(op.responses)
    out: dict[str, Any] = {"tags": [op.tag], "summary": op.summary}
    if op.description is not None:
        out["description"] = op.description
    out["security"] = [{scheme: list(scopes)} for scheme, scopes in op.security]
    if op.params is not None:
        out["parameters"] = [_param(param) for param in op.params]
    if op.body is not None:
        out["requestBody"] = _body(op.body)
    out["responses"] = {str(code): _response(answers[code]) for code in sorted(answers)}
    return out


def _models(schema: Schema | None) -> Iterator[type[BaseModel]]:
    if isinstance(schema, OneOf):
        yield from schema.models.values()
    elif isinstance(schema, type):
        yield schema


def read_models(op: Operation) -> Iterator[type[BaseModel]]:
    """The models a request is validated with."""
    if op.body is not None:
        yield from _models(op.body.schema)


def written_models(op: Operation) -> Iterator[type[BaseModel]]:
    """The models an answer is serialised with (the error model included)."""
    if op.errors or scoped(op.security):
        yield Error
    for response in op.responses.values():
        yield from _models(response.schema)


SECURITY_SCHEMES: Mapping[str, Mapping[str, str]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "bbk_ API key",
        "description": (
            "A tenant API key: `Authorization: Bearer bbk_...`. Each key has scopes"
            " (events, directory, status, protected, webhooks, admin); an operation"
            " names the scope it needs, and a key without it gets 403. A revoked or"
            " expired key gets 401."
        ),
    },
    "guardianToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "guardian token",
        "description": "A token from POST /v1/guardians/{guardian_id}/tokens.",
    },
    "standardWebhooks": {
        "type": "apiKey",
        "in": "header",
        "name": "webhook-signature",
        "description": (
            "Standard Webhooks signing (https://www.standardwebhooks.com/): headers"
            " `webhook-id`, `webhook-timestamp` (Unix seconds, within 5 minutes) and"
            " `webhook-signature` (`v1,<base64 HMAC-SHA256>` over"
            " `<id>.<timestamp>.<body>` with the tenant's `whsec_` secret), plus"
            " `X-Budbringer-Tenant: <tenant id>`."
        ),
    },
}
"""The schemes :data:`Security` names (gateway/auth.py checks them)."""
