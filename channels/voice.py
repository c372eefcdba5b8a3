"""Phone calls over Twilio's Calls API, for emergencies nobody has read.

One delivery = one call: ``POST /2010-04-01/Accounts/{sid}/Calls.json`` with ``To``,
``From`` (``voice.caller_id``), ``Timeout`` (ring seconds), ``Twiml`` and a
``StatusCallback`` naming the delivery. The TwiML says the message (``<Say>`` in the
language of its text where Twilio has a voice for it, else Norwegian) inside a
``<Gather numDigits="1">`` whose ``action`` is our signed gather webhook
(gateway/api/providers.py): pressing 1 counts the guardian as reached, like a read.
Twilio's answers and errors map into the error tree exactly as for SMS.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlencode

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.twiml.voice_response import Gather, VoiceResponse

from channels.sms import (
    DELIVERY_PARAM,
    forget_retry_after,
    last_retry_after,
    map_error,
    open_client,
)
from gateway.errors import ChannelUnavailable, DeadAddress, TransientDeliveryError
from gateway.models import Delivery, DeliveryStatus, Receipt, Rendered
from gateway.settings import TwilioSettings, VoiceSettings

GATHER_PATH = "/v1/providers/twilio/voice/gather"
CALL_STATUS_PATH = "/v1/providers/twilio/voice/status"
CONFIRM_DIGIT = "1"
# Our language -> a language Twilio's <Say> speaks (its text-to-speech table: Polly and
# Google voices). Somali, Tigrinya, Northern Sámi and Persian have none: Norwegian.
SAY_LANGUAGES = {
    "nb": "nb-NO",
    "nn": "nb-NO",
    "en": "en-GB",
    "pl": "pl-PL",
    "ar": "ar-XA",
    "uk": "uk-UA",
    "lt": "lt-LT",
    "ur": "ur-IN",
}
DEFAULT_SAY = "nb-NO"


def say_language(language: str | None) -> str:
    return SAY_LANGUAGES.get((language or "").split("-")[0], DEFAULT_SAY)


def twiml(content: Rendered, action: str) -> str:
    """The call: the message, then "press 1 to confirm" (said twice, then goodbye)."""
    response = VoiceResponse()
    gather = Gather(num_digits=1, action=action, method="POST", timeout=10)
    gather.say(content.text, language=say_language(content.text_language))
    if content.short:
        gather.say(content.short, language=say_language(content.language))
    response.append(gather)
    if content.short:
        response.say(content.short, language=say_language(content.language))
    return str(response)


class VoiceChannel:
    """Calls through Twilio. One delivery = one call to one number."""

    name: ClassVar[str] = "voice"
    max_body: ClassVar[int | None] = 4000  # Twilio's limit for inline Twiml
    rate_per_second: ClassVar[float | None] = 1.0  # Twilio's default CPS for calls

    def __init__(self, twilio: TwilioSettings, voice: VoiceSettings, public_url: str) -> None:
        self._settings = twilio
        self._voice = voice
        self._public_url = public_url.rstrip("/")
        self._http: Any = None
        self._client: Any = None

    async def start(self) -> None:
        if self._client is None:
            self._http, self._client = open_client(self._settings)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None
        self._client = None

    def url_for(self, path: str, delivery: Delivery) -> str:
        return f"{self._public_url}{path}?{urlencode({DELIVERY_PARAM: delivery.id})}"

    async def send(self, delivery: Delivery, content: Rendered) -> Receipt:
        if self._client is None:
            raise ChannelUnavailable("the voice channel is not started", code="not_started")
        if not delivery.address:
            raise DeadAddress("the delivery has no phone number", code="no_address")
        params: dict[str, Any] = {
            "to": delivery.address,
            "from_": self._voice.caller_id,
            "twiml": twiml(content, self.url_for(GATHER_PATH, delivery)),
            "timeout": self._voice.ring_seconds,
            # Without StatusCallbackEvent Twilio posts only "completed", all we need.
            "status_callback": self.url_for(CALL_STATUS_PATH, delivery),
        }
        forget_retry_after()
        try:
            call = await self._client.calls.create_async(**params)
        except (TwilioRestException, TwilioServiceException) as exc:
            status = int(exc.status)
            code = int(exc.code) if exc.code is not None else None
            raise map_error(status, code, last_retry_after()) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientDeliveryError(
                "twilio could not be reached", code="twilio_connection"
            ) from exc
        return Receipt(status=DeliveryStatus.sent, provider_id=call.sid)
