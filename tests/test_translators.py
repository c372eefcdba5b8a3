"""The translation clients against the provider-like peers: batches, status codes and
error bodies mapped into the error tree, 429 and 5xx retried (Retry-After honoured up to
max_wait), wrong settings refused before anything starts."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from gateway.config_names import check_names
from gateway.errors import ConfigError, TranslationRejected, TranslationUnavailable
from gateway.settings import Settings, TranslationSettings
from gateway.translate_guard import guard, restore
from gateway.translators import build_translator
from gateway.translators.deepl import DeepL
from gateway.translators.libretranslate import LibreTranslate
from tests.peers.translate import DeepLPeer, LibreTranslatePeer

TEXTS = ["Tur", 'Ta med <x id="0"/> &amp; mat.']


@pytest.fixture
async def libre_peer() -> AsyncIterator[LibreTranslatePeer]:
    async with LibreTranslatePeer(api_key="k") as peer:
        yield peer


@pytest.fixture
async def deepl_peer() -> AsyncIterator[DeepLPeer]:
    async with DeepLPeer(auth_key="key") as peer:
        yield peer


def libre(url: str, key: str = "k", **more: float) -> LibreTranslate:
    settings = TranslationSettings(
        provider="libretranslate", url=url, api_key=key, max_wait=0, **more
    )
    return LibreTranslate(settings)


def deepl(url: str, key: str = "key") -> DeepL:
    return DeepL(TranslationSettings(provider="deepl", url=url, api_key=key, max_wait=0))


async def test_libretranslate_translates_a_batch(libre_peer: LibreTranslatePeer) -> None:
    client = libre(libre_peer.base_url)
    try:
        assert await client.translate(TEXTS, "nb", "pl") == [
            "[pl] Tur",
            '[pl] Ta med <x id="0"/> &amp; mat.',
        ]
    finally:
        await client.aclose()
    (request,) = libre_peer.requests
    assert request == {"q": TEXTS, "source": "nb", "target": "pl", "format": "html", "api_key": "k"}


@pytest.mark.parametrize(
    ("status", "code", "tries"),
    [(403, "credentials_rejected", 1), (500, "provider_500", 3), (429, "rate_limited", 3)],
)
async def test_libretranslate_errors(
    libre_peer: LibreTranslatePeer, status: int, code: str, tries: int
) -> None:
    libre_peer.fail_next(status, times=5, retry_after=0 if status == 429 else None)
    client = libre(libre_peer.base_url)
    kind = TranslationRejected if status == 403 else TranslationUnavailable
    try:
        with pytest.raises(kind) as caught:
            await client.translate(TEXTS, "nb", "ar")
    finally:
        await client.aclose()
    assert caught.value.code == code
    assert len(libre_peer.requests) == tries


async def test_libretranslate_wrong_key_and_unsupported_language(
    libre_peer: LibreTranslatePeer,
) -> None:
    libre_peer.unsupported.add("ti")
    client = libre(libre_peer.base_url, key="wrong")
    other = libre(libre_peer.base_url)
    try:
        with pytest.raises(TranslationRejected) as caught:
            await client.translate(TEXTS, "nb", "ar")
        assert caught.value.code == "credentials_rejected"
        with pytest.raises(TranslationRejected) as caught:
            await other.translate(TEXTS, "nb", "ti")
        assert caught.value.code == "unsupported_language"
    finally:
        await client.aclose()
        await other.aclose()


async def test_a_retry_after_beyond_max_wait_is_not_waited_for(
    libre_peer: LibreTranslatePeer,
) -> None:
    libre_peer.fail_next(429, retry_after=120)
    client = libre(libre_peer.base_url)
    try:
        with pytest.raises(TranslationUnavailable) as caught:
            await client.translate(TEXTS, "nb", "ar")
    finally:
        await client.aclose()
    assert caught.value.retry_after == 120
    assert len(libre_peer.requests) == 1


async def test_an_unreachable_server_is_mapped_from_the_client_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = libre(f"http://127.0.0.1:{port}", attempts=1)
    try:
        with pytest.raises(TranslationUnavailable) as caught:
            await client.translate(TEXTS, "nb", "ar")
    finally:
        await client.aclose()
    assert caught.value.code == "unreachable"
    assert caught.value.__cause__ is not None


async def test_deepl_translates_a_batch_with_xml_tags(deepl_peer: DeepLPeer) -> None:
    client = deepl(deepl_peer.base_url)
    try:
        out = await client.translate(TEXTS, "nb", "en")
    finally:
        await client.aclose()
    assert out == ["[EN-GB] Tur", '[EN-GB] Ta med <x id="0"/> &amp; mat.']
    (request,) = deepl_peer.requests
    assert request == {
        "text": TEXTS,
        "source_lang": "NB",
        "target_lang": "EN-GB",
        "tag_handling": "xml",
    }
    assert deepl_peer.headers[0]["Authorization"] == "DeepL-Auth-Key key"


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (456, "quota_exceeded", TranslationRejected),
        (403, "credentials_rejected", TranslationRejected),
        (503, "provider_503", TranslationUnavailable),
        (529, "rate_limited", TranslationUnavailable),
    ],
)
async def test_deepl_errors(
    deepl_peer: DeepLPeer, status: int, code: str, kind: type[Exception]
) -> None:
    deepl_peer.fail_next(status, times=3)
    client = deepl(deepl_peer.base_url)
    try:
        with pytest.raises(kind) as caught:
            await client.translate(TEXTS, "nb", "ar")
    finally:
        await client.aclose()
    assert getattr(caught.value, "code", None) == code


async def test_deepl_retries_a_429_then_answers(deepl_peer: DeepLPeer) -> None:
    deepl_peer.fail_next(429, retry_after=0)
    client = deepl(deepl_peer.base_url)
    try:
        assert await client.translate(["Hei"], "nb", "uk") == ["[UK] Hei"]
    finally:
        await client.aclose()
    assert len(deepl_peer.requests) == 2


def test_deepl_knows_what_it_cannot_translate() -> None:
    client = DeepL(TranslationSettings(provider="deepl", api_key="k:fx"))
    assert client.supports("nb", "ar") and not client.supports("nb", "so")
    assert not client.supports("nn", "ar")


def test_guarded_markup_is_well_formed_and_restored() -> None:
    text = "Ola & Kari <3 kommer 3. mars kl. 8:15"
    guarded = guard(text, ["Ola", "Kari"])
    assert "Ola" not in guarded.markup and "mars" not in guarded.markup
    assert restore(guarded.markup, guarded.spans) == text
    with pytest.raises(TranslationRejected):
        restore(guarded.markup.replace('<x id="1"/>', ""), guarded.spans)


def test_wrong_translation_settings_fail_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="LibreTranslate server"):
        TranslationSettings(provider="libretranslate")
    with pytest.raises(ValidationError, match="api_key must be set for DeepL"):
        TranslationSettings(provider="deepl")
    with pytest.raises(ValidationError, match="http"):
        TranslationSettings(provider="libretranslate", url="translate.kommune.no")
    with pytest.raises(ValidationError):
        TranslationSettings.model_validate({"provider": "google"})
    monkeypatch.setenv("BUDBRINGER_TRANSLATION__PROVIDR", "deepl")
    with pytest.raises(ConfigError, match="TRANSLATION__PROVIDER"):  # the suggestion
        check_names(os.environ, None, Settings)
    assert build_translator(TranslationSettings()) is None
