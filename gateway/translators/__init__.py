"""Machine translation of staff text: one small interface, one client per provider.

* :mod:`gateway.translators.base` — the :class:`Translator` protocol and the HTTP call
  with retries every client shares (429 and 5xx backed off, Retry-After honoured).
* :mod:`gateway.translators.libretranslate` — LibreTranslate's ``POST /translate``
  (self-hostable: the text never leaves the municipality).
* :mod:`gateway.translators.deepl` — DeepL's REST API v2 ``POST /v2/translate``.

Texts reach a client as markup: protected spans (names, dates) are already replaced by
empty ``<x id="N"/>`` tags (gateway/translate_guard.py) that both providers keep, so a
name never reaches the provider at all.
"""

from __future__ import annotations

from gateway.settings import TranslationSettings
from gateway.translators.base import Translator


def build_translator(settings: TranslationSettings | None) -> Translator | None:
    """The configured provider's client, or None when translation is off."""
    if settings is None or settings.provider == "none":
        return None
    if settings.provider == "libretranslate":
        from gateway.translators.libretranslate import LibreTranslate

        return LibreTranslate(settings)
    from gateway.translators.deepl import DeepL

    return DeepL(settings)


__all__ = ["Translator", "build_translator"]
