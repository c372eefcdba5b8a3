"""Where attachment bytes live: a folder (the embedded default) or an S3-compatible bucket.

A :class:`FileStore` keeps opaque bytes under a key (``<tenant>/<attachment id>``);
what the bytes are is recorded in the store (gateway/store/*_attachments.py). Files are
written once and never changed, so neither backend needs locking.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from gateway.errors import ConfigError, StoreError
from gateway.settings import AttachmentSettings

CHUNK = 256 * 1024


class FileStore(Protocol):
    async def put(self, key: str, source: Path, content_type: str) -> None:
        """Store the file at ``source`` (a finished temporary file) under ``key``."""

    def read(self, key: str) -> AsyncIterator[bytes]:
        """The bytes under ``key`` in chunks; StoreError when they are gone."""

    async def delete(self, keys: list[str]) -> None:
        """Remove these keys; a key that is gone already is no error."""

    async def aclose(self) -> None: ...


class FolderFiles:
    """Files under one folder, ``<folder>/<tenant>/<id>``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        tenant, _, name = key.partition("/")
        if not tenant or not name or "/" in name or ".." in key or key.startswith("."):
            raise StoreError("not a file key")
        return self.folder / tenant / name

    async def put(self, key: str, source: Path, content_type: str) -> None:
        target = self._path(key)

        def move() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)  # the upload's temporary file is on the same disk

        try:
            await asyncio.to_thread(move)
        except OSError:
            # Another file system (a temporary folder elsewhere): copy, then rename.
            partial = target.with_suffix(".part")
            await asyncio.to_thread(_copy, source, partial)
            await asyncio.to_thread(os.replace, partial, target)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except OSError as exc:
            raise StoreError("the file is gone") from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
        finally:
            handle.close()

    async def delete(self, keys: list[str]) -> None:
        def remove() -> None:
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    self._path(key).unlink()

        await asyncio.to_thread(remove)

    async def aclose(self) -> None:
        return None


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
    source.unlink()


class S3Files:
    """Files in an S3-compatible bucket, ``<prefix><tenant>/<id>``, through aiobotocore."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
        }
        self._exit: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._opening = asyncio.Lock()

    async def _s3(self) -> Any:
        async with self._opening:
            if self._client is None:
                from aiobotocore.session import get_session

                stack = contextlib.AsyncExitStack()
                self._client = await stack.enter_async_context(
                    get_session().create_client("s3", **self._options)
                )
                self._exit = stack
        return self._client

    async def put(self, key: str, source: Path, content_type: str) -> None:
        s3 = await self._s3()
        try:
            with source.open("rb") as body:
                await s3.put_object(
                    Bucket=self.bucket,
                    Key=self.prefix + key,
                    Body=body,
                    ContentType=content_type,
                    ContentLength=source.stat().st_size,
                )
        except Exception as exc:  # botocore's errors share no base with aiohttp's
            raise StoreError("the bucket refused the file") from exc
        finally:
            source.unlink(missing_ok=True)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        s3 = await self._s3()
        try:
            answer = await s3.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:
            raise StoreError("the file is gone") from exc
        async with answer["Body"] as body:
            while chunk := await body.read(CHUNK):
                yield chunk

    async def delete(self, keys: list[str]) -> None:
        if not keys:
            return
        s3 = await self._s3()
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys at most
            batch = [{"Key": self.prefix + key} for key in keys[start : start + 1000]]
            try:
                await s3.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except Exception as exc:
                raise StoreError("the bucket did not delete the files") from exc

    async def aclose(self) -> None:
        if self._exit is not None:
            await self._exit.aclose()
        self._exit = self._client = None


def open_file_store(settings: AttachmentSettings) -> FileStore:
    """The file storage the settings name."""
    if settings.storage == "folder":
        return FolderFiles(settings.folder)
    s3 = settings.s3
    if s3 is None:  # the settings validator refuses this already
        raise ConfigError("attachments.storage is s3 but attachments.s3 is not set")
    return S3Files(
        s3.bucket,
        prefix=s3.prefix,
        endpoint_url=s3.endpoint_url,
        region=s3.region,
        access_key_id=s3.access_key_id,
        secret_access_key=(
            s3.secret_access_key.get_secret_value() if s3.secret_access_key else None
        ),
    )
