"""A local server that behaves like Firebase Cloud Messaging (HTTP v1) and Google's OAuth2
token endpoint, for tests and benchmarks.

``POST /token`` runs the JWT-bearer grant the way oauth2.googleapis.com does: the
assertion's RS256 signature is verified against the public key of a throwaway service
account (see ``write_service_account``), and its iss/aud/scope/iat/exp claims are checked.

``POST /v1/projects/{project}/messages:send`` checks the bearer token, validates the
v1 body, records it and answers ``{"name": "projects/<p>/messages/<id>"}`` — or answers
FCM's real error bodies for dead tokens and scripted failures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from google.auth import exceptions as auth_exceptions
from google.auth import jwt

from gateway.bench import sinks as bench_sinks

JWT_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth always signs the assertion for Google's endpoint, whatever token_uri says.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
FCM_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/firebase.messaging",
        "https://www.googleapis.com/auth/cloud-platform",
    }
)
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"

_TARGETS = ("token", "fid", "topic", "condition")
_MESSAGE_KEYS = {*_TARGETS, "name", "data", "notification", "android", "webpush", "apns"}
_MESSAGE_KEYS |= {"fcm_options"}
_ANDROID_KEYS = {
    "collapse_key",
    "priority",
    "ttl",
    "restricted_package_name",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
    "bandwidth_constrained_ok",
    "restricted_satellite_ok",
}
# google.auth.jwt is untyped; these give mypy a typed handle on it.
_decode: Callable[..., dict[str, Any]] = jwt.decode
_decode_header: Callable[[str], dict[str, Any]] = jwt.decode_header
_TTL = re.compile(r"^\d+(\.\d{1,9})?s$")

# (HTTP status, google.rpc status, message) per FCM error code, as FCM answers them.
FCM_ERRORS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "INVALID_ARGUMENT": (
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Message rate exceeded"),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}


def write_service_account(path: Path, token_uri: str, project_id: str = "budbringer-test") -> Path:
    """Write a service-account JSON in Google's format with a freshly generated RSA key."""
    return bench_sinks.write_service_account(path, token_uri, project_id)


def fcm_error_body(fcm_code: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body FCM answers for one of its error codes."""
    status, rpc_status, message = FCM_ERRORS[fcm_code]
    details: list[dict[str, Any]] = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code}]
    return status, {
        "error": {"code": status, "message": message, "status": rpc_status, "details": details}
    }


@dataclass
class ScriptedFailure:
    """One failure the server answers to the next send, instead of accepting it."""

    fcm_code: str
    retry_after: str | None = None


@dataclass
class Sent:
    """One accepted send as the server saw it."""

    body: dict[str, Any]
    headers: dict[str, str]
    name: str
    access_token: str


@dataclass
class FcmServer:
    """The FCM-like peer. Use ``async with FcmServer() as fcm``; then ``trust(sa_file)``."""

    project_id: str = "budbringer-test"
    token_delay: float = 0.0  # seconds the token endpoint waits before answering
    expires_in: int = 3600
    # token -> FCM error code answered for it (UNREGISTERED, SENDER_ID_MISMATCH, ...)
    dead: dict[str, str] = field(default_factory=dict)
    failures: list[ScriptedFailure] = field(default_factory=list)
    reject_all_tokens: bool = False  # answer 401 to every send, as for a revoked token
    # while set, the token endpoint holds every request until the event is set
    token_gate: asyncio.Event | None = None
    token_waiting: asyncio.Event = field(default_factory=asyncio.Event)
    token_requests: int = 0
    token_rejections: list[str] = field(default_factory=list)
    granted_scopes: list[str] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    validated: list[dict[str, Any]] = field(default_factory=list)  # validate_only bodies
    _keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # email -> (kid, pem)
    _tokens: set[str] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    url: str = ""

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def trust(self, service_account_file: Path) -> None:
        """Accept assertions signed by this service account's key."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        info = json.loads(service_account_file.read_text(encoding="utf-8"))
        private = load_pem_private_key(info["private_key"].encode(), password=None)
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._keys[info["client_email"]] = (info["private_key_id"], public.decode())

    async def __aenter__(self) -> FcmServer:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.token_gate is not None:
            self.token_gate.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ OAuth2 token endpoint

    def _grant_error(self, error: str, description: str) -> web.Response:
        self.token_rejections.append(description)
        return web.json_response({"error": error, "error_description": description}, status=400)

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        self.token_waiting.set()
        if self.token_gate is not None:
            await self.token_gate.wait()
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        form = await request.post()
        if form.get("grant_type") != JWT_GRANT_TYPE:
            return self._grant_error("unsupported_grant_type", "Invalid grant_type.")
        assertion = form.get("assertion")
        if not isinstance(assertion, str):
            return self._grant_error("invalid_request", "Missing required parameter: assertion")
        try:
            claims = _decode(assertion, verify=False)
            kid, public = self._keys[claims["iss"]]
            if _decode_header(assertion).get("kid") != kid:
                return self._grant_error("invalid_grant", "Invalid JWT Signature.")
            claims = _decode(
                assertion, certs=public, audience=GOOGLE_TOKEN_AUDIENCE, clock_skew_in_seconds=10
            )
        except KeyError:
            return self._grant_error("invalid_grant", "Invalid grant: account not found")
        except (ValueError, auth_exceptions.GoogleAuthError):
            return self._grant_error("invalid_grant", "Invalid JWT Signature.")
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return self._grant_error("invalid_grant", "Invalid JWT: Token must be a short-lived")
        if not FCM_SCOPES & set(str(claims.get("scope", "")).split()):
            return self._grant_error("invalid_scope", "Invalid OAuth scope or ID token audience.")
        self.granted_scopes.append(str(claims["scope"]))
        token = f"ya29.test-{secrets.token_urlsafe(24)}"
        self._tokens.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    # ------------------------------------------------------------------ messages:send

    def _error(self, status: int, rpc_status: str, message: str, **extra: Any) -> web.Response:
        error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
        error.update(extra)
        return web.json_response({"error": error}, status=status)

    def _fcm_error(self, fcm_code: str, retry_after: str | None = None) -> web.Response:
        status, body = fcm_error_body(fcm_code)
        if fcm_code == "INVALID_ARGUMENT":
            body["error"]["details"].append(
                {
                    "@type": BAD_REQUEST_TYPE,
                    "fieldViolations": [
                        {"field": "message.token", "description": "Invalid registration token"}
                    ],
                }
            )
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        return web.json_response(body, status=status, headers=headers)

    async def _send(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if self.reject_all_tokens or not auth.startswith("Bearer ") or token not in self._tokens:
            return self._error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token,"
                " login cookie or other valid authentication credential.",
            )
        if request.match_info["project"] != self.project_id:
            return self._error(
                403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied"
            )
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        problem = validate_send_body(body)
        if problem is not None:
            self.rejected.append({"body": body, "problem": problem})
            return self._error(
                400,
                "INVALID_ARGUMENT",
                f"Invalid JSON payload received. {problem}",
                details=[
                    {"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"description": problem}]}
                ],
            )
        message = body["message"]
        if body.get("validate_only"):  # checked as a send would be, and not sent
            self.validated.append(body)
            return web.json_response({"name": f"projects/{self.project_id}/messages/fake"})
        target = next(message[t] for t in _TARGETS if t in message)
        if target in self.dead:
            return self._fcm_error(self.dead[target])
        if self.failures:
            failure = self.failures.pop(0)
            return self._fcm_error(failure.fcm_code, failure.retry_after)
        name = f"projects/{self.project_id}/messages/0:{next(self._ids)}%test"
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        self.sent.append(Sent(body=body, headers=headers, name=name, access_token=token))
        return web.json_response({"name": name})


def validate_send_body(body: Any) -> str | None:
    """Check a messages:send body the way FCM would; return the problem or None."""
    if not isinstance(body, dict) or "message" not in body:
        return "Missing 'message'."
    unknown = set(body) - {"message", "validate_only"}
    if unknown:
        return f"Unknown name {sorted(unknown)[0]!r}: Cannot find field."
    if "validate_only" in body and not isinstance(body["validate_only"], bool):
        return "validate_only must be a boolean."
    message = body["message"]
    if not isinstance(message, dict):
        return "'message' must be an object."
    unknown = set(message) - _MESSAGE_KEYS
    if unknown:
        return f"Unknown name {sorted(unknown)[0]!r} at 'message': Cannot find field."
    targets = [t for t in _TARGETS if t in message]
    if len(targets) != 1 or not isinstance(message[targets[0]], str) or not message[targets[0]]:
        return "Exactly one of token, fid, topic or condition must be a non-empty string."
    return (
        _check_strings("message.data", message.get("data"))
        or _check_notification(message.get("notification"))
        or _check_android(message.get("android"))
        or _check_apns(message.get("apns"))
    )


def _check_strings(where: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return f"Invalid value at '{where}': every key and value must be a string."
    return None


def _check_notification(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"title", "body", "image"}:
        return "Invalid value at 'message.notification'."
    return _check_strings("message.notification", value)


def _check_android(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - _ANDROID_KEYS:
        return "Invalid value at 'message.android'."
    if value.get("priority", "normal") not in ("normal", "high"):
        return "Invalid value at 'message.android.priority'."
    ttl = value.get("ttl")
    if ttl is not None and not (isinstance(ttl, str) and _TTL.match(ttl)):
        return "Invalid value at 'message.android.ttl': Illegal duration format."
    collapse = value.get("collapse_key")
    if collapse is not None and not isinstance(collapse, str):
        return "Invalid value at 'message.android.collapse_key'."
    if value.get("notification") is not None and not isinstance(value["notification"], dict):
        return "Invalid value at 'message.android.notification'."
    return _check_strings("message.android.data", value.get("data"))


def _check_apns(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {
        "headers",
        "payload",
        "fcm_options",
        "live_activity_token",
    }:
        return "Invalid value at 'message.apns'."
    problem = _check_strings("message.apns.headers", value.get("headers"))
    if problem:
        return problem
    headers = value.get("headers") or {}
    if headers.get("apns-priority", "10") not in ("5", "10"):
        return "Invalid value at 'message.apns.headers': apns-priority must be 5 or 10."
    if len(headers.get("apns-collapse-id", "").encode()) > 64:
        return "Invalid value at 'message.apns.headers': apns-collapse-id exceeds 64 bytes."
    payload = value.get("payload")
    if payload is not None and not (
        isinstance(payload, dict) and isinstance(payload.get("aps"), dict)
    ):
        return "Invalid value at 'message.apns.payload': aps must be an object."
    return None
