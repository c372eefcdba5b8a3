"""Local servers that behave like the translation providers, for tests and the demo.

* :class:`LibreTranslatePeer` — ``POST /translate`` (JSON ``q`` string or list,
  ``source``, ``target``, ``format``, ``api_key``) answered ``{"translatedText": ...}``;
  errors as LibreTranslate answers them: ``{"error": "..."}`` with 400 (missing
  field, "xx is not supported"), 403 (invalid API key), 429 ("Slowdown") and 500.
* :class:`DeepLPeer` — ``POST /v2/translate`` with ``Authorization: DeepL-Auth-Key``,
  JSON ``text`` list, ``target_lang``, ``source_lang``, ``tag_handling``; answered
  ``{"translations": [{"detected_source_language", "text"}]}``; errors
  ``{"message": "..."}`` with 400, 403, 429, 456 (quota) and 5xx. With
  ``tag_handling=xml`` the input must be well-formed XML, as DeepL's v2 tag handling
  demands.

Both "translate" by prefixing each text node with ``[<target>]`` and keep every tag, so
a test can tell a translated text and see the placeholders survive. Failures are
scripted with ``fail_next`` (status, body, Retry-After) or ``down`` (every request
503); every request is recorded.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_TAG = re.compile(r"(<[^>]+>)")


def fake_translate(text: str, target: str) -> str:
    """Prefix the first text node with ``[target]``; tags stay as they are."""
    parts = _TAG.split(text)
    for i, part in enumerate(parts):
        if part and not part.startswith("<") and part.strip():
            parts[i] = f"[{target}] {part}"
            break
    else:
        parts.insert(0, f"[{target}] ")
    return "".join(parts)


@dataclass
class Scripted:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _Peer:
    PATH = ""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.unsupported: set[str] = set()
        self.down = False
        self._failures: deque[Scripted] = deque()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def fail_next(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        for _ in range(times):
            self._failures.append(Scripted(status, self.error_body(status), headers))

    def error_body(self, status: int) -> dict[str, Any]:
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(self.PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> _Peer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.headers.append(dict(request.headers))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.requests.append(body if isinstance(body, dict) else {"raw": raw.decode()})
        if self.down:
            return web.json_response(self.error_body(503), status=503)
        if self._failures:
            failure = self._failures.popleft()
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        if not isinstance(body, dict):
            return web.json_response(self.error_body(400), status=400)
        return self.answer(request, body)

    def answer(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        raise NotImplementedError


class LibreTranslatePeer(_Peer):
    PATH = "/translate"

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key

    def error_body(self, status: int) -> dict[str, Any]:
        text = {
            400: "Invalid request: missing q parameter",
            403: "Invalid API key",
            429: "Slowdown: 30 per 1 minute",
        }.get(status, "Internal Server Error")
        return {"error": text}

    def answer(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        if self.api_key is not None and body.get("api_key") != self.api_key:
            return web.json_response(self.error_body(403), status=403)
        for name in ("q", "source", "target"):
            if not body.get(name):
                return web.json_response(
                    {"error": f"Invalid request: missing {name} parameter"}, status=400
                )
        for lang in (body["source"], body["target"]):
            if lang in self.unsupported:
                return web.json_response({"error": f"{lang} is not supported"}, status=400)
        q = body["q"]
        target = str(body["target"])
        if isinstance(q, list):
            return web.json_response({"translatedText": [fake_translate(t, target) for t in q]})
        return web.json_response({"translatedText": fake_translate(str(q), target)})


class DeepLPeer(_Peer):
    PATH = "/v2/translate"

    def __init__(self, *, auth_key: str) -> None:
        super().__init__()
        self.auth_key = auth_key

    def error_body(self, status: int) -> dict[str, Any]:
        text = {
            400: "Bad request. Reason: Value for 'text' not supported.",
            403: "Wrong endpoint. Use https://api.deepl.com",
            429: "Too many requests. Please wait and resend your request.",
            456: "Quota exceeded. The character limit has been reached.",
        }.get(status, "Internal server error")
        return {"message": text}

    def answer(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        if request.headers.get("Authorization") != f"DeepL-Auth-Key {self.auth_key}":
            return web.json_response({"message": "Forbidden"}, status=403)
        texts = body.get("text")
        target = body.get("target_lang")
        if not isinstance(texts, list) or not texts:
            return web.json_response(self.error_body(400), status=400)
        if not isinstance(target, str) or target.lower().split("-")[0] in self.unsupported:
            return web.json_response(
                {"message": "Value for 'target_lang' not supported."}, status=400
            )
        if body.get("tag_handling") == "xml":
            for text in texts:
                try:
                    ET.fromstring(f"<r>{text}</r>")
                except ET.ParseError:
                    return web.json_response(
                        {"message": "Tag handling parsing failed, please check input."},
                        status=400,
                    )
        source = str(body.get("source_lang") or "EN")
        return web.json_response(
            {
                "translations": [
                    {"detected_source_language": source, "text": fake_translate(t, target)}
                    for t in texts
                ]
            }
        )
