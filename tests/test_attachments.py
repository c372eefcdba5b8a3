"""Issue 16, attachments through the HTTP API of a running gateway: uploads checked from
their bytes, photos without EXIF, a PDF inside the email at a real SMTP server (aiosmtpd)
and a link to the photo, downloads only through the recipient's own link or token."""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from gateway.clock import ManualClock
from gateway.constants import JOB_PURGE
from gateway.models import DirectoryBatch, Job
from gateway.settings import load_settings
from tests.conftest import SECRET_KEY
from tests.harness import Gateway, new_tenant, running
from tests.peers.s3 import S3Peer
from tests.peers.smtp import SmtpPeer

PUBLIC_URL = "https://budbringer.example.no"
SENDER = "Asker kommune <varsel@asker.kommune.no>"

DIRECTORY = DirectoryBatch.model_validate(
    {
        "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
        "groups": [
            {"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"},
            {"id": "g2", "unit_id": "u1", "kind": "class", "name": "6B"},
        ],
        "persons": [
            {"id": "c1", "given_name": "Kari", "family_name": "Elev", "role": "child",
             "birth_date": "2015-04-01",
             "unit_ids": ["u1"], "group_ids": ["g1"]},
            {"id": "c2", "given_name": "Per", "family_name": "Elev", "role": "child",
             "birth_date": "2015-04-01",
             "unit_ids": ["u1"], "group_ids": ["g2"]},
            {"id": "p1", "given_name": "Anne", "family_name": "Berg", "role": "guardian",
             "email": "p1@familie.no"},
            {"id": "p2", "given_name": "Ola", "family_name": "Dal", "role": "guardian",
             "email": "p2@familie.no"},
        ],
        "relations": [
            {"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True},
            {"child_id": "c2", "guardian_id": "p2", "parental_responsibility": True},
        ],
    }
)  # fmt: skip

GPS = {1: "N", 2: (59.0, 54.0, 12.5), 3: "E", 4: (10.0, 45.0, 1.0)}


def minimal_pdf() -> bytes:
    """A one-page PDF with a correct cross-reference table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def photo_with_gps(size: int = 300) -> bytes:
    image = Image.effect_noise((size, size), 64).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "Kamera AS"
    exif[0x8825] = GPS
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, comment=b"Tatt hjemme hos Berg")
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and header of any size, and no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpPeer]:
    async with SmtpPeer() as peer:
        yield peer


def settings_for(tmp_path: Path, smtp: SmtpPeer, **attachments: Any) -> Any:
    return load_settings(
        store_url=f"sqlite:///{tmp_path / 'budbringer.db'}",
        outbox_dir=tmp_path / "outbox",
        public_url=PUBLIC_URL,
        secret_key=SECRET_KEY,
        channels=["inapp", "email"],
        smtp={"host": smtp.host, "port": smtp.port, "tls": "none", "sender": SENDER},
        attachments={
            "folder": str(tmp_path / "files"),
            "email_max_bytes": 10_000,
            "max_file_bytes": 200_000,
            "max_message_bytes": 300_000,
            **attachments,
        },
    )


@pytest.fixture
async def gw(tmp_path: Path, smtp: SmtpPeer) -> AsyncIterator[Gateway]:
    async with running(settings_for(tmp_path, smtp), ManualClock()) as gateway:
        yield gateway


async def upload(
    gw: Gateway, key: str, data: bytes, name: str, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with gw.session.post(
        f"{gw.url}/v1/attachments",
        params={"name": name},
        data=data,
        headers={**gw.headers(key), **headers},
    ) as resp:
        return resp.status, await resp.json()


def message_event(event_id: str, group: str, attachments: list[str]) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "message.created",
        "data": {
            "audience": {"groups": [group]},
            "subject": "Tur til skogen",
            "body": "Lappen og bildet fra turen ligger ved.",
            "attachments": attachments,
        },
    }


def local(url: str, gw: Gateway) -> str:
    return url.replace(PUBLIC_URL, gw.url)


async def test_pdf_in_the_email_and_the_photo_as_a_link_without_exif(
    gw: Gateway, smtp: SmtpPeer
) -> None:
    tenant, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    pdf = minimal_pdf()
    photo = photo_with_gps()
    assert Image.open(io.BytesIO(photo)).getexif().get_ifd(0x8825)  # the upload has GPS
    status, sent_pdf = await upload(gw, key, pdf, "Lappen.pdf", **{"Content-Type": "image/png"})
    assert status == 201, sent_pdf
    assert sent_pdf["content_type"] == "application/pdf"  # the bytes, not the header
    assert sent_pdf["name"] == "Lappen.pdf"
    assert sent_pdf["size"] == len(pdf)
    status, sent_photo = await upload(gw, key, photo, "../../IMG_0001.HEIC")
    assert status == 201, sent_photo
    assert sent_photo["content_type"] == "image/jpeg"
    assert sent_photo["name"] == "IMG_0001.jpg"  # no path, the real extension

    message_id = await gw.post_event(
        key, message_event("evt-1", "g1", [sent_pdf["id"], sent_photo["id"]])
    )
    await gw.run()

    [received] = smtp.received
    assert received.rcpt_tos == ["p1@familie.no"]
    email = received.message
    files = [part for part in email.walk() if part.get_content_disposition() == "attachment"]
    assert [(f.get_filename(), f.get_content_type()) for f in files] == [
        ("Lappen.pdf", "application/pdf")
    ]
    assert files[0].get_payload(decode=True) == pdf
    text = str(email.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert "Lappen.pdf" in text and "IMG_0001.jpg" in text
    [link] = re.findall(rf"{re.escape(PUBLIC_URL)}/r/\S+/files/{sent_photo['id']}", text)
    html = str(email.get_body(("html",)).get_content())  # type: ignore[union-attr]
    assert f'href="{link}"' in html

    async with gw.session.get(local(link, gw)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/jpeg"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        assert 'filename="IMG_0001.jpg"' in resp.headers["Content-Disposition"]
        downloaded = await resp.read()
    image = Image.open(io.BytesIO(downloaded))
    assert image.size == (300, 300)
    assert dict(image.getexif()) == {}
    assert "exif" not in image.info and "comment" not in image.info
    assert b"Kamera AS" not in downloaded and b"Tatt hjemme" not in downloaded

    # The read page lists both files, each a link relative to the page.
    page_url = local(link.rsplit("/files/", 1)[0], gw)
    async with gw.session.get(page_url) as resp:
        page = await resp.text()
    assert "Lappen.pdf" in page and "IMG_0001.jpg" in page
    assert f'/files/{sent_pdf["id"]}"' in page

    # The in-app inbox lists them, and the guardian's own token downloads them.
    token = await guardian_token(gw, key, "p1")
    async with gw.session.get(
        f"{gw.url}/v1/me/inbox/{message_id}", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        item = await resp.json()
    assert [a["name"] for a in item["attachments"]] == ["Lappen.pdf", "IMG_0001.jpg"]
    async with gw.session.get(
        f"{gw.url}{item['attachments'][0]['url']}", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 200
        assert await resp.read() == pdf
    assert tenant.id


async def guardian_token(gw: Gateway, key: str, guardian_id: str) -> str:
    async with gw.session.post(
        f"{gw.url}/v1/guardians/{guardian_id}/tokens", headers=gw.headers(key)
    ) as resp:
        assert resp.status == 201
        token: str = (await resp.json())["token"]
    return token


async def test_another_guardians_link_or_token_gets_no_file(gw: Gateway, smtp: SmtpPeer) -> None:
    _, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    _, sent = await upload(gw, key, minimal_pdf(), "lapp.pdf")
    message_id = await gw.post_event(key, message_event("evt-a", "g1", [sent["id"]]))
    await gw.post_event(key, message_event("evt-b", "g2", []))  # to p2, no files
    await gw.run()
    by_address = {r.rcpt_tos[0]: r.message for r in smtp.received}
    other_text = str(by_address["p2@familie.no"].get_body(("plain",)).get_content())  # type: ignore[union-attr]
    [other_link] = re.findall(rf"{re.escape(PUBLIC_URL)}/r/[A-Za-z0-9_-]+", other_text)
    # p2's own read link, with the id of p1's file: nothing.
    async with gw.session.get(local(f"{other_link}/files/{sent['id']}", gw)) as resp:
        assert resp.status == 404
        assert b"%PDF" not in await resp.read()
    # p2's guardian token on p1's message: nothing.
    token = await guardian_token(gw, key, "p2")
    async with gw.session.get(
        f"{gw.url}/v1/me/inbox/{message_id}/files/{sent['id']}",
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 404
    # A token changed by one character: nothing.
    mine = str(by_address["p1@familie.no"].get_body(("plain",)).get_content())  # type: ignore[union-attr]
    [link] = re.findall(rf"{re.escape(PUBLIC_URL)}/r/[A-Za-z0-9_-]+", mine)
    forged = link[:-1] + ("A" if link[-1] != "A" else "B")
    async with gw.session.get(local(f"{forged}/files/{sent['id']}", gw)) as resp:
        assert resp.status == 404


async def test_a_renamed_executable_is_refused(gw: Gateway) -> None:
    _, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(400)
    status, body = await upload(gw, key, exe, "lapp.pdf", **{"Content-Type": "application/pdf"})
    assert status == 415
    assert body["error"] == "unsupported_media_type"
    assert body["errors"][0]["type"] == "file_type"
    elf = b"\x7fELF\x02\x01\x01" + bytes(400)
    assert (await upload(gw, key, elf, "bilde.jpg"))[0] == 415
    text = b"#!/bin/sh\nrm -rf /\n"
    assert (await upload(gw, key, text, "lapp.docx"))[0] == 415
    # Nothing was kept.
    assert not any(p.is_file() for p in (gw.service.settings.attachments.folder).rglob("*"))


async def test_allowed_types_pass(gw: Gateway) -> None:
    _, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    status, body = await upload(gw, key, docx(), "plan")
    assert status == 201, body
    assert body["name"] == "plan.docx"
    png = io.BytesIO()
    exif = Image.Exif()
    exif[0x8825] = GPS
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "Tatt hjemme hos Berg")
    Image.new("RGBA", (20, 10), (255, 0, 0, 128)).save(png, "PNG", exif=exif, pnginfo=text)
    assert Image.open(io.BytesIO(png.getvalue())).getexif().get_ifd(0x8825)
    status, body = await upload(gw, key, png.getvalue(), "skjerm.png")
    assert (status, body["content_type"]) == (201, "image/png")
    kept = next(gw.service.settings.attachments.folder.rglob(body["id"])).read_bytes()
    image = Image.open(io.BytesIO(kept))
    assert dict(image.getexif()) == {} and "Comment" not in image.info
    assert image.mode == "RGBA"


async def test_heic_is_converted_to_jpeg(gw: Gateway) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")  # a dependency: present wherever we run
    pillow_heif.register_heif_opener()
    _, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    heic = io.BytesIO()
    Image.new("RGB", (40, 30), "green").save(heic, "HEIF")
    status, body = await upload(gw, key, heic.getvalue(), "IMG_1.HEIC")
    assert status == 201, body
    assert (body["content_type"], body["name"]) == ("image/jpeg", "IMG_1.jpg")


async def test_too_big_is_413_with_json(gw: Gateway) -> None:
    _, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    big = b"%PDF-1.4\n" + bytes(250_000)
    status, body = await upload(gw, key, big, "stor.pdf")
    assert status == 413
    assert body["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b"%PDF-1.4\n"
        for _ in range(30):
            yield bytes(10_000)

    async with gw.session.post(
        f"{gw.url}/v1/attachments", data=chunks(), headers=gw.headers(key)
    ) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"] == "payload_too_large"


async def test_message_refuses_unknown_used_foreign_and_too_many_bytes(gw: Gateway) -> None:
    tenant, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    _, other_key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    _, mine = await upload(gw, key, minimal_pdf(), "a.pdf")
    _, foreign = await upload(gw, other_key, minimal_pdf(), "b.pdf")

    async def refused(event: dict[str, Any]) -> list[dict[str, Any]]:
        async with gw.session.post(
            f"{gw.url}/v1/events", json=event, headers=gw.headers(key)
        ) as resp:
            assert resp.status == 422, await resp.text()
            errors: list[dict[str, Any]] = (await resp.json())["errors"]
        return errors

    errors = await refused(message_event("e1", "g1", [mine["id"], "att_nope", foreign["id"]]))
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["data", "attachments", 1], "unknown_reference"),
        (["data", "attachments", 2], "unknown_reference"),  # another tenant's: unknown here
    ]
    await gw.post_event(key, message_event("e2", "g1", [mine["id"]]))
    # The same event again is a replay, not a second use.
    await gw.post_event(key, message_event("e2", "g1", [mine["id"]]))
    errors = await refused(message_event("e3", "g1", [mine["id"]]))
    assert errors[0]["loc"] == ["data", "attachments", 0]
    assert errors[0]["type"] == "attachment_used"
    # Together above max_message_bytes (300,000): two photos of ~190 kB each.
    _, one = await upload(gw, key, photo_with_gps(520), "1.jpg")
    _, two = await upload(gw, key, photo_with_gps(520), "2.jpg")
    assert one["size"] + two["size"] > 300_000, (one["size"], two["size"])
    errors = await refused(message_event("e4", "g1", [one["id"], two["id"]]))
    assert errors[0]["type"] == "too_large"
    assert tenant.id


async def test_upload_needs_the_events_scope(gw: Gateway) -> None:
    await new_tenant(gw.service, gw.clock, DIRECTORY)
    async with gw.session.post(f"{gw.url}/v1/attachments", data=minimal_pdf()) as resp:
        assert resp.status == 401
    async with gw.session.post(
        f"{gw.url}/v1/attachments", data=minimal_pdf(), headers={"Authorization": "Bearer bbk_x"}
    ) as resp:
        assert resp.status == 401


async def test_s3_bucket_keeps_and_serves_the_files(tmp_path: Path, smtp: SmtpPeer) -> None:
    with S3Peer() as s3:
        s3.create_bucket("skolefiler")
        settings = settings_for(tmp_path, smtp, storage="s3", s3=s3.settings("skolefiler"))
        async with running(settings, ManualClock()) as gw:
            tenant, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
            photo = photo_with_gps(400)
            _, sent = await upload(gw, key, photo, "tur.jpg")
            stored_key = f"files/{tenant.id}/{sent['id']}"
            assert s3.keys("skolefiler") == [stored_key]
            data, content_type = s3.get("skolefiler", stored_key)
            assert content_type == "image/jpeg"
            assert dict(Image.open(io.BytesIO(data)).getexif()) == {}  # cleaned before storing
            await gw.post_event(key, message_event("evt-s3", "g1", [sent["id"]]))
            await gw.run()
            [received] = smtp.received
            text = str(received.message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
            [link] = re.findall(rf"{re.escape(PUBLIC_URL)}/r/\S+/files/{sent['id']}", text)
            async with gw.session.get(local(link, gw)) as resp:
                assert resp.status == 200
                assert await resp.read() == data
            # Past the retention the message's file leaves the bucket.
            gw.clock.advance(settings.retention_days * 86_400 + 60)
            await gw.service.retention.run(purge_job(gw))
            assert s3.keys("skolefiler") == []


def purge_job(gw: Gateway) -> Job:
    return Job(id=JOB_PURGE, tenant_id="", kind=JOB_PURGE, ref="", due_at=gw.clock.now())


async def test_retention_removes_a_messages_files_and_unused_uploads(gw: Gateway) -> None:
    tenant, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    _, used = await upload(gw, key, minimal_pdf(), "a.pdf")
    await gw.post_event(key, message_event("evt-r", "g1", [used["id"]]))
    await gw.run()
    gw.clock.advance(3600)
    _, unused = await upload(gw, key, minimal_pdf(), "b.pdf")
    folder = gw.service.settings.attachments.folder / tenant.id
    assert sorted(p.name for p in folder.iterdir()) == sorted([used["id"], unused["id"]])
    gw.clock.advance(25 * 3600)  # past unused_hours (24), far within the retention
    await gw.service.retention.run(purge_job(gw))
    assert [p.name for p in folder.iterdir()] == [used["id"]]
    gw.clock.advance(gw.service.settings.retention_days * 86_400)
    await gw.service.retention.run(purge_job(gw))
    assert list(folder.iterdir()) == []
    assert await gw.service.store.attachments.get(tenant.id, [used["id"]]) == []


async def test_a_sideways_photo_is_turned_upright_before_its_exif_goes(gw: Gateway) -> None:
    _, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to show
    photo = io.BytesIO()
    Image.new("RGB", (60, 20), "blue").save(photo, "JPEG", exif=exif)
    status, body = await upload(gw, key, photo.getvalue(), "sidelengs.jpg")
    assert status == 201
    kept = next(gw.service.settings.attachments.folder.rglob(body["id"])).read_bytes()
    image = Image.open(io.BytesIO(kept))
    assert image.size == (20, 60)
    assert dict(image.getexif()) == {}


async def test_a_block_after_sending_ends_the_downloads(gw: Gateway, smtp: SmtpPeer) -> None:
    _, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    _, sent = await upload(gw, key, minimal_pdf(), "lapp.pdf")
    message_id = await gw.post_event(key, message_event("evt-blk", "g1", [sent["id"]]))
    await gw.run()
    [received] = smtp.received
    text = str(received.message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    [link] = re.findall(rf"{re.escape(PUBLIC_URL)}/r/[A-Za-z0-9_-]+", text)
    token = await guardian_token(gw, key, "p1")
    bearer = {"Authorization": f"Bearer {token}"}
    async with gw.session.get(f"{gw.url}/v1/me/inbox", headers=bearer) as resp:
        [item] = (await resp.json())["items"]
    assert [a["id"] for a in item["attachments"]] == [sent["id"]]
    async with gw.session.get(local(f"{link}/files/{sent['id']}", gw)) as resp:
        assert resp.status == 200
    async with gw.session.put(
        f"{gw.url}/v1/relations/c1/p1/flags/blocked",
        json={"value": True, "reason": "Court order", "actor": "rektor"},
        headers=gw.headers(key),
    ) as resp:
        assert resp.status == 200, await resp.text()
    async with gw.session.get(local(f"{link}/files/{sent['id']}", gw)) as resp:
        assert resp.status == 410
        assert b"%PDF" not in await resp.read()
    async with gw.session.get(
        f"{gw.url}/v1/me/inbox/{message_id}/files/{sent['id']}", headers=bearer
    ) as resp:
        assert resp.status == 404


async def test_macros_bombs_and_spoofed_names_are_refused_or_cleaned(gw: Gateway) -> None:
    _, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    docm = io.BytesIO()
    with zipfile.ZipFile(docm, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
        archive.writestr("word/vbaProject.bin", b"\x00macro")
    assert (await upload(gw, key, docm.getvalue(), "plan.docx"))[0] == 415
    # A PNG that says it is 10,000 x 10,000 pixels: refused before anything is decoded.
    for side in (10_000, 30_000):  # above Pillow's warning limit, and above its error limit
        status, body = await upload(gw, key, png_header(side, side), "bomb.png")
        assert (status, body["errors"][0]["type"]) == (415, "image_invalid")
    # A right-to-left override would show "lapp<RLO>fdp.exe" as "lappexe.pdf".
    status, body = await upload(gw, key, minimal_pdf(), "lapp\u202efdp.exe")
    assert (status, body["name"]) == (201, "lappfdp.pdf")


async def test_the_parent_pages_session_reaches_the_files(gw: Gateway, smtp: SmtpPeer) -> None:
    _, key = await new_tenant(gw.service, gw.clock, DIRECTORY)
    _, sent = await upload(gw, key, minimal_pdf(), "lapp.pdf")
    message_id = await gw.post_event(key, message_event("evt-p", "g1", [sent["id"]]))
    await gw.run()
    [received] = smtp.received
    text = str(received.message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    [link] = re.findall(rf"{re.escape(PUBLIC_URL)}/r/[A-Za-z0-9_-]+", text)
    parent_link = local(link, gw).replace("/r/", "/p/")
    # The session cookie is Secure (the public URL is https): carried by hand over http.
    async with gw.session.get(parent_link, allow_redirects=False) as resp:
        assert resp.status == 303
        cookie = {"Cookie": "; ".join(f"{k}={m.value}" for k, m in resp.cookies.items())}
    async with gw.session.get(f"{gw.url}/p/inbox", headers=cookie) as resp:
        assert "Tur til skogen" in (inbox := await resp.text())
        assert "1\u00a0vedlegg" in inbox
    async with gw.session.get(
        f"{gw.url}/p/messages/{message_id}", headers=cookie, allow_redirects=False
    ) as resp:
        assert resp.status == 303  # to a fresh read link of the session's own person
        page_url = f"{gw.url}/p/messages/{resp.headers['Location']}"
    async with gw.session.get(page_url) as resp:
        assert resp.status == 200
        page = await resp.text()
        page_url = str(resp.url)
    [href] = re.findall(r'href="([^"]+/files/[^"]+)"', page)
    async with gw.session.get(f"{page_url.rsplit('/', 1)[0]}/{href}") as resp:
        assert resp.status == 200
        assert await resp.read() == minimal_pdf()
