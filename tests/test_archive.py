"""Zip limits enforced while unpacking (entries, file and total size, ratio), with
bounded memory: a zip bomb is refused before it is kept anywhere."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from gateway.errors import PayloadTooLarge
from gateway.oneroster import load_oneroster_zip
from gateway.settings import ArchiveSettings
from tests.conftest import TenantCreds
from tests.test_oneroster import NORDBY, ROOT, zipped

MB = 1024 * 1024


def bomb(path: Path | None = None, *, megabytes: int = 300, name: str = "users.csv") -> bytes:
    """An export's manifest and one file of zeros, written a megabyte at a time (never
    whole in memory), so that a reader gets as far as unpacking it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.write(NORDBY / "manifest.csv", "manifest.csv")
        with archive.open(name, "w", force_zip64=True) as member:
            zeros = bytes(MB)
            for _ in range(megabytes):
                member.write(zeros)
    data = buffer.getvalue()
    if path is not None:
        path.write_bytes(data)
    return data


def refusal(data: bytes, **limits: float) -> PayloadTooLarge:
    with pytest.raises(PayloadTooLarge) as exc:
        load_oneroster_zip(data, limits=ArchiveSettings(**limits))
    return exc.value


def test_each_limit_is_named() -> None:
    export = zipped(NORDBY)
    assert load_oneroster_zip(export, limits=ArchiveSettings()).batch.persons
    too_many = refusal(export, max_entries=3)
    assert too_many.errors == [
        {"loc": ["archive"], "message": "more than 3 entries", "type": "archive_limit"}
    ]
    biggest = max(p.stat().st_size for p in NORDBY.iterdir())
    total = sum(p.stat().st_size for p in NORDBY.iterdir())
    per_file = refusal(export, max_file_bytes=max(1024, biggest - 1))
    assert per_file.errors[0]["message"].startswith("unpacks to more than")
    assert (
        refusal(export, max_total_bytes=total - 1)
        .errors[0]["message"]
        .startswith("all files unpack to more than")
    )
    ratio = refusal(bomb(megabytes=4, name="orgs.csv"))
    assert ratio.errors == [
        {"loc": ["orgs.csv"], "message": "compressed more than 100 times", "type": "archive_limit"}
    ]
    # A small file of repeated values is never refused for its ratio.
    assert load_oneroster_zip(export, limits=ArchiveSettings(max_ratio=1)).batch.persons


MEASURE = """
import json, sys
from pathlib import Path
from gateway.errors import PayloadTooLarge
from gateway.oneroster import load_oneroster_zip

def kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

data = Path(sys.argv[1]).read_bytes()
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from now
idle = kb("VmRSS")
try:
    load_oneroster_zip(data)
    refused = False
except PayloadTooLarge:
    refused = True
print(json.dumps({"refused": refused, "idle_kb": idle, "peak_kb": kb("VmHWM")}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_a_zip_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    bomb(archive, megabytes=300)
    assert archive.stat().st_size < MB  # 300 MB of zeros in a few hundred KB
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(archive)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(out.stdout)
    grew_mb = (figures["peak_kb"] - figures["idle_kb"]) / 1024
    print(f"peak RSS while refusing a 300 MB zip bomb: {grew_mb:.1f} MB above idle")
    assert figures["refused"]
    assert grew_mb < 50  # a generous bound: it is a few MB; it was 256 MB


async def test_api_answers_413_naming_the_file(app_client: TestClient, tenant: TenantCreds) -> None:
    resp = await app_client.post(
        "/v1/directory/oneroster",
        data=bomb(megabytes=20),
        headers={"Authorization": f"Bearer {tenant.api_key}", "Content-Type": "application/zip"},
    )
    assert resp.status == 413
    body = await resp.json()
    assert body["error"] == "payload_too_large"
    assert body["errors"][0]["loc"] == ["users.csv"]
