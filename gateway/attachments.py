"""Attachments: upload, check, clean, keep, hand to a message, serve and purge files.

An upload (``POST /v1/attachments``) is streamed into a temporary file, never held in
memory, and refused (413) the moment it passes ``attachments.max_file_bytes``. What the
file *is* comes from its bytes (``filetype``), never from its name or declared type:
PDF, JPEG, PNG and DOCX are allowed, HEIC/HEIF photos are converted to JPEG (with
pillow-heif), anything else is refused (415). Images are decoded and encoded again
with Pillow: EXIF (GPS position, camera, time), XMP, comments and text chunks are
gone; only the pixels (turned upright) and the colour profile remain.

A ``message.created`` names its uploads in ``data.attachments``; each is taken by one
message only, and its retention then runs with the message's. Unused uploads are
removed after ``attachments.unused_hours``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import tempfile
import unicodedata
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import filetype
from PIL import Image, ImageOps

from gateway.clock import Clock
from gateway.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from gateway.filestore import FileStore, FolderFiles
from gateway.headertext import header_text_problem
from gateway.models import Attachment
from gateway.settings import AttachmentSettings
from gateway.store import Store
from gateway.store.attachments import UNKNOWN

log = logging.getLogger(__name__)

PDF = "application/pdf"
JPEG = "image/jpeg"
PNG = "image/png"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HEIC = frozenset({"image/heic", "image/heif"})
# Allowed types and the file name extension each is shown with.
EXTENSIONS = {PDF: "pdf", JPEG: "jpg", PNG: "png", DOCX: "docx"}
ALLOWED_TEXT = "PDF, JPEG, PNG, DOCX, HEIC (converted to JPEG)"
PURGE_BATCH = 500
EMAIL_CACHE_BYTES = 64 * 1024 * 1024  # small files kept in memory for a broadcast's emails
_ILLEGAL_NAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|]+')


def _heic_support() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


HEIC_SUPPORTED = _heic_support()


def travels_in_email(size: int, email_max_bytes: int) -> bool:
    """Whether an email carries a file of ``size`` bytes itself (else a link to it)."""
    return size <= email_max_bytes


def human_size(size: int) -> str:
    """1.2 MB, 340 kB: the size shown next to a file name."""
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    return f"{max(1, round(size / 1000))} kB"


def file_rows(attachments: list[Attachment], prefix: str) -> list[dict[str, str]]:
    """Name, size and link of each file, for pages and templates (``prefix`` + id links)."""
    return [
        {"name": a.name, "size": human_size(a.size), "href": prefix + a.id} for a in attachments
    ]


def clean_name(name: str | None, content_type: str) -> str:
    """A safe file name: no path, no control, format (bidi) or reserved characters, a
    stem of at most 100 characters, and the extension of what the file really is."""
    raw = unicodedata.normalize("NFC", (name or "").replace("\\", "/").rpartition("/")[2])
    raw = "".join(c for c in raw if unicodedata.category(c)[0] != "C")
    stem = _ILLEGAL_NAME.sub(" ", raw).strip(" .")
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", stem).strip(" .")[:100] or "vedlegg"
    if header_text_problem(stem) is not None:
        stem = "vedlegg"
    return f"{stem}.{EXTENSIONS[content_type]}"


def _refused(message: str, kind: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        message, errors=[{"loc": ["body"], "message": message, "type": kind}]
    )


def _is_docx(path: Path) -> bool:
    """A Word document without macros (a .docm renamed .docx is refused)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            types = archive.read("[Content_Types].xml") if "[Content_Types].xml" in names else b""
    except (zipfile.BadZipFile, OSError, KeyError, RuntimeError):
        return False
    macros = "word/vbaProject.bin" in names or b"macroEnabled" in types
    return bool(types) and "word/document.xml" in names and not macros


def sniff(path: Path) -> str | None:
    """The file's type from its bytes: an allowed type, a HEIC type, or None."""
    kind = filetype.guess(str(path))
    mime = str(kind.mime) if kind is not None else None
    if mime in (DOCX, "application/zip"):
        return DOCX if _is_docx(path) else None
    if mime in EXTENSIONS or mime in HEIC:
        return mime
    return None


def _reencode(source: Path, target: Path, mime: str, max_side: int) -> str:
    """Decode and encode again: EXIF/XMP/comments are not carried over. HEIC becomes JPEG;
    a PNG stays PNG (it may be a screenshot with text, where JPEG would blur)."""
    with warnings.catch_warnings():
        # More pixels than Pillow's bomb limit: refused, never decoded (memory).
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        opened = Image.open(source)
    with opened:
        if opened.format == "JPEG":
            opened.draft("RGB", (max_side, max_side))  # the decoder scales down: less memory
        opened.load()
        icc = opened.info.get("icc_profile")
        ImageOps.exif_transpose(opened, in_place=True)  # upright, in place: no second copy
        image: Image.Image = opened
        image.thumbnail((max_side, max_side))
        # Pillow writes what info holds (EXIF, XMP, comments, text chunks): nothing of it.
        image.info = {}
        options: dict[str, Any] = {"icc_profile": icc} if icc else {}
        if mime == PNG:
            image.save(target, format="PNG", optimize=True, **options)
            return PNG
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(target, format="JPEG", quality=88, **options)
        return JPEG


def inspect_file(source: Path, max_side: int) -> tuple[Path, str]:
    """Check and clean an uploaded file; (the file to keep, its type). Runs in a thread."""
    mime = sniff(source)
    if mime is None:
        raise _refused(f"this kind of file is not allowed; allowed: {ALLOWED_TEXT}", "file_type")
    if mime in HEIC and not HEIC_SUPPORTED:
        raise _refused("HEIC photos cannot be converted here; send JPEG or PNG", "heic")
    if mime in (PDF, DOCX):
        return source, mime
    target = source.with_suffix(".clean")
    try:
        kept = _reencode(source, target, mime, max_side)
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        target.unlink(missing_ok=True)
        raise _refused("the image cannot be read", "image_invalid") from exc
    source.unlink(missing_ok=True)
    return target, kept


def _digest(path: Path) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(256 * 1024):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


@dataclass
class _Cached:
    data: bytes


class Attachments:
    """The attachment service: the store's metadata plus the file storage."""

    def __init__(
        self, store: Store, files: FileStore, settings: AttachmentSettings, clock: Clock
    ) -> None:
        self.store = store
        self.files = files
        self.settings = settings
        self.clock = clock
        # Small files an email carries, by id: a broadcast reads each once, not per email.
        self._small: OrderedDict[str, _Cached] = OrderedDict()
        self._small_bytes = 0

    def _work_dir(self) -> Path:
        # Beside the files on the folder backend, so keeping one is a rename.
        if isinstance(self.files, FolderFiles):
            folder = self.files.folder / ".incoming"
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        return Path(tempfile.gettempdir())

    async def upload(
        self, tenant_id: str, chunks: AsyncIterator[bytes], name: str | None
    ) -> Attachment:
        """Stream an upload to disk, check and clean it, keep it; its metadata."""
        work = await asyncio.to_thread(self._work_dir)
        fd, name_on_disk = await asyncio.to_thread(tempfile.mkstemp, dir=work, prefix="up-")
        handle = os.fdopen(fd, "wb")
        raw = Path(name_on_disk)
        kept = raw
        try:
            with handle:
                await self._receive(chunks, handle)
            kept, mime = await asyncio.to_thread(inspect_file, raw, self.settings.max_image_pixels)
            size, sha = await asyncio.to_thread(_digest, kept)
            attachment = Attachment(
                id=f"att_{secrets.token_hex(12)}",
                tenant_id=tenant_id,
                name=clean_name(name, mime),
                content_type=mime,
                size=size,
                sha256=sha,
                created_at=self.clock.now(),
            )
            await self.files.put(attachment.key, kept, mime)
            await self.store.attachments.add(attachment)
        finally:
            for path in {raw, kept}:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        log.info(
            "attachment stored",
            extra={"attachment_id": attachment.id, "type": mime, "bytes": size},
        )
        return attachment

    async def _receive(self, chunks: AsyncIterator[bytes], handle: IO[bytes]) -> None:
        limit = self.settings.max_file_bytes
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the file is larger than {limit} bytes")
            await asyncio.to_thread(handle.write, chunk)
        if size == 0:
            raise ValidationFailed(
                "the file is empty",
                errors=[{"loc": ["body"], "message": "empty file", "type": "empty"}],
            )

    async def claim(self, tenant_id: str, ids: list[str], message_id: str) -> None:
        """Give the uploads ``ids`` to the message, or raise ValidationFailed (422) naming
        each id that is unknown (or another tenant's), used by another message, or
        over the per-message limits."""
        if not ids or await self.store.get_message(tenant_id, message_id) is not None:
            return  # a replay: the message took its files when it was accepted
        found = {a.id: a for a in await self.store.attachments.get(tenant_id, ids)}
        errors: list[dict[str, Any]] = []
        for n, attachment_id in enumerate(ids):
            attachment = found.get(attachment_id)
            if attachment is None:
                errors.append(_error(n, "unknown attachment", "unknown_reference"))
            elif attachment.message_id not in (None, message_id):
                errors.append(_error(n, "used by another message already", "attachment_used"))
        if len(set(ids)) != len(ids):
            errors.append(_error(None, "an attachment is named twice", "duplicate"))
        if len(ids) > self.settings.max_files:
            limit = self.settings.max_files
            errors.append(_error(None, f"at most {limit} attachments", "too_many"))
        total = sum(a.size for a in found.values())
        if total > self.settings.max_message_bytes:
            limit = self.settings.max_message_bytes
            errors.append(_error(None, f"together larger than {limit} bytes", "too_large"))
        if not errors:
            problems = await self.store.attachments.claim(
                tenant_id, ids, message_id, self.clock.now()
            )
            errors = [
                _error(ids.index(i), "unknown attachment", "unknown_reference")
                if why == UNKNOWN
                else _error(ids.index(i), "used by another message already", "attachment_used")
                for i, why in problems.items()
            ]
        if errors:
            raise ValidationFailed("the attachments cannot be sent", errors=errors)

    async def for_message(self, tenant_id: str, message_id: str) -> list[Attachment]:
        return await self.store.attachments.for_message(tenant_id, message_id)

    def read(self, attachment: Attachment) -> AsyncIterator[bytes]:
        return self.files.read(attachment.key)

    async def email_files(self, attachments: list[Attachment]) -> list[tuple[str, str, bytes]]:
        """(name, type, bytes) of the files an email carries itself."""
        out = []
        for attachment in attachments:
            if travels_in_email(attachment.size, self.settings.email_max_bytes):
                out.append(
                    (attachment.name, attachment.content_type, await self._bytes(attachment))
                )
        return out

    async def _bytes(self, attachment: Attachment) -> bytes:
        cached = self._small.get(attachment.id)
        if cached is not None:
            self._small.move_to_end(attachment.id)
            return cached.data
        data = b"".join([chunk async for chunk in self.read(attachment)])
        self._small[attachment.id] = _Cached(data)
        self._small_bytes += len(data)
        while self._small_bytes > EMAIL_CACHE_BYTES and len(self._small) > 1:
            _, dropped = self._small.popitem(last=False)
            self._small_bytes -= len(dropped.data)
        return data

    async def purge(self, used_before: datetime) -> int:
        """Remove files whose message is past the retention, and unused uploads; the count."""
        unused_before = self.clock.now() - timedelta(hours=self.settings.unused_hours)
        removed = 0
        while True:
            pairs = await self.store.attachments.expired(used_before, unused_before, PURGE_BATCH)
            if not pairs:
                return removed
            # Files first: metadata without a file is harmless, a file without metadata lost.
            await self.files.delete([Attachment.key_of(t, i) for t, i in pairs])
            await self.store.attachments.remove(pairs)
            removed += len(pairs)
            if len(pairs) < PURGE_BATCH:
                return removed


def _error(index: int | None, message: str, kind: str) -> dict[str, Any]:
    loc: list[Any] = ["data", "attachments"]
    if index is not None:
        loc.append(index)
    return {"loc": loc, "message": message, "type": kind}
