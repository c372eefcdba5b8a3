"""DeepL's REST API v2: ``POST {url}/v2/translate`` with the header
``Authorization: DeepL-Auth-Key <key>`` and JSON ``{"text": [texts], "source_lang": "NB",
"target_lang": "AR", "tag_handling": "xml"}``, answered
``{"translations": [{"detected_source_language": "NB", "text": "..."}]}``. Errors:
``{"message": "..."}`` with 400, 403 (key), 413 (too large), 429 (too many requests),
456 (quota used up), 5xx and 529 (overloaded)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.errors import TranslationRejected
from gateway.settings import TranslationSettings
from gateway.translators.base import HttpCaller, status_code

FREE_URL = "https://api-free.deepl.com"  # keys ending in ":fx"
PRO_URL = "https://api.deepl.com"
# Target languages DeepL translates into (its documentation's list, 2025); ours are
# ISO 639-1, DeepL's upper case, with a region for English and Portuguese.
TARGETS = {
    "ar", "bg", "cs", "da", "de", "el", "en", "es", "et", "fi", "fr", "he", "hu", "id",
    "it", "ja", "ko", "lt", "lv", "nb", "nl", "pl", "pt", "ro", "ru", "sk", "sl", "sv",
    "th", "tr", "uk", "vi", "zh",
}  # fmt: skip
SOURCES = TARGETS  # DeepL reads what it writes
_REGIONAL = {"en": "EN-GB", "pt": "PT-PT"}


def _errors(status: int, body: Any) -> tuple[str, bool]:
    if status == 456:
        return "quota_exceeded", False
    if status == 529:
        return "rate_limited", True
    if status == 413:
        return "too_large", False
    return status_code(status)


class DeepL:
    name = "deepl"

    def __init__(self, settings: TranslationSettings) -> None:
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        base = settings.url or (FREE_URL if key.endswith(":fx") else PRO_URL)
        self._url = base.rstrip("/") + "/v2/translate"
        self._headers = {"Authorization": f"DeepL-Auth-Key {key}"}
        self._http = HttpCaller(
            timeout=settings.timeout, attempts=settings.attempts, max_wait=settings.max_wait
        )

    def supports(self, source: str, target: str) -> bool:
        return source != target and source in SOURCES and target in TARGETS

    async def translate(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        if not texts:
            return []
        body = {
            "text": list(texts),
            "source_lang": source.upper(),
            "target_lang": _REGIONAL.get(target, target.upper()),
            "tag_handling": "xml",  # keeps the <x id="N"/> placeholders
        }
        data = await self._http.post(self._url, body, self._headers, _errors)
        found = data.get("translations") if isinstance(data, dict) else None
        if not isinstance(found, list) or len(found) != len(texts):
            raise TranslationRejected("DeepL answered no batch", code="bad_answer")
        return [str(item.get("text", "")) if isinstance(item, dict) else "" for item in found]

    async def aclose(self) -> None:
        await self._http.aclose()
