"""The provider interface and the HTTP call with retries every client shares."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import aiohttp

from gateway.errors import TranslationError, TranslationRejected, TranslationUnavailable


class Translator(Protocol):
    """A machine translation provider. Texts are markup with ``<x id="N"/>`` placeholders
    the provider must keep; one call translates a batch into one language."""

    name: str

    def supports(self, source: str, target: str) -> bool:
        """Whether this provider translates from ``source`` into ``target``."""

    async def translate(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        """The translations of ``texts`` in their order; raises TranslationError."""

    async def aclose(self) -> None: ...


# An error body -> (our code, retryable?) for one status code.
ErrorMapper = Callable[[int, Any], tuple[str, bool]]


def retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (seconds only; providers send no dates here)."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


class HttpCaller:
    """POSTs JSON with one shared session; 429/5xx/timeouts retried with jittered backoff
    (at least Retry-After), within ``attempts`` and never waiting more than ``max_wait``
    at once: a provider that asks for longer is treated as down (the original goes out)."""

    def __init__(self, *, timeout: float, attempts: int, max_wait: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._attempts = attempts
        self._max_wait = max_wait
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(
        self, url: str, body: dict[str, Any], headers: dict[str, str], errors: ErrorMapper
    ) -> Any:
        last: TranslationError | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._post_once(url, body, headers, errors)
            except TranslationUnavailable as exc:
                last = exc
                wait = random.uniform(0, min(self._max_wait, 0.2 * 2**attempt))
                if exc.retry_after is not None:
                    if exc.retry_after > self._max_wait:
                        raise
                    wait = max(wait, exc.retry_after)
                if attempt < self._attempts:
                    await asyncio.sleep(wait)
        assert last is not None
        raise last

    async def _post_once(
        self, url: str, body: dict[str, Any], headers: dict[str, str], errors: ErrorMapper
    ) -> Any:
        try:
            async with self._client().post(url, json=body, headers=headers) as resp:
                try:
                    data: Any = await resp.json(content_type=None)
                except ValueError:
                    data = None
                if resp.status == 200 and data is not None:
                    return data
                code, retryable = errors(resp.status, data)
                message = f"translation provider answered {resp.status} ({code})"
                if retryable:
                    raise TranslationUnavailable(
                        message, code=code, retry_after=retry_after(resp.headers)
                    )
                raise TranslationRejected(message, code=code)
        except (TimeoutError, aiohttp.ClientError) as exc:
            code = "timeout" if isinstance(exc, TimeoutError) else "unreachable"
            raise TranslationUnavailable(f"translation provider {code}", code=code) from exc


def status_code(status: int) -> tuple[str, bool]:
    """The common part of both providers' status codes: (our code, retryable?)."""
    if status == 429:
        return "rate_limited", True
    if status >= 500:
        return f"provider_{status}", True
    if status in (401, 403):
        return "credentials_rejected", False
    return f"provider_{status}", False
