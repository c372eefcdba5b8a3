"""Reading a zip archive within limits, for uploads such as a OneRoster export.

A zip says in its directory how large each file is, but a hostile one may lie,
and a small one may unpack to gigabytes (a zip bomb). So :func:`checked_members`
first streams every file through the decompressor, a chunk at a time, keeping
nothing, and refuses the archive as soon as any limit is passed: the number of
entries, a file's or all files' uncompressed size, or a file's compression
ratio. Only an archive that passed is read for real. Memory stays at one chunk
while refusing, whatever the archive claims.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import PurePosixPath

from gateway.errors import PayloadTooLarge, ValidationFailed
from gateway.settings import ArchiveSettings

CHUNK = 64 * 1024
# Files smaller than this are never refused for their ratio: a short CSV of repeated
# values compresses far better than a real export, and is harmless.
RATIO_FLOOR = 1024 * 1024


def zip_error(loc: list[str | int], message: str) -> ValidationFailed:
    return ValidationFailed(
        "the archive cannot be read",
        errors=[{"loc": loc, "message": message, "type": "zip_invalid"}],
    )


def _too_large(name: str, message: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the archive is refused: {message}",
        errors=[{"loc": [name], "message": message, "type": "archive_limit"}],
    )


def checked_members(
    archive: zipfile.ZipFile, limits: ArchiveSettings
) -> dict[str, zipfile.ZipInfo]:
    """The archive's files by lower-case base name (folders, ``__MACOSX`` and dot files
    left out), after streaming each through the decompressor within ``limits``.

    PayloadTooLarge (413) names the file and the limit; ValidationFailed (422) for a
    file held twice or one that cannot be unpacked.
    """
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise _too_large("archive", f"more than {limits.max_entries} entries")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        path = PurePosixPath(info.filename)
        if info.is_dir() or "__MACOSX" in path.parts or path.name.startswith("."):
            continue
        name = path.name.lower()
        if name in members:
            raise zip_error([name], "the archive holds this file twice")
        members[name] = info
    total = 0
    for name, info in members.items():
        # What the directory claims is checked first; what really comes out after.
        ratio_limit = max(RATIO_FLOOR, int(info.compress_size * limits.max_ratio))
        file_limit = min(limits.max_file_bytes, ratio_limit)
        size = 0
        try:
            with archive.open(info) as member:
                while chunk := member.read(CHUNK):
                    size += len(chunk)
                    if size > file_limit or total + size > limits.max_total_bytes:
                        break
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error) as exc:
            raise zip_error([name], "cannot be read from the archive") from exc
        except EOFError as exc:
            raise zip_error([name], "the archive is cut short") from exc
        if size > limits.max_file_bytes:
            raise _too_large(name, f"unpacks to more than {limits.max_file_bytes} bytes")
        if size > ratio_limit:
            raise _too_large(name, f"compressed more than {limits.max_ratio:g} times")
        total += size
        if total > limits.max_total_bytes:
            raise _too_large(name, f"all files unpack to more than {limits.max_total_bytes} bytes")
    return members
