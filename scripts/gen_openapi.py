"""Generate gateway/openapi.json from the routes described here and the pydantic models.

Run from the repository root after changing a route or a model:

    .venv/bin/python -m scripts.gen_openapi          # write gateway/openapi.json
    .venv/bin/python -m scripts.gen_openapi --check  # exit 1 if the file is stale

Request bodies are the models the handlers validate with, and responses are the
models the handlers answer with (each beside its handler in gateway/api, written by
gateway/api/responses.py); this script only collects them with the routes, the
security and the examples. tests/test_openapi.py and tests/test_api_responses.py check
the running app against the document.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from pkgutil import iter_modules
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway import __version__, api, models
from gateway import settings as config
from gateway.api.absence import AbsenceReply, AbsenceReplyAck, AbsenceReport
from gateway.api.accepted import EventAccepted
from gateway.api.attachment_models import AttachmentView
from gateway.api.directory import (
    DirectoryApplied,
    DirectoryDeleted,
    GuardianToken,
    ProtectionView,
)
from gateway.api.events import EVENT_TYPES
from gateway.api.guardian import DeviceList, InboxMessage, InboxPage, ReadAck
from gateway.api.keys import KeyCreate, KeyCreated, KeyList
from gateway.api.oneroster import OneRosterApplied
from gateway.api.ops import Health, Readiness
from gateway.api.responses import Error
from gateway.api.status_models import CancelAnswer, MessageStatus
from gateway.api.webhooks import (
    WebhookEndpointCreate,
    WebhookEndpointList,
    WebhookEndpointPatch,
    WebhookEndpointView,
    WebhookEndpointWithSecret,
    WebhookMessageDetail,
    WebhookMessageList,
    WebhookMessageView,
)
from gateway.models import (
    Device,
    DirectoryBatch,
    DirectoryDeletion,
    FlagChange,
    Person,
    Preferences,
    ProtectionChange,
    RelationFlags,
)
from gateway.settings import AbsenceSettings, EscalationSettings
from scripts.openapi_pages import page_paths

OUTPUT = Path(__file__).resolve().parents[1] / "gateway" / "openapi.json"
REF = "#/components/schemas/{model}"


# Keyset paging by (created_at, id): gateway/api/paging.py.
BEFORE_ID: dict[str, Any] = {
    "name": "before_id",
    "in": "query",
    "required": False,
    "description": (
        "Page: the `next_before_id` of the previous page, with `before`. Rows sharing one"
        " `created_at` are paged by id, so none is skipped; `before` alone lists only rows"
        " created earlier"
    ),
    "schema": {"type": "string", "maxLength": 128},
}


# --------------------------------------------------------------------------- helpers


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def json_body(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"required": True, "content": {"application/json": media}}


def ok(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(model)}}}


def errors(*codes: int) -> dict[str, Any]:
    words = {
        401: "Missing or invalid credentials",
        403: "Not allowed for this caller",
        404: "Not found (or another tenant's)",
        409: "Conflict",
        400: "Malformed body: not UTF-8 (or with a byte order mark), JSON nested deeper"
        " than 32 levels, a number longer than 40 characters, a form that cannot be read",
        413: "Body too large",
        415: "Unsupported Content-Type, or a charset other than UTF-8",
        422: "Invalid input; `errors` names each location",
    }
    if 413 in codes:  # every route that reads a body reads it the same way (api/body.py)
        codes = (400, *codes, 415) if 415 not in codes else (400, *codes)
    return {str(code): ok(Error, words[code]) for code in sorted(codes)}


def path_param(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def header_param(name: str, description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


def html(description: str) -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    }


TENANT: list[dict[str, list[str]]] = [{"bearer": []}]


def tenant(scope: str) -> list[dict[str, list[str]]]:
    """A tenant API key with this scope (README "Keys and scopes"); 403 without it."""
    return [{"bearer": [scope]}]


GUARDIAN: list[dict[str, list[str]]] = [{"guardianToken": []}]
ID = {"minLength": 1, "maxLength": 128, "pattern": r"^[A-Za-z0-9_.:\-]+$"}


EVENT_EXAMPLE = {
    "id": "evt-2026-000123",
    "type": "message.created",
    "timestamp": "2026-11-27T09:00:00Z",
    "data": {
        "sender_id": "s1",
        "sender_name": "Kontaktlærer 5A",
        "audience": {"groups": ["g1"]},
        "category": "general",
        "subject": "Tur til skogen fredag",
        "body": "Husk matpakke og gode sko.",
    },
}


def event_body() -> dict[str, Any]:
    models = [kind.model for kind in EVENT_TYPES.values()]
    return {
        "oneOf": [ref(model) for model in models],
        "discriminator": {
            "propertyName": "type",
            "mapping": {
                name: REF.format(model=k.model.__name__) for name, k in EVENT_TYPES.items()
            },
        },
    }


# --------------------------------------------------------------------------- paths


def ops_paths() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "summary": "Liveness: the process runs",
                "security": [],
                "responses": {"200": ok(Health, "Alive")},
            }
        },
        "/readyz": {
            "get": {
                "tags": ["operations"],
                "summary": "Readiness: the store answers (events can be accepted); channel states",
                "security": [],
                "responses": {
                    "200": ok(Readiness, "Ready"),
                    "503": ok(Readiness, "The store does not answer; `reasons` lists the codes"),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["operations"],
                "summary": "Prometheus metrics (text exposition format)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["operations"],
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def event_paths() -> dict[str, Any]:
    return {
        "/v1/events": {
            "post": {
                "tags": ["events"],
                "summary": "Accept an event (idempotent on the event id)",
                "description": (
                    "Authenticate with the tenant API key, or sign the request the Standard"
                    " Webhooks way with the tenant's `whsec_` secret and name the tenant in"
                    " `X-Budbringer-Tenant`. `webhook-id` must equal the event `id`. The event is"
                    " stored durably before the 202. Replaying it gives the same answer with"
                    " `duplicate: true`; the same id with another body is 409."
                ),
                "security": [{"bearer": ["events"]}, {"standardWebhooks": []}],
                "parameters": [
                    header_param("webhook-id", "Standard Webhooks message id (= event id)"),
                    header_param("webhook-timestamp", "Unix seconds; ±5 minutes"),
                    header_param("X-Budbringer-Tenant", "Tenant id; required when signed"),
                ],
                "requestBody": json_body(event_body(), EVENT_EXAMPLE),
                "responses": {
                    "202": ok(EventAccepted, "Accepted (or accepted before: duplicate)"),
                    **errors(401, 409, 413, 422),
                },
            }
        }
    }


def status_paths() -> dict[str, Any]:
    return {
        "/v1/messages/{id}": {
            "get": {
                "tags": ["status"],
                "summary": "A message with its deliveries, their history, and replies",
                "security": tenant("status"),
                "parameters": [path_param("id", "Message id (from the 202)")],
                "responses": {
                    "200": ok(MessageStatus, "Message status"),
                    **errors(401, 404),
                },
            }
        },
        "/v1/messages/{id}/cancel": {
            "post": {
                "tags": ["status"],
                "summary": "Cancel a scheduled message before it starts",
                "description": (
                    "Only a message.created with send_at, until its planning starts at"
                    " send_at; 409 once it has started or if the message was not scheduled."
                    " Cancelling again answers the same."
                ),
                "security": tenant("events"),
                "parameters": [path_param("id", "Message id (from the 202)")],
                "responses": {
                    "200": ok(CancelAnswer, "Cancelled"),
                    **errors(401, 404, 409),
                },
            }
        },
    }


def key_paths() -> dict[str, Any]:
    admin = tenant("admin")
    return {
        "/v1/keys": {
            "post": {
                "tags": ["keys"],
                "summary": "Another API key for the tenant, with its scopes and optional expiry",
                "description": (
                    "The key is in the answer and nowhere else (only its hash is stored). A"
                    " key can grant only scopes it has itself (403 otherwise). Rotate by"
                    " creating a new key, moving the clients, and revoking the old one."
                ),
                "security": admin,
                "requestBody": json_body(ref(KeyCreate)),
                "responses": {
                    "201": ok(KeyCreated, "The new key, shown this once"),
                    **errors(401, 403, 413, 422),
                },
            },
            "get": {
                "tags": ["keys"],
                "summary": "The tenant's keys, revoked and expired ones included (never the keys)",
                "security": admin,
                "responses": {"200": ok(KeyList, "Keys, oldest first"), **errors(401, 403)},
            },
        },
        "/v1/keys/{key_id}": {
            "delete": {
                "tags": ["keys"],
                "summary": "Revoke a key: it is refused from now on",
                "security": admin,
                "parameters": [path_param("key_id", "Key id (from POST or GET /v1/keys)")],
                "responses": {"204": {"description": "Revoked"}, **errors(401, 403, 404)},
            }
        },
    }


def escalation_paths() -> dict[str, Any]:
    policy = ok(EscalationSettings, "The policy in force (settings with the override over them)")
    return {
        "/v1/settings/escalation": {
            "get": {
                "tags": ["settings"],
                "summary": "The tenant's escalation policy in force",
                "security": tenant("admin"),
                "responses": {"200": policy, **errors(401)},
            },
            "put": {
                "tags": ["settings"],
                "summary": "Override any part of the escalation policy (`{}` removes the override)",
                "security": tenant("admin"),
                "requestBody": json_body(ref(EscalationSettings)),
                "responses": {"200": policy, **errors(401, 413, 422)},
            },
        }
    }


def absence_paths() -> dict[str, Any]:
    settings = ok(AbsenceSettings, "The settings in force (with the tenant's override)")
    return {
        "/v1/settings/absence": {
            "get": {
                "tags": ["settings"],
                "summary": "The tenant's absence settings in force",
                "security": tenant("admin"),
                "responses": {"200": settings, **errors(401)},
            },
            "put": {
                "tags": ["settings"],
                "summary": "Override the de-duplication window or the staff notice delay"
                " (`{}` removes the override)",
                "security": tenant("admin"),
                "requestBody": json_body(ref(AbsenceSettings)),
                "responses": {"200": settings, **errors(401, 413, 422)},
            },
        },
        "/v1/me/absences": {
            "post": {
                "tags": ["parent app"],
                "summary": "Report an absence (the `absence.reported` flow)",
                "description": (
                    "The child's contact teachers (else the unit's staff) are told, the"
                    " reporter gets a confirmation, the other guardians with rights are"
                    " informed without being told who reported. `id` makes a retry"
                    " idempotent; the same `id` with another report is 409."
                ),
                "security": GUARDIAN,
                "requestBody": json_body(ref(AbsenceReport)),
                "responses": {
                    "202": ok(EventAccepted, "Accepted (or accepted before: duplicate)"),
                    **errors(401, 403, 409, 413, 422),
                },
            }
        },
        "/v1/me/inbox/{message_id}/absence-reply": {
            "post": {
                "tags": ["parent app"],
                "summary": "Answer an absence alert (an `absence.explained` webhook; a read)",
                "security": GUARDIAN,
                "parameters": [path_param("message_id", "Message id of the alert")],
                "requestBody": json_body(ref(AbsenceReply)),
                "responses": {
                    "200": ok(AbsenceReplyAck, "Recorded"),
                    **errors(401, 404, 413, 422),
                },
            }
        },
    }


def directory_paths() -> dict[str, Any]:
    return {
        "/v1/directory": {
            "post": {
                "tags": ["directory"],
                "summary": "Upsert a directory batch, all or nothing",
                "security": tenant("directory"),
                "requestBody": json_body(ref(DirectoryBatch)),
                "responses": {
                    "200": ok(DirectoryApplied, "Applied; counts per kind"),
                    **errors(401, 413, 422),
                },
            }
        },
        "/v1/directory/delete": {
            "post": {
                "tags": ["directory"],
                "summary": "Delete directory rows by id, all or nothing",
                "security": tenant("directory"),
                "requestBody": json_body(ref(DirectoryDeletion)),
                "responses": {
                    "200": ok(DirectoryDeleted, "Deleted; counts per kind"),
                    **errors(401, 413, 422),
                },
            }
        },
        "/v1/relations/{child_id}/{guardian_id}/flags/{flag}": {
            "put": {
                "tags": ["directory"],
                "summary": "Set a manual relation flag with a reason (survives re-imports)",
                "security": tenant("directory"),
                "parameters": [
                    path_param("child_id", "Child id", **ID),
                    path_param("guardian_id", "Guardian id", **ID),
                    path_param("flag", "Which flag", enum=["information_granted", "blocked"]),
                ],
                "requestBody": json_body(ref(FlagChange)),
                "responses": {
                    "200": ok(RelationFlags, "The relation's flags after the change"),
                    **errors(401, 404, 413, 422),
                },
            }
        },
        "/v1/persons/{person_id}": {
            "get": {
                "tags": ["directory"],
                "summary": "One person record (a protected person: only with the protected scope)",
                "security": tenant("directory"),
                "parameters": [path_param("person_id", "Person id")],
                "responses": {"200": ok(Person, "The person"), **errors(401, 403, 404)},
            }
        },
        "/v1/persons/{person_id}/protection": {
            "get": {
                "tags": ["directory"],
                "summary": "A person's protection level and its history (who, when, why)",
                "description": "For a protected person only with the `protected` scope.",
                "security": TENANT,
                "parameters": [path_param("person_id", "Person id")],
                "responses": {
                    "200": ok(ProtectionView, "Level and history"),
                    **errors(401, 403, 404),
                },
            },
            "put": {
                "tags": ["directory"],
                "summary": "Set protection with a reason: the only way to lower it",
                "description": (
                    "Imports (directory batch, OneRoster) only ever raise protection; an"
                    " absent or lower level keeps the stored one. This call sets any level and"
                    " keeps the change in the history; lowering needs a key with the"
                    " `protected` scope, and the history is shown only to such a key."
                ),
                "security": TENANT,
                "parameters": [path_param("person_id", "Person id")],
                "requestBody": json_body(ref(ProtectionChange)),
                "responses": {
                    "200": ok(ProtectionView, "Level and history after the change"),
                    **errors(401, 403, 404, 413, 422),
                },
            },
        },
        "/v1/guardians/{guardian_id}/tokens": {
            "post": {
                "tags": ["directory"],
                "summary": "Issue a short-lived guardian token for the parent app",
                "security": tenant("directory"),
                "parameters": [path_param("guardian_id", "Guardian (or adult pupil) id")],
                "responses": {
                    "201": ok(GuardianToken, "Token issued"),
                    **errors(401, 403, 404),
                },
            }
        },
    }


def oneroster_paths() -> dict[str, Any]:
    def flag(name: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"type": "boolean", "default": False},
        }

    return {
        "/v1/directory/oneroster": {
            "post": {
                "tags": ["directory"],
                "summary": "Import a zipped OneRoster 1.1/1.2 CSV export, all or nothing",
                "description": (
                    "The body is a zip of `manifest.csv` and the bulk CSV files. Errors name"
                    " `[file, row, field]` (row: the line in the CSV, header = 1), never the"
                    " value. New relations of parents and guardians get parental"
                    " responsibility; existing relations, protection and manual flags are kept."
                ),
                "security": tenant("directory"),
                "parameters": [
                    {
                        "name": "phone_region",
                        "in": "query",
                        "required": False,
                        "description": "Region of numbers without a country code",
                        "schema": {"type": "string", "default": "NO", "pattern": "^[A-Za-z]{2}$"},
                    },
                    flag("assume_minor", "Placeholder birth date (age 10) for students without"),
                    flag("skip_invalid_contacts", "Leave invalid phones/emails out, with warnings"),
                    {
                        "name": "responsibility_roles",
                        "in": "query",
                        "required": False,
                        "description": "Roles whose new relations get parental responsibility",
                        "schema": {"type": "string", "default": "parent,guardian"},
                    },
                    flag("dry_run", "Validate only; write nothing"),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/zip": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
                "responses": {
                    "200": ok(OneRosterApplied, "Imported; counts per kind, skipped, warnings"),
                    **errors(401, 413, 415, 422),
                },
            }
        }
    }


def guardian_paths() -> dict[str, Any]:
    message_id = path_param("message_id", "Message id")
    device_id = path_param("device_id", "Device id", **ID)
    return {
        "/v1/me/inbox": {
            "get": {
                "tags": ["parent app"],
                "summary": "The guardian's in-app messages, newest first",
                "security": GUARDIAN,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "required": False,
                        "description": "Page: the `next_before` of the previous page",
                        "schema": {"type": "string", "format": "date-time"},
                    },
                    BEFORE_ID,
                ],
                "responses": {"200": ok(InboxPage, "A page of the inbox"), **errors(401, 422)},
            }
        },
        "/v1/me/inbox/{message_id}": {
            "get": {
                "tags": ["parent app"],
                "summary": "One inbox message",
                "security": GUARDIAN,
                "parameters": [message_id],
                "responses": {
                    "200": ok(InboxMessage, "The message, with its attachments"),
                    **errors(401, 404),
                },
            }
        },
        "/v1/me/inbox/{message_id}/read": {
            "post": {
                "tags": ["parent app"],
                "summary": "Mark a message read (the first read is kept)",
                "security": GUARDIAN,
                "parameters": [message_id],
                "responses": {"200": ok(ReadAck, "Marked read"), **errors(401, 404)},
            }
        },
        "/v1/me/preferences": {
            "get": {
                "tags": ["parent app"],
                "summary": "The guardian's preferences",
                "security": GUARDIAN,
                "responses": {"200": ok(Preferences, "Preferences"), **errors(401)},
            },
            "put": {
                "tags": ["parent app"],
                "summary": "Replace the preferences (absence/emergency cannot be switched off)",
                "security": GUARDIAN,
                "requestBody": json_body(ref(Preferences)),
                "responses": {
                    "200": ok(Preferences, "Stored preferences"),
                    **errors(401, 413, 422),
                },
            },
        },
        "/v1/me/devices": {
            "get": {
                "tags": ["parent app"],
                "summary": "The guardian's registered devices",
                "security": GUARDIAN,
                "responses": {"200": ok(DeviceList, "Devices"), **errors(401)},
            }
        },
        "/v1/me/devices/{device_id}": {
            "put": {
                "tags": ["parent app"],
                "summary": "Register or update a push device (`id` may be left out)",
                "security": GUARDIAN,
                "parameters": [device_id],
                "requestBody": json_body(ref(Device)),
                "responses": {
                    "200": ok(Device, "The stored device"),
                    **errors(401, 413, 422),
                },
            },
            "delete": {
                "tags": ["parent app"],
                "summary": "Remove a device",
                "security": GUARDIAN,
                "parameters": [device_id],
                "responses": {"204": {"description": "Removed"}, **errors(401, 404)},
            },
        },
    }


def _twilio_form(fields: dict[str, str], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        name: {"type": "string", "description": text}
                        for name, text in fields.items()
                    },
                    "required": required,
                    "additionalProperties": True,
                }
            }
        },
    }


def provider_paths() -> dict[str, Any]:
    signature = header_param(
        "X-Twilio-Signature",
        "Twilio's signature of the public URL and the form (RequestValidator)",
        required=True,
    )
    refused = {
        "403": ok(Error, "Missing or invalid signature, or another account's webhook"),
        "404": ok(Error, "Twilio is not configured"),
        "422": ok(Error, "Not a form post"),
    }
    return {
        "/v1/providers/twilio/status": {
            "post": {
                "tags": ["providers"],
                "summary": "Twilio message status callback",
                "description": "Always an empty 200 once verified, so Twilio never retries.",
                "security": [],
                "parameters": [signature],
                "requestBody": _twilio_form(
                    {
                        "MessageSid": "Twilio's message id",
                        "MessageStatus": "queued, sent, delivered, undelivered, failed, ...",
                        "ErrorCode": "Twilio error code, if any",
                        "AccountSid": "The account",
                    },
                    ["MessageSid", "MessageStatus"],
                ),
                "responses": {"200": {"description": "Applied or ignored"}, **refused},
            }
        },
        "/v1/providers/twilio/inbound": {
            "post": {
                "tags": ["providers"],
                "summary": "Inbound SMS (a reply) from Twilio",
                "security": [],
                "parameters": [signature],
                "requestBody": _twilio_form(
                    {
                        "MessageSid": "Twilio's message id",
                        "From": "Sender (E.164)",
                        "To": "Our number",
                        "Body": "The text",
                        "AccountSid": "The account",
                    },
                    ["MessageSid", "From"],
                ),
                "responses": {
                    "200": {
                        "description": "Stored (or ignored): an empty TwiML response",
                        "content": {"text/xml": {"schema": {"type": "string"}}},
                    },
                    **refused,
                },
            }
        },
    }


FILE = {
    "description": (
        "The file, with `Content-Disposition: attachment`, `X-Content-Type-Options: nosniff`"
        " and its real type"
    ),
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


def attachment_paths() -> dict[str, Any]:
    attachment_id = path_param("id", "The attachment id", **ID)
    return {
        "/v1/attachments": {
            "post": {
                "tags": ["events"],
                "summary": 'Upload a file for a message (README "Attachments")',
                "description": (
                    "The body is the file itself, streamed; its type is read from its bytes:"
                    " PDF, JPEG, PNG, DOCX, HEIC (converted to JPEG). Images are re-encoded"
                    " without EXIF. Name the returned id in `message.created`'s"
                    " `data.attachments`."
                ),
                "security": tenant("events"),
                "parameters": [
                    {
                        "name": "name",
                        "in": "query",
                        "required": False,
                        "description": "The file name shown to recipients",
                        "schema": {"type": "string", "maxLength": 1000},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                "responses": {
                    "201": ok(AttachmentView, "Stored"),
                    **{
                        code: value
                        for code, value in errors(401, 413, 422).items()
                        if code != "400"
                    },
                    "415": ok(Error, "Not an allowed kind of file (judged from its bytes)"),
                },
            }
        },
        "/v1/me/inbox/{message_id}/files/{id}": {
            "get": {
                "tags": ["parent app"],
                "summary": "Download an attachment of a message in the guardian's inbox",
                "security": GUARDIAN,
                "parameters": [path_param("message_id", "The message id", **ID), attachment_id],
                "responses": {"200": FILE, **errors(401, 404)},
            }
        },
        "/r/{token}/files/{id}": {
            "get": {
                "tags": ["pages"],
                "summary": "Download an attachment of the message behind a read link",
                "security": [],
                "parameters": [
                    path_param("token", "The opaque token of a personal read link"),
                    attachment_id,
                ],
                "responses": {
                    "200": FILE,
                    "404": {
                        "description": "Friendly page: the link is forged, or no such file",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "410": {
                        "description": "Friendly page: the link expired or the message is gone",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                },
            }
        },
    }


def read_link_paths() -> dict[str, Any]:
    token = path_param(
        "token", "The opaque token of a personal read link (64 base64url characters)"
    )
    page = {"content": {"text/html": {"schema": {"type": "string"}}}}
    invalid = {"description": "Friendly page (nb + en): the link is forged or changed", **page}
    gone = {
        "description": "Friendly page (nb + en): the link has expired or the message is gone",
        **page,
    }
    return {
        "/r/{token}": {
            "get": {
                "tags": ["pages"],
                "summary": "Read-link page: the message in the guardian's language",
                "description": (
                    "Server-rendered HTML with a confirm button. Records at most `opened`"
                    " (link scanners fetch links too); never `read`."
                ),
                "security": [],
                "parameters": [
                    token,
                    {
                        "name": "done",
                        "in": "query",
                        "required": False,
                        "description": "`1` after a confirmation: the page says thank you",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    **html("The message, with the confirm form unless already read"),
                    "404": invalid,
                    "410": gone,
                },
            },
            "post": {
                "tags": ["pages"],
                "summary": "Confirm the read (the page's form), then 303 back to the page",
                "security": [],
                "parameters": [token],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "csrf": {
                                        "type": "string",
                                        "description": "The hidden field of the page's form",
                                    }
                                },
                                "required": ["csrf"],
                            }
                        }
                    },
                },
                "responses": {
                    "303": {"description": "Read recorded; see `/r/{token}?done=1`"},
                    **errors(400),
                    "403": {"description": "Friendly page: missing or wrong form field", **page},
                    "404": invalid,
                    "410": gone,
                },
            },
        },
        "/static/read.css": {
            "get": {
                "tags": ["pages"],
                "summary": "Stylesheet of the read-link page",
                "security": [],
                "responses": {
                    "200": {
                        "description": "CSS",
                        "content": {"text/css": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def unsubscribe_paths() -> dict[str, Any]:
    token = path_param(
        "token", "The token of the email's personal link (the read link's, 64 characters)"
    )
    page = {"content": {"text/html": {"schema": {"type": "string"}}}}
    invalid = {"description": "Friendly page (nb + en): forged link, or not an email's", **page}
    gone = {
        "description": "Friendly page (nb + en): the link has expired or the message is gone",
        **page,
    }
    form = {
        "type": "object",
        "properties": {
            "List-Unsubscribe": {
                "type": "string",
                "enum": ["One-Click"],
                "description": "RFC 8058 one-click: what a mail provider posts",
            },
            "csrf": {"type": "string", "description": "The hidden field of the page's form"},
        },
    }
    return {
        "/u/{token}": {
            "get": {
                "tags": ["pages"],
                "summary": "Unsubscribe page: asks before switching email off",
                "description": (
                    "Server-rendered HTML in the recipient's language with a confirm button;"
                    " changes nothing (link scanners fetch links too)."
                ),
                "security": [],
                "parameters": [token],
                "responses": {
                    **html("The question, or what is already so"),
                    "404": invalid,
                    "410": gone,
                },
            },
            "post": {
                "tags": ["pages"],
                "summary": "Stop email for the message's category (RFC 8058 one-click)",
                "description": (
                    "The target of `List-Unsubscribe` with `List-Unsubscribe-Post:"
                    " List-Unsubscribe=One-Click`. Takes the one-click body (no CSRF field)"
                    " or the page's form with its CSRF field. Email leaves the category in the"
                    " recipient's preferences; absence and emergency alerts cannot be switched"
                    " off, so nothing changes for them and the page says so."
                ),
                "security": [],
                "parameters": [token],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": form},
                        "multipart/form-data": {"schema": form},
                    },
                },
                "responses": {
                    **html("Done (or: cannot be switched off by email)"),
                    **errors(400),
                    "403": {"description": "Friendly page: neither one-click nor the form", **page},
                    "404": invalid,
                    "410": gone,
                },
            },
        },
    }


def webhook_paths() -> dict[str, Any]:
    endpoint_id = path_param("id", "Endpoint id")
    message_id = path_param("id", "Webhook message id (the `webhook-id` header)")
    query = [
        {
            "name": "status",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["pending", "delivered", "failed"]},
        },
        {"name": "endpoint_id", "in": "query", "required": False, "schema": {"type": "string"}},
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
        },
        {
            "name": "before",
            "in": "query",
            "required": False,
            "description": "Page: the `next_before` of the previous page",
            "schema": {"type": "string", "format": "date-time"},
        },
        BEFORE_ID,
    ]
    return {
        "/v1/webhooks/endpoints": {
            "post": {
                "tags": ["webhooks"],
                "summary": "Add a webhook endpoint; its `whsec_` secret is shown this once",
                "description": (
                    "Events: `delivery.updated`, `message.read`, `message.reached`,"
                    " `reply.received`, `absence.explained`, `absence.unrouted` (all when"
                    " `event_types` is left"
                    " out). Each is POSTed"
                    " as `{type, timestamp, data}` with Standard Webhooks headers"
                    " `webhook-id` (stable across retries), `webhook-timestamp` and"
                    " `webhook-signature`. https is required in production."
                ),
                "security": tenant("webhooks"),
                "requestBody": json_body(ref(WebhookEndpointCreate)),
                "responses": {
                    "201": ok(WebhookEndpointWithSecret, "Created, with its secret"),
                    **errors(401, 409, 413, 422),
                },
            },
            "get": {
                "tags": ["webhooks"],
                "summary": "The tenant's webhook endpoints (no secrets)",
                "security": tenant("webhooks"),
                "responses": {"200": ok(WebhookEndpointList, "Endpoints"), **errors(401)},
            },
        },
        "/v1/webhooks/endpoints/{id}": {
            "get": {
                "tags": ["webhooks"],
                "summary": "One webhook endpoint (no secret)",
                "security": tenant("webhooks"),
                "parameters": [endpoint_id],
                "responses": {"200": ok(WebhookEndpointView, "Endpoint"), **errors(401, 404)},
            },
            "patch": {
                "tags": ["webhooks"],
                "summary": "Change url, event_types, description or enabled (re-enable)",
                "security": tenant("webhooks"),
                "parameters": [endpoint_id],
                "requestBody": json_body(ref(WebhookEndpointPatch)),
                "responses": {
                    "200": ok(WebhookEndpointView, "Changed"),
                    **errors(401, 404, 413, 422),
                },
            },
            "delete": {
                "tags": ["webhooks"],
                "summary": "Delete an endpoint and its outbox messages",
                "security": tenant("webhooks"),
                "parameters": [endpoint_id],
                "responses": {"204": {"description": "Deleted"}, **errors(401, 404)},
            },
        },
        "/v1/webhooks/endpoints/{id}/rotate-secret": {
            "post": {
                "tags": ["webhooks"],
                "summary": "A new secret, shown once; the old one also signs for a grace period",
                "security": tenant("webhooks"),
                "parameters": [endpoint_id],
                "responses": {
                    "200": ok(WebhookEndpointWithSecret, "Rotated, with the new secret"),
                    **errors(401, 404),
                },
            }
        },
        "/v1/webhooks/messages": {
            "get": {
                "tags": ["webhooks"],
                "summary": "The webhook outbox, newest first (`?status=failed` for attention)",
                "security": tenant("webhooks"),
                "parameters": query,
                "responses": {
                    "200": ok(WebhookMessageList, "A page of the outbox"),
                    **errors(401, 422),
                },
            }
        },
        "/v1/webhooks/messages/{id}": {
            "get": {
                "tags": ["webhooks"],
                "summary": "One webhook message with every attempt",
                "security": tenant("webhooks"),
                "parameters": [message_id],
                "responses": {"200": ok(WebhookMessageDetail, "Message"), **errors(401, 404)},
            }
        },
        "/v1/webhooks/messages/{id}/replay": {
            "post": {
                "tags": ["webhooks"],
                "summary": "Send a failed message again, now, with the same webhook-id",
                "security": tenant("webhooks"),
                "parameters": [message_id],
                "responses": {
                    "200": ok(WebhookMessageView, "Pending again"),
                    **errors(401, 404, 409),
                },
            }
        },
    }


# --------------------------------------------------------------------------- document


def _named(node: Any, into: set[str], read: set[str], written: set[str]) -> None:
    """Collect the model names ``node`` refers to: under a requestBody they are read,
    under responses written."""
    if isinstance(node, list):
        for item in node:
            _named(item, into, read, written)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                into.add(value.rsplit("/", 1)[1])
            else:
                target = {"requestBody": read, "responses": written}.get(key, into)
                _named(value, target, read, written)


def _models() -> dict[str, type[BaseModel]]:
    """Every pydantic model of the API modules (each beside its handler), the domain
    models and the settings, by name."""
    modules = [importlib.import_module(f"gateway.api.{m.name}") for m in iter_modules(api.__path__)]
    found: dict[str, type[BaseModel]] = {}
    for module in [*modules, models, config]:
        for name, value in vars(module).items():
            model = isinstance(value, type) and issubclass(value, BaseModel)
            if model and value is not BaseModel and found.setdefault(name, value) is not value:
                raise SystemExit(f"two models are named {name}: rename one")
    return found


def components(paths: dict[str, Any]) -> dict[str, Any]:
    """The schemas of the models the paths name: a request body's as validated, an
    answer's as serialised (a model that is both is documented as read)."""
    read: set[str] = set()
    written: set[str] = set()
    _named(paths, written, read, written)
    pool = _models()
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((pool[name], "validation") for name in sorted(read)),
        *((pool[name], "serialization") for name in sorted(written - read)),
    ]
    _, top = models_json_schema(pairs, ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    return {
        "schemas": dict(sorted(schemas.items())),
        "securitySchemes": {
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
        },
    }


def build_spec() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    paths: dict[str, Any] = {}
    for part in (
        ops_paths,
        event_paths,
        status_paths,
        escalation_paths,
        key_paths,
        absence_paths,
        directory_paths,
        oneroster_paths,
        guardian_paths,
        provider_paths,
        webhook_paths,
        read_link_paths,
        attachment_paths,
        unsubscribe_paths,
    ):
        paths.update(part())
    paths.update(page_paths(errors))
    # Every operation that takes a tenant key may answer 403: the key lacks the scope.
    for operations in paths.values():
        for operation in operations.values():
            if any(req.get("bearer") for req in operation.get("security", [])):
                operation["responses"].setdefault("403", errors(403)["403"])
                operation["responses"] = dict(sorted(operation["responses"].items()))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Budbringer",
            "version": __version__,
            "description": (
                "Messaging gateway for home–school communication. Errors are JSON:"
                ' `{"error": code, "message": text, "errors": [{"loc", "message", "type"}]}`.'
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": TENANT,
        "paths": dict(sorted(paths.items())),
        "components": components(paths),
    }


def render() -> str:
    return json.dumps(build_spec(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python -m scripts.gen_openapi", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
