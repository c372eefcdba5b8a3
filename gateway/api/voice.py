"""Twilio's webhooks of a call (channels/voice.py), signed and verified like SMS ones.

* ``POST /v1/providers/twilio/voice/gather?d=<delivery>``: the ``<Gather>`` action with
  the key the guardian pressed (``Digits``). "1" records a read of the message by the
  call's recipient (gateway/tracker.py), so the child counts as reached and escalation
  stops; the answer is TwiML thanking them in their wrapper language.
* ``POST /v1/providers/twilio/voice/status?d=<delivery>``: the call's end
  (``CallStatus``): completed -> delivered; busy, no-answer -> undelivered; failed,
  canceled -> failed; applied like an SMS status callback (gateway/sms_status.py).
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web
from twilio.twiml.voice_response import VoiceResponse

from channels.sms import DELIVERY_PARAM
from channels.voice import CALL_STATUS_PATH, CONFIRM_DIGIT, GATHER_PATH, say_language
from gateway import sms_status
from gateway.api import spec
from gateway.api.context import CTX, AppContext
from gateway.api.providers import REFUSED, SIGNATURE, TWIML, twilio_form, verified_form
from gateway.locales import resolve_language
from gateway.models import Delivery
from gateway.sms_status import StatusReport
from gateway.store.ports import (
    DeliveryStore,
    InboxStore,
    JobQueue,
    MessageStore,
    ProviderLookup,
    ReachStore,
)
from gateway.tracker import record_read

log = logging.getLogger(__name__)

# Twilio's CallStatus -> the MessageStatus word sms_status applies the same way.
CALL_STATUS = {
    "completed": "delivered",
    "busy": "undelivered",
    "no-answer": "undelivered",
    "failed": "failed",
    "canceled": "canceled",
}


async def _call_delivery(request: web.Request) -> Delivery | None:
    delivery_id = request.query.get(DELIVERY_PARAM)
    if not delivery_id:
        return None
    delivery = await _store(request.app[CTX]).get_delivery(delivery_id)
    return delivery if delivery is not None and delivery.channel == "voice" else None


class _Ports(
    InboxStore, MessageStore, DeliveryStore, ReachStore, ProviderLookup, JobQueue, Protocol
):
    """The store ports this module calls: a read recorded (tracker.ReadStore) and a call
    status applied (sms_status.CallbackStore); the union stays in the wiring."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


def _twiml(response: VoiceResponse) -> web.Response:
    return web.Response(text=str(response), content_type="text/xml")


async def gather(request: web.Request) -> web.Response:
    _, form = await verified_form(request)
    ctx = request.app[CTX]
    delivery = await _call_delivery(request)
    response = VoiceResponse()
    if delivery is None or form.get("Digits") != CONFIRM_DIGIT:
        return _twiml(response)
    await record_read(
        _store(ctx),
        delivery.tenant_id,
        delivery.recipient_id,
        delivery.message_id,
        ctx.clock.now(),
        "voice",
    )
    log.info("call confirmed", extra={"delivery_id": delivery.id})
    if ctx.renderer is not None:
        lang = resolve_language(delivery.language)
        response.say(ctx.renderer.text(lang, "voice_confirmed"), language=say_language(lang))
    return _twiml(response)


async def call_status(request: web.Request) -> web.Response:
    _, form = await verified_form(request)
    ctx = request.app[CTX]
    raw = CALL_STATUS.get((form.get("CallStatus") or "").lower())
    sid = form.get("CallSid") or ""
    delivery = await _call_delivery(request)
    if raw is None or delivery is None or not sid:
        return web.Response(status=200)
    now = ctx.clock.now()
    report = StatusReport(sid[:64], raw, form.get("ErrorCode") or None, now)
    await sms_status.apply(_store(ctx), delivery, report, now, ctx.work_available)
    return web.Response(status=200)


_DELIVERY = spec.Param(
    DELIVERY_PARAM, "query", "The delivery of the call (our own signed URL)", required=True
)
OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("POST", GATHER_PATH): spec.Operation(
        tag="providers",
        summary="The key a guardian pressed in a call (<Gather> action)",
        description="`d` names the call's delivery. Digits=1 records a read:"
        " the guardian (and their children) count as reached.",
        security=spec.PUBLIC,
        params=(SIGNATURE, _DELIVERY),
        body=twilio_form(
            {
                "CallSid": "Twilio's call id",
                "Digits": "The key pressed",
                "AccountSid": "The account",
            },
            ["CallSid"],
        ),
        responses={
            200: spec.Response("TwiML: thanks when 1 was pressed, else empty", spec.TEXT, TWIML),
            **REFUSED,
        },
    ),
    ("POST", CALL_STATUS_PATH): spec.Operation(
        tag="providers",
        summary="Twilio call status callback",
        description="completed -> delivered; busy, no-answer -> undelivered;"
        " failed, canceled -> failed. Always an empty 200 once verified.",
        security=spec.PUBLIC,
        params=(SIGNATURE, _DELIVERY),
        body=twilio_form(
            {
                "CallSid": "Twilio's call id",
                "CallStatus": "completed, busy, no-answer, failed, canceled, ...",
                "AccountSid": "The account",
            },
            ["CallSid", "CallStatus"],
        ),
        responses={200: spec.Response("Applied or ignored"), **REFUSED},
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_post(GATHER_PATH, gather)
    app.router.add_post(CALL_STATUS_PATH, call_status)
