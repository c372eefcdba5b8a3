"""A local server that behaves like Twilio's Messages and Calls APIs, for tests and the demo.

``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` creates a call (checks To,
From, one of Twiml/Url/ApplicationSid, Timeout; Twilio's error codes otherwise);
:meth:`TwilioPeer.press` then posts the call's ``<Gather>`` action with ``Digits``
and :meth:`TwilioPeer.end_call` its status callback, both signed.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` takes the form body the
twilio library sends, checks Basic auth (account SID + auth token, or an API key
SID + secret), records the request and answers 201 with a Message resource the
way api.twilio.com does — or with Twilio's JSON error bodies: 401/20003 for bad
credentials, 400/21211 for an invalid To, 21602/21603 for a missing body or
sender, a chosen code for numbers marked dead, and scripted failures (429 with
Retry-After, 500, 503) queued with :meth:`TwilioPeer.fail_next`.
``GET /2010-04-01/Accounts/{AccountSid}.json`` answers the account (or 401/20003)
with the same credential check: the read-only call ``budbringer doctor`` makes.

It then posts status callbacks and inbound messages to the gateway on demand, or
(``auto_callbacks``) by itself right after accepting a message, as Twilio does,
signed with ``X-Twilio-Signature`` exactly as Twilio does
(``RequestValidator(token).compute_signature(url, params)``), in any order and
as often as the test asks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from twilio.request_validator import (
    HMAC_SHA1,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
)

from channels.gsm import count_segments

API_VERSION = "2010-04-01"
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SENDER = re.compile(r"^(\+[1-9][0-9]{6,14}|[A-Za-z0-9 ]{1,11})$")
_SERVICE = re.compile(r"^MG[0-9a-fA-F]{32}$")


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's JSON error body."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@dataclass
class Recorded:
    """One request to the Messages endpoint, as it arrived."""

    account_sid: str
    form: dict[str, list[str]]
    authorized: bool
    headers: dict[str, str]
    at: float = field(default_factory=time.time)  # when it arrived (before it was answered)

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None


@dataclass
class Failure:
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class AutoCallbacks:
    """How the peer posts callbacks by itself (``TwilioPeer.auto_callbacks``).

    ``outcome(to)`` gives the (MessageStatus, ErrorCode) callbacks of a message to ``to``
    in Twilio's order; the peer posts each after a delay of 0 or up to ``max_delay``
    seconds, in shuffled order, a ``duplicate_share`` of them twice, to ``via``.
    """

    outcome: Callable[[str], list[tuple[str, int | None]]]
    via: str | None = None
    max_delay: float = 0.05
    duplicate_share: float = 0.3
    rng: random.Random = field(default_factory=lambda: random.Random(12))


@dataclass
class CallbackResult:
    status: int
    text: str
    content_type: str


class TwilioPeer:
    """The Twilio-like server. ``async with TwilioPeer(sid, token) as peer: peer.base_url``."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_keys: dict[str, str] | None = None,
        signing_key: str | None = None,
        signing_key_sid: str = "webhooks_sharedkey_test",
        algorithm: str = HMAC_SHA1,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.credentials = {account_sid: auth_token, **(api_keys or {})}
        # Signing with a SharedKey (Twilio's Webhook Settings) instead of the auth token.
        self.signing_key = signing_key
        self.signing_key_sid = signing_key_sid
        self.algorithm = algorithm
        self.requests: list[Recorded] = []
        self.account_fetches = 0  # GET Accounts/{sid}.json (doctor's credential check)
        self.messages: dict[str, dict[str, Any]] = {}
        self.callback_urls: dict[str, str] = {}
        self.dead_numbers: dict[str, int] = {}
        self._failures: deque[Failure] = deque()
        # Failures answered AFTER the message was accepted (a 5xx or a hang-up whose
        # message Twilio did take): see fail_after_accept.
        self._after_accept: deque[Failure] = deque()
        self.list_requests: list[dict[str, str]] = []
        self.list_delay = 0.0  # seconds a Read-multiple-Messages answer takes
        # Calls API: every request as it arrived, and the calls accepted (by CallSid).
        self.call_requests: list[Recorded] = []
        self.calls: dict[str, dict[str, Any]] = {}
        # While set, requests hang until the peer closes (to exercise client timeouts).
        self.stall = False
        # Seconds every create request takes (a slow provider), and how many were in
        # flight at once at most.
        self.delay = 0.0
        self.in_flight = 0
        self.peak_in_flight = 0
        # While set (hold), every create request waits for a release before it answers:
        # a provider exactly as slow as the test makes it.
        self._answers: asyncio.Semaphore | None = None
        # Status callbacks posted by the peer itself after accepting (auto_callbacks).
        self._auto: AutoCallbacks | None = None
        self._callback_tasks: set[asyncio.Task[CallbackResult]] = set()
        self.early_callbacks = 0  # automatic callbacks answered before their message's 201
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account_sid}/Messages.json", self._create)
        app.router.add_get("/2010-04-01/Accounts/{account_sid}.json", self._account)
        app.router.add_get("/2010-04-01/Accounts/{account_sid}/Messages.json", self._list)
        app.router.add_post("/2010-04-01/Accounts/{account_sid}/Calls.json", self._create_call)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        return self.base_url

    async def close(self) -> None:
        self._closing.set()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> TwilioPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ scripting
    def fail_next(
        self,
        status: int,
        *,
        code: int | None = None,
        message: str = "Too Many Requests",
        retry_after: float | None = None,
        times: int = 1,
        body: str | None = None,
    ) -> None:
        """The next ``times`` requests answer ``status`` (Twilio's JSON error, or ``body``)."""
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        payload: dict[str, Any] | str = (
            body if body is not None else twilio_error(status, code or status, message)
        )
        for _ in range(times):
            self._failures.append(Failure(status, payload, headers))

    def auto_callbacks(self, script: AutoCallbacks) -> None:
        """From now on, post status callbacks by themselves after accepting each message,
        as Twilio does: see :class:`AutoCallbacks`."""
        self._auto = script

    async def settle(self) -> list[CallbackResult]:
        """Wait until every automatic callback posted so far has been answered."""
        results: list[CallbackResult] = []
        while self._callback_tasks:
            done = list(self._callback_tasks)
            self._callback_tasks.difference_update(done)
            results.extend(await asyncio.gather(*done))
        return results

    def fail_after_accept(self, status: int, *, times: int = 1) -> None:
        """The next ``times`` valid requests create the message (it is in ``messages``, its
        callbacks may follow) but answer ``status`` with Twilio's error body — what the
        gateway sees when Twilio took the message and the answer was lost."""
        for _ in range(times):
            self._after_accept.append(Failure(status, twilio_error(status, status, "Error")))

    def hold(self) -> None:
        """From now on every create request waits for :meth:`release` before answering."""
        self._answers = asyncio.Semaphore(0)

    def release(self, n: int = 1) -> None:
        """Let ``n`` held create requests (the first to come) answer."""
        assert self._answers is not None, "hold() first"
        for _ in range(n):
            self._answers.release()

    def mark_dead(self, number: str, code: int = 21614) -> None:
        """Requests to this number answer 400 with ``code`` (e.g. 21614 not a mobile)."""
        self.dead_numbers[number] = code

    # ------------------------------------------------------------------ the Messages API
    def _authorized(self, request: web.Request, account_sid: str) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            login, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        expected = self.credentials.get(login)
        return (
            expected is not None
            and secrets.compare_digest(expected, password)
            and account_sid == self.account_sid
        )

    async def _account(self, request: web.Request) -> web.Response:
        """``GET /2010-04-01/Accounts/{AccountSid}.json``: the read-only account fetch
        ``budbringer doctor`` uses to check the credentials."""
        account_sid = request.match_info["account_sid"]
        self.account_fetches += 1
        if not self._authorized(request, account_sid):
            return web.json_response(twilio_error(401, 20003, "Authenticate"), status=401)
        return web.json_response(
            {
                "sid": self.account_sid,
                "status": "active",
                "type": "Full",
                "api_version": API_VERSION,
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        account_sid = request.match_info["account_sid"]
        form = await request.post()
        fields: dict[str, list[str]] = {}
        for key, value in form.items():
            fields.setdefault(key, []).append(str(value))
        authorized = self._authorized(request, account_sid)
        record = Recorded(account_sid, fields, authorized, dict(request.headers))
        self.requests.append(record)
        if self.stall:
            await self._closing.wait()
        if self.delay or self._answers is not None:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                if self._answers is not None:
                    await self._answers.acquire()
                else:
                    await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1
        if not authorized:
            return web.json_response(twilio_error(401, 20003, "Authenticate"), status=401)
        if self._failures:
            failure = self._failures.popleft()
            if isinstance(failure.body, str):
                return web.Response(
                    status=failure.status, text=failure.body, headers=failure.headers
                )
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        response = self._accept(record)
        sid = self._accepted_sid(response)
        if sid is not None and self._after_accept:
            failure = self._after_accept.popleft()
            return web.json_response(failure.body, status=failure.status)
        if sid is not None and sid in self.callback_urls and self._auto is not None:
            await self._callbacks(sid, self._auto)
        return response

    async def _create_call(self, request: web.Request) -> web.Response:
        """Twilio's Create-a-Call: To and From required (E.164), exactly one of Twiml, Url
        or ApplicationSid, a Timeout of 1-600; 201 with a Call resource in state queued.
        Scripted failures (fail_next) answer here too."""
        account_sid = request.match_info["account_sid"]
        form = await request.post()
        fields: dict[str, list[str]] = {}
        for key, value in form.items():
            fields.setdefault(key, []).append(str(value))
        authorized = self._authorized(request, account_sid)
        record = Recorded(account_sid, fields, authorized, dict(request.headers))
        self.call_requests.append(record)
        if not authorized:
            return web.json_response(twilio_error(401, 20003, "Authenticate"), status=401)
        if self._failures:
            failure = self._failures.popleft()
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        to, from_ = record.field("To") or "", record.field("From") or ""
        if not _E164.match(to):
            return web.json_response(
                twilio_error(400, 21217, "Phone number does not appear to be valid"), status=400
            )
        if not _E164.match(from_):
            return web.json_response(
                twilio_error(400, 21212, "Invalid From Phone Number"), status=400
            )
        sources = [name for name in ("Twiml", "Url", "ApplicationSid") if record.field(name)]
        if len(sources) != 1:
            return web.json_response(
                twilio_error(400, 21205, "Url, Twiml or ApplicationSid is required"), status=400
            )
        timeout = record.field("Timeout")
        if timeout is not None and not (timeout.isdigit() and 1 <= int(timeout) <= 600):
            return web.json_response(twilio_error(400, 21216, "Invalid Timeout"), status=400)
        sid = "CA" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC))
        call = {
            "sid": sid,
            "account_sid": account_sid,
            "to": to,
            "from": from_,
            "status": "queued",
            "direction": "outbound-api",
            "date_created": now,
            "date_updated": now,
            "api_version": API_VERSION,
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/Calls/{sid}.json",
            "twiml": record.field("Twiml"),
            "status_callback": record.field("StatusCallback"),
        }
        self.calls[sid] = call
        return web.json_response({k: v for k, v in call.items() if k != "twiml"}, status=201)

    def call_params(self, sid: str, status: str, **extra: str) -> dict[str, str]:
        call = self.calls[sid]
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": sid,
            "CallStatus": status,
            "Direction": "outbound-api",
            "To": call["to"],
            "From": call["from"],
            **extra,
        }

    async def press(self, sid: str, digits: str = "1", *, via: str | None = None) -> CallbackResult:
        """The guardian answers and presses ``digits``: POST the <Gather> action of the
        call's TwiML (signed) with Digits, as Twilio does; its TwiML answer comes back."""
        import xml.etree.ElementTree as ET

        gather = ET.fromstring(self.calls[sid]["twiml"]).find("Gather")
        assert gather is not None, "the call's TwiML has no <Gather>"
        action = gather.get("action")
        assert action, "the <Gather> has no action"
        self.calls[sid]["status"] = "in-progress"
        params = self.call_params(sid, "in-progress", Digits=digits, FinishedOnKey="")
        return await self.post_webhook(action, params, via=via)

    async def end_call(
        self, sid: str, status: str = "completed", *, via: str | None = None
    ) -> CallbackResult:
        """The call ends: POST its StatusCallback with CallStatus (completed, busy, ...)."""
        self.calls[sid]["status"] = status
        params = self.call_params(sid, status, CallDuration="12")
        return await self.post_webhook(self.calls[sid]["status_callback"], params, via=via)

    async def _list(self, request: web.Request) -> web.Response:
        """Twilio's Read-multiple-Messages: newest first, filtered by To and From, one page
        of PageSize (default 50, at most 1000), in Twilio's list envelope."""
        account_sid = request.match_info["account_sid"]
        if not self._authorized(request, account_sid):
            return web.json_response(twilio_error(401, 20003, "Authenticate"), status=401)
        query = dict(request.query)
        self.list_requests.append(query)
        await asyncio.sleep(self.list_delay)
        try:
            page_size = min(int(query.get("PageSize", "50")), 1000)
        except ValueError:
            return web.json_response(twilio_error(400, 20001, "Invalid PageSize"), status=400)
        found = [
            m
            for m in reversed(self.messages.values())
            if query.get("To") in (None, m["to"]) and query.get("From") in (None, m["from"])
        ]
        uri = request.path_qs
        return web.json_response(
            {
                "messages": found[:page_size],
                "end": min(len(found), page_size) - 1,
                "first_page_uri": uri,
                "next_page_uri": None,
                "page": 0,
                "page_size": page_size,
                "previous_page_uri": None,
                "start": 0,
                "uri": uri,
            }
        )

    def _accepted_sid(self, response: web.Response) -> str | None:
        if response.status != 201 or not isinstance(response.body, bytes):
            return None
        sid: str = json.loads(response.body)["sid"]
        return sid

    def _accept(self, record: Recorded) -> web.Response:
        to = record.field("To") or ""
        sender = record.field("From")
        service = record.field("MessagingServiceSid")
        body = record.field("Body")
        if not _E164.fullmatch(to):
            message = f"The 'To' number {to} is not a valid phone number."
            return web.json_response(twilio_error(400, 21211, message), status=400)
        if to in self.dead_numbers:
            code = self.dead_numbers[to]
            message = f"The 'To' number {to} is not reachable (code {code})."
            return web.json_response(twilio_error(400, code, message), status=400)
        if not body:
            return web.json_response(
                twilio_error(400, 21602, "Message body is required."), status=400
            )
        if not (sender and _SENDER.fullmatch(sender)) and not (
            service and _SERVICE.fullmatch(service)
        ):
            message = "A 'From' phone number is required."
            return web.json_response(twilio_error(400, 21603, message), status=400)
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        resource = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": str(count_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # a Messaging Service first accepts, then picks a sender and queues
            "status": "accepted" if service and not sender else "queued",
            "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
            "to": to,
            "uri": uri,
        }
        self.messages[sid] = resource
        callback = record.field("StatusCallback")
        if callback:
            self.callback_urls[sid] = callback
        return web.json_response(resource, status=201)

    async def _callbacks(self, sid: str, script: AutoCallbacks) -> None:
        """Post this message's callbacks within ``script.max_delay`` seconds of accepting
        it, shuffled and some of them twice; those with a delay of 0 are posted (and
        answered) before the 201 leaves: the gateway does not know the SID yet."""
        rng = script.rng
        to = self.messages[sid]["to"]
        posts = list(script.outcome(to))
        posts += [post for post in posts if rng.random() < script.duplicate_share]
        rng.shuffle(posts)
        for status, error_code in posts:
            delay = rng.choice((0.0, rng.uniform(0, script.max_delay)))
            if delay == 0:
                await self.send_status(sid, status, error_code=error_code, via=script.via)
                self.early_callbacks += 1
                continue
            task = asyncio.create_task(self._post_later(delay, sid, status, error_code, script))
            self._callback_tasks.add(task)

    async def _post_later(
        self, delay: float, sid: str, status: str, error_code: int | None, script: AutoCallbacks
    ) -> CallbackResult:
        await asyncio.sleep(delay)
        return await self.send_status(sid, status, error_code=error_code, via=script.via)

    # ------------------------------------------------------------------ callbacks to the gateway
    def sign(self, url: str, params: dict[str, str]) -> dict[str, str]:
        """The headers Twilio adds to a webhook to ``url`` with these form params."""
        if self.signing_key is None:
            signature = RequestValidator(self.auth_token).compute_signature(url, params)
            return {SIGNATURE_HEADER: signature}
        validator = RequestValidator(self.signing_key)
        return {
            SIGNATURE_HEADER: validator.compute_signature(url, params, self.algorithm),
            SIGNATURE_SETTINGS_HEADER: f"key={self.signing_key_sid},algorithm={self.algorithm}",
        }

    def status_params(
        self, sid: str, status: str, *, error_code: int | None = None
    ) -> dict[str, str]:
        """The form fields of Twilio's status callback for this message."""
        message = self.messages[sid]
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "To": message["to"],
            "From": message["from"] or "+4741234567",
        }
        if message["messaging_service_sid"]:
            params["MessagingServiceSid"] = message["messaging_service_sid"]
        if status == "delivered":
            params["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return params

    async def send_status(
        self,
        sid: str,
        status: str,
        *,
        error_code: int | None = None,
        via: str | None = None,
        signature: str | None = None,
        signed: bool = True,
    ) -> CallbackResult:
        """POST the status callback for ``sid`` to the StatusCallback URL it was sent with.

        ``via`` replaces the scheme and host the request really goes to, while the
        signature still covers the public URL (the gateway behind a proxy).
        ``signature`` forces a header value; ``signed=False`` sends none.
        """
        url = self.callback_urls[sid]
        params = self.status_params(sid, status, error_code=error_code)
        return await self.post_webhook(url, params, via=via, signature=signature, signed=signed)

    async def send_inbound(
        self,
        url: str,
        *,
        from_: str,
        to: str,
        body: str,
        sid: str | None = None,
        via: str | None = None,
        signed: bool = True,
    ) -> CallbackResult:
        """POST Twilio's incoming-message webhook (an SMS a guardian sent to our number)."""
        sid = sid or "SM" + secrets.token_hex(16)
        params = {
            "ToCountry": "NO",
            "ToState": "",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "ToCity": "",
            "FromZip": "",
            "SmsSid": sid,
            "FromState": "",
            "SmsStatus": "received",
            "FromCity": "",
            "Body": body,
            "FromCountry": "NO",
            "To": to,
            "ToZip": "",
            "NumSegments": str(count_segments(body)),
            "MessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "ApiVersion": API_VERSION,
        }
        return await self.post_webhook(url, params, via=via, signed=signed)

    async def post_webhook(
        self,
        url: str,
        params: dict[str, str],
        *,
        via: str | None = None,
        signature: str | None = None,
        signed: bool = True,
    ) -> CallbackResult:
        """POST a form webhook to ``url`` (or to the same path on ``via``), signed for ``url``."""
        headers = {"User-Agent": "TwilioProxy/1.1"}
        if signed:
            headers.update(self.sign(url, params))
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        target = url
        if via is not None:
            real = urlsplit(via)
            public = urlsplit(url)
            target = urlunsplit((real.scheme, real.netloc, public.path, public.query, ""))
        assert self._session is not None, "start the peer first"
        async with self._session.post(target, data=params, headers=headers) as response:
            return CallbackResult(
                response.status, await response.text(), response.headers.get("Content-Type", "")
            )
