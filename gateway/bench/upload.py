"""Time and memory of one largest allowed upload (``POST /v1/attachments``).

    python -m gateway.bench.upload [--mb 10] [--kind pdf|jpeg]

Runs a gateway (SQLite, folder storage) in a temporary folder, streams a file of
``attachments.max_file_bytes`` from disk to it over HTTP on 127.0.0.1, and prints the
time of the request and the process's peak memory (RSS) before and after, so the upload's
own share shows: a streamed upload should not grow with the file. A JPEG is a photo
of that many bytes (noise, which compresses badly) re-encoded by Pillow.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import resource
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import aiohttp
from PIL import Image

from gateway.auth import create_tenant
from gateway.service import Service
from gateway.settings import load_settings


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _make_file(path: Path, size: int, kind: str) -> None:
    if kind == "pdf":
        with path.open("wb") as out:
            out.write(b"%PDF-1.4\n")
            block = bytes(1024 * 1024)
            while out.tell() + len(block) < size:
                out.write(block)
            out.write(bytes(size - out.tell()))
        return
    side, best = 256, b""
    while True:  # the largest square noise JPEG within the limit
        buffer = io.BytesIO()
        Image.effect_noise((side, side), 80).convert("RGB").save(buffer, "JPEG", quality=92)
        if buffer.tell() > size:
            break
        best, side = buffer.getvalue(), int(side * 1.15)
    path.write_bytes(best)


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(256 * 1024):
            yield chunk


async def measure(megabytes: int, kind: str) -> None:
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        size = megabytes * 1024 * 1024
        settings = load_settings(
            store_url=f"sqlite:///{folder / 'budbringer.db'}",
            outbox_dir=folder / "outbox",
            port=0,
            secret_key="bench-secret-key-that-is-long-enough-0123",
            log_level="WARNING",
            attachments={
                "folder": str(folder / "files"),
                "max_file_bytes": size,
                "max_message_bytes": size,
            },
        )
        source = folder / f"upload.{kind}"
        # In a child process, so making the photo does not count in this one's peak.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            await asyncio.get_running_loop().run_in_executor(pool, _make_file, source, size, kind)
        sent = source.stat().st_size
        service = Service(settings, workers=False)
        await service.start()
        try:
            _, key, _ = await create_tenant(service.store, "Bench", service.clock.now())
            before = _peak_rss_mb()
            started = time.perf_counter()
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"http://127.0.0.1:{service.port}/v1/attachments",
                    params={"name": source.name},
                    data=_chunks(source),
                    headers={"Authorization": f"Bearer {key}"},
                ) as resp,
            ):
                answer = await resp.json()
            elapsed = time.perf_counter() - started
            after = _peak_rss_mb()
        finally:
            await service.stop()
    print(
        f"{kind} {sent} bytes -> HTTP {resp.status}"
        f" {answer.get('content_type')} {answer.get('size')} bytes in {elapsed:.2f} s;"
        f" peak RSS {before:.0f} MB before, {after:.0f} MB after"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=10, help="file size (the limit), MiB")
    parser.add_argument("--kind", choices=("pdf", "jpeg"), default="pdf")
    args = parser.parse_args(argv)
    asyncio.run(measure(args.mb, args.kind))


if __name__ == "__main__":
    main()
