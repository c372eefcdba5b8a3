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
status callback always gets an empty 200, even for an unknown message, so
Twilio never retries it; the store's forward-only rule makes repeated and
out-of-order callbacks harmless. Phone numbers and reply bodies never reach logs.
"""

from __future__ import annotations

import logging

from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import (
    HMAC_SHA256,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from channels.sms import DEAD_NUMBER_CODES, INBOUND_PATH, STATUS_CALLBACK_PATH
from gateway.api.absence import absences
from gateway.api.context import CTX
from gateway.errors import Forbidden, NotFound, ValidationFailed
from gateway.models import TERMINAL_FAILURES, DeliveryStatus, Reply, derive_id
from gateway.settings import TwilioSettings

log = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

# Twilio's MessageStatus -> our status. "receiving"/"received" belong to inbound
# messages and are ignored; an unknown value is ignored too (and logged).
TWILIO_STATUS: dict[str, DeliveryStatus | None] = {
    "accepted": DeliveryStatus.queued,
    "scheduled": DeliveryStatus.queued,
    "queued": DeliveryStatus.queued,
    "sending": DeliveryStatus.sending,
    "sent": DeliveryStatus.sent,
    "delivered": DeliveryStatus.delivered,
    "read": DeliveryStatus.read,
    "undelivered": DeliveryStatus.undelivered,
    "failed": DeliveryStatus.failed,
    "canceled": DeliveryStatus.cancelled,
    "receiving": None,
    "received": None,
}


# Callback outcomes that leave the recipient untold on this channel: escalation's failover.
FAILOVER_STATUSES = frozenset({DeliveryStatus.failed, DeliveryStatus.undelivered})


def _is_dead_number(error_code: str | None) -> bool:
    return bool(error_code and error_code.isdigit() and int(error_code) in DEAD_NUMBER_CODES)


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


async def _verified_form(request: web.Request) -> tuple[TwilioSettings, MultiDict[str]]:
    """The form fields of a correctly signed Twilio webhook; Forbidden otherwise."""
    settings = _twilio(request)
    if request.content_type != "application/x-www-form-urlencoded":
        raise ValidationFailed("Twilio webhooks are form-encoded")
    posted = await request.post()
    form: MultiDict[str] = MultiDict()
    for key, value in posted.items():
        if not isinstance(value, str):
            raise ValidationFailed("Twilio webhooks carry no files")
        form.add(key, value)
    public_url = request.app[CTX].settings.public_url.rstrip("/") + request.path_qs
    if not _signature_valid(settings, public_url, form, request):
        log.warning(
            "twilio webhook with a missing or wrong signature", extra={"path": request.path}
        )
        raise Forbidden("missing or invalid X-Twilio-Signature")
    if form.get("AccountSid") not in (None, settings.account_sid):
        # Signed by our secret but for another account (e.g. a subaccount): not ours to apply.
        log.warning("twilio webhook for another account", extra={"path": request.path})
        raise Forbidden("the webhook is for another account")
    return settings, form


async def status_callback(request: web.Request) -> web.Response:
    """Apply a message status callback to the delivery it belongs to."""
    _, form = await _verified_form(request)
    ctx = request.app[CTX]
    sid = form.get("MessageSid") or form.get("SmsSid")
    raw_status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    status = TWILIO_STATUS.get(raw_status)
    if not sid or status is None:
        if raw_status not in TWILIO_STATUS:
            log.info("twilio status callback ignored", extra={"twilio_status": raw_status[:32]})
        return web.Response(status=200)
    delivery = await ctx.store.delivery_by_provider_id("sms", sid)
    if delivery is None:
        log.info("twilio status callback for an unknown message", extra={"provider_id": sid})
        return web.Response(status=200)
    error_code = form.get("ErrorCode") or None
    failed = status in TERMINAL_FAILURES
    reason = f"twilio_{error_code}" if error_code and failed else None
    now = ctx.clock.now()
    moved = await ctx.store.transition(
        delivery.id, status, now, detail=f"twilio:{raw_status}", reason=reason
    )
    log.info(
        "twilio status callback",
        extra={"delivery_id": delivery.id, "twilio_status": raw_status, "applied": moved},
    )
    if failed and delivery.address and _is_dead_number(error_code):
        await ctx.store.mark_contact_failing(
            delivery.tenant_id,
            delivery.recipient_id,
            "phone",
            delivery.address,
            f"twilio_{error_code}",
            now,
        )
    if moved and status in FAILOVER_STATUSES and ctx.on_failed is not None:
        # A permanent failure moves the recipient on to the next channel at once.
        await ctx.on_failed(delivery)
    return web.Response(status=200)


async def inbound_message(request: web.Request) -> web.Response:
    """Store an SMS a guardian sent us as a reply to the latest message sent to that number."""
    _, form = await _verified_form(request)
    ctx = request.app[CTX]
    twiml = web.Response(text=EMPTY_TWIML, content_type="text/xml")
    sender = form.get("From")
    sid = form.get("MessageSid") or form.get("SmsSid")
    if not sender or not sid:
        return twiml
    tenant_id = await ctx.store.tenant_for_address("sms", sender)
    if tenant_id is None:
        log.info("inbound sms from an address we never sent to", extra={"provider_id": sid})
        return twiml
    delivery = await ctx.store.latest_delivery_to(tenant_id, "sms", sender)
    # An answer to an absence alert (a keyword) or an absence report is absence's to take.
    if await absences(ctx).inbound_sms(tenant_id, delivery, form.get("Body", ""), sid):
        log.info("inbound sms taken as absence", extra={"tenant_id": tenant_id, "provider_id": sid})
        return twiml
    reply = Reply(
        id=derive_id("twilio", sid),
        tenant_id=tenant_id,
        channel="sms",
        message_id=delivery.message_id if delivery else None,
        person_id=delivery.recipient_id if delivery else None,
        body=form.get("Body", ""),
        provider_id=sid,
        received_at=ctx.clock.now(),
    )
    added = await ctx.store.add_reply(reply)
    log.info(
        "inbound sms stored" if added else "inbound sms already stored",
        extra={"tenant_id": tenant_id, "reply_id": reply.id, "message_id": reply.message_id},
    )
    return twiml


def setup(app: web.Application) -> None:
    app.router.add_post(STATUS_CALLBACK_PATH, status_callback)
    app.router.add_post(INBOUND_PATH, inbound_message)
