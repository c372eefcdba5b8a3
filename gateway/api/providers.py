"""Provider callbacks: Twilio's message status callback and its incoming-message webhook.

Both are form POSTs signed with ``X-Twilio-Signature``, verified with twilio's
``RequestValidator`` over the PUBLIC URL (``settings.public_url`` + path and
query), so verification holds behind a proxy that rewrites host and scheme.
By default Twilio signs with the account auth token and HMAC-SHA1. With a
Webhook Setting (Twilio's newer signing), the request also carries
``X-Twilio-Webhooks-Signature-Settings: key=...,algorithm=HMAC_SHA256`` and is
signed with that setting's shared key (``twilio.webhook_signing_key``; the auth
token when none is set). With ``twilio.hmac_sha256_signatures`` on, only
HMAC-SHA256 signatures are accepted.

An unsigned or wrongly signed call gets 403 and changes nothing. A verified
status callback always gets an empty 200, so Twilio never retries it; what it
says is handed to the tracker, which applies it or parks it until its message is
known (gateway/tracker.py, gateway/sms_status.py); an inbound message goes to absence
or, as a reply, to the tracker. This module only verifies and calls a stage.
Phone numbers and reply bodies never reach logs.
"""

from __future__ import annotations

import logging
from typing import Protocol
from xml.sax.saxutils import escape

from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import (
    HMAC_SHA256,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from channels.sms import DELIVERY_PARAM, INBOUND_PATH, STATUS_CALLBACK_PATH
from gateway import tracker
from gateway.api import spec
from gateway.api.absence import absences
from gateway.api.body import read_form
from gateway.api.context import CTX, AppContext
from gateway.api.responses import Error
from gateway.errors import Forbidden, NotFound, ValidationFailed
from gateway.headertext import typed_text
from gateway.logs import route_of
from gateway.settings import TwilioSettings
from gateway.sms_status import CallbackStore, StatusReport
from gateway.store.ports import ProviderLookup, ReplyStore
from gateway.translations import reply_job

log = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class _Ports(CallbackStore, ProviderLookup, ReplyStore, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


def _twilio(request: web.Request) -> TwilioSettings:
    settings = request.app[CTX].settings.twilio
    if settings is None:
        raise NotFound("twilio is not configured")
    return settings


def _signature_valid(
    settings: TwilioSettings, url: str, form: MultiDict[str], request: web.Request
) -> bool:
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        return False
    signing_settings = request.headers.get(SIGNATURE_SETTINGS_HEADER)
    algorithm = get_signature_algorithm(signing_settings)
    if settings.hmac_sha256_signatures and algorithm.upper() != HMAC_SHA256:
        return False
    secret = settings.auth_token
    if signing_settings and settings.webhook_signing_key is not None:
        secret = settings.webhook_signing_key
    validator = RequestValidator(secret.get_secret_value())
    return bool(validator.validate(url, form, signature, algorithm))


async def verified_form(request: web.Request) -> tuple[TwilioSettings, MultiDict[str]]:
    """The form fields of a correctly signed Twilio webhook; Forbidden otherwise."""
    settings = _twilio(request)
    if request.content_type != "application/x-www-form-urlencoded":
        raise ValidationFailed("Twilio webhooks are form-encoded")
    posted = await read_form(request)
    form: MultiDict[str] = MultiDict()
    for key, value in posted.items():
        if not isinstance(value, str):
            raise ValidationFailed("Twilio webhooks carry no files")
        form.add(key, value)
    public_url = request.app[CTX].settings.public_url.rstrip("/") + request.path_qs
    if not _signature_valid(settings, public_url, form, request):
        log.warning(
            "twilio webhook with a missing or wrong signature", extra={"route": route_of(request)}
        )
        raise Forbidden("missing or invalid X-Twilio-Signature")
    if form.get("AccountSid") not in (None, settings.account_sid):
        # Signed by our secret but for another account (e.g. a subaccount): not ours to apply.
        log.warning("twilio webhook for another account", extra={"route": route_of(request)})
        raise Forbidden("the webhook is for another account")
    return settings, form


async def status_callback(request: web.Request) -> web.Response:
    """Hand a verified message status callback to the tracker
    (:func:`gateway.tracker.provider_status`); always an empty 200."""
    _, form = await verified_form(request)
    ctx = request.app[CTX]
    sid = form.get("MessageSid") or form.get("SmsSid")
    if not sid:
        return web.Response(status=200)
    raw_status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    report = StatusReport(sid[:64], raw_status, (form.get("ErrorCode") or None), ctx.clock.now())
    await tracker.provider_status(
        _store(ctx), report, request.query.get(DELIVERY_PARAM), ctx.work_available
    )
    return web.Response(status=200)


def twiml_message(text: str | None) -> str:
    """TwiML that answers an inbound SMS with ``text`` (nothing when None)."""
    if text is None:
        return EMPTY_TWIML
    return EMPTY_TWIML.replace("</Response>", f"<Message>{escape(text)}</Message></Response>")


async def inbound_message(request: web.Request) -> web.Response:
    """An SMS a guardian sent us: an answer to open absence alerts, an absence report, or
    else a reply to the latest message sent to that number."""
    _, form = await verified_form(request)
    ctx = request.app[CTX]
    twiml = web.Response(text=EMPTY_TWIML, content_type="text/xml")
    sender = form.get("From")
    sid = form.get("MessageSid") or form.get("SmsSid")
    if not sender or not sid:
        return twiml
    # What the guardian typed, as staff will read it: no stray control or direction
    # characters (an override would turn the name and time shown after it around).
    body = typed_text(form.get("Body", ""))
    # A keyword answer is matched against the open alerts of every tenant sent to this
    # number; one that fits several children is answered with a question instead.
    answered = await absences(ctx).answer_sms(sender, body, sid)
    if answered is not None:
        log.info(
            "inbound sms taken as an absence answer",
            extra={"provider_id": sid, "explained": answered.explained},
        )
        return web.Response(text=twiml_message(answered.reply), content_type="text/xml")
    target = await tracker.reply_target(_store(ctx), "sms", sender)
    if target is None:
        log.info("inbound sms from an address we never sent to", extra={"provider_id": sid})
        return twiml
    tenant_id, delivery = target
    # An absence report ("FRAVÆR ...", or a keyword that answers no alert) is absence's.
    if await absences(ctx).inbound_sms(tenant_id, delivery, body, sid):
        log.info("inbound sms taken as absence", extra={"tenant_id": tenant_id, "provider_id": sid})
        return twiml
    reply = await tracker.record_reply(
        _store(ctx), tenant_id, "sms", delivery, body, sid, ctx.clock.now()
    )
    job = reply_job(reply, ctx.clock.now())
    if job is not None:
        # Translated for staff by a worker (gateway/translations.py), never in this webhook;
        # a redelivered webhook queues it again, and the stored translation stays.
        await _store(ctx).add_deliveries([], [job])
        ctx.work_available.set()
    return twiml


SIGNATURE = spec.header(
    "X-Twilio-Signature",
    "Twilio's signature of the public URL and the form (RequestValidator)",
    required=True,
)
REFUSED: dict[int, spec.Response] = {
    403: spec.Response("Missing or invalid signature, or another account's webhook", Error),
    404: spec.Response("Twilio is not configured", Error),
    422: spec.Response("Not a form post", Error),
}
"""What every Twilio callback answers before it reads the form."""
TWIML = "text/xml"


def twilio_form(fields: dict[str, str], required: list[str]) -> spec.Body:
    """A Twilio callback's form: these fields described, any others allowed."""
    properties = {name: {"type": "string", "description": text} for name, text in fields.items()}
    schema = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": True,
    }
    return spec.Body(schema, (spec.FORM,))


OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("POST", STATUS_CALLBACK_PATH): spec.Operation(
        tag="providers",
        summary="Twilio message status callback",
        description="Always an empty 200 once verified, so Twilio never retries.",
        security=spec.PUBLIC,
        params=(SIGNATURE,),
        body=twilio_form(
            {
                "MessageSid": "Twilio's message id",
                "MessageStatus": "queued, sent, delivered, undelivered, failed, ...",
                "ErrorCode": "Twilio error code, if any",
                "AccountSid": "The account",
            },
            ["MessageSid", "MessageStatus"],
        ),
        responses={200: spec.Response("Applied or ignored"), **REFUSED},
    ),
    ("POST", INBOUND_PATH): spec.Operation(
        tag="providers",
        summary="Inbound SMS (a reply) from Twilio",
        security=spec.PUBLIC,
        params=(SIGNATURE,),
        body=twilio_form(
            {
                "MessageSid": "Twilio's message id",
                "From": "Sender (E.164)",
                "To": "Our number",
                "Body": "The text",
                "AccountSid": "The account",
            },
            ["MessageSid", "From"],
        ),
        responses={
            200: spec.Response("Stored (or ignored): an empty TwiML response", spec.TEXT, TWIML),
            **REFUSED,
        },
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_post(STATUS_CALLBACK_PATH, status_callback)
    app.router.add_post(INBOUND_PATH, inbound_message)
