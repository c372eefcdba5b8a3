"""LibreTranslate's HTTP API: ``POST {url}/translate`` with JSON
``{"q": [texts], "source": "nb", "target": "ar", "format": "html", "api_key": ...}``,
answered ``{"translatedText": [texts]}``; errors are ``{"error": "..."}`` with 400 (bad
request, a language it lacks), 403 (a wrong or banned key), 429 (slow down) or 500.

A self-hosted LibreTranslate keeps every text inside the municipality's network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.errors import TranslationRejected
from gateway.settings import TranslationSettings
from gateway.translators.base import HttpCaller, status_code


def _errors(status: int, body: Any) -> tuple[str, bool]:
    error = body.get("error") if isinstance(body, dict) else None
    if status == 400 and isinstance(error, str) and "not supported" in error:
        return "unsupported_language", False
    return status_code(status)


class LibreTranslate:
    name = "libretranslate"

    def __init__(self, settings: TranslationSettings) -> None:
        self._url = settings.url.rstrip("/") + "/translate"
        self._key = settings.api_key.get_secret_value() if settings.api_key else None
        self._http = HttpCaller(
            timeout=settings.timeout, attempts=settings.attempts, max_wait=settings.max_wait
        )

    def supports(self, source: str, target: str) -> bool:
        # The server knows its models; a language it lacks answers 400 "not supported".
        return source != target

    async def translate(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        if not texts:
            return []
        body: dict[str, Any] = {
            "q": list(texts),
            "source": source,
            "target": target,
            "format": "html",  # keeps the <x id="N"/> placeholders as tags
        }
        if self._key:
            body["api_key"] = self._key
        data = await self._http.post(self._url, body, {}, _errors)
        out = data.get("translatedText") if isinstance(data, dict) else None
        if not isinstance(out, list) or len(out) != len(texts):
            raise TranslationRejected("LibreTranslate answered no batch", code="bad_answer")
        return [str(text) for text in out]

    async def aclose(self) -> None:
        await self._http.aclose()
