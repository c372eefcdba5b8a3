"""Attachment routes: the upload, and the downloads a recipient may make.

* ``POST /v1/attachments`` (tenant API key with the ``events`` scope): the body is the
  file itself, streamed (``?name=`` gives the file name); 201 with its id, for
  ``message.created``'s ``data.attachments``.
* ``GET /r/{token}/files/{id}``: through the recipient's own read link (email, SMS,
  and the parent pages, which open messages through a fresh read link).
* ``GET /v1/me/inbox/{message_id}/files/{id}``: the app, with the guardian's token.

A download is only ever a file of the message the link or token is for, and only
while the recipient may still see that message (gateway/withdrawal.py). It is sent
as ``Content-Disposition: attachment`` with ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote

from aiohttp import web

from gateway.api import spec
from gateway.api.attachment_models import AttachmentView, attachment_view
from gateway.api.context import CTX, AppContext
from gateway.api.guardian import authenticate_guardian
from gateway.api.readlinks import PAGES, load_delivery, problem, token_problem
from gateway.api.responses import Error, respond_json
from gateway.attachments import Attachments
from gateway.auth import AuthStore, authenticate_bearer
from gateway.errors import LinkInvalid, NotFound, PayloadTooLarge, StoreError, ValidationFailed
from gateway.models import Attachment, Scope
from gateway.readlinks import open_read_token
from gateway.withdrawal import WithdrawalStore, visible_item

FILES_PATH = "files"
DOWNLOAD_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
    # Should a browser show it anyway: no script, no plugin, no same-origin access.
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


class _Ports(AuthStore, WithdrawalStore, Protocol):
    """The store ports this module calls (the union stays in the wiring)."""


def _store(ctx: AppContext) -> _Ports:
    return ctx.store


def attachment_service(ctx: AppContext) -> Attachments:
    """The attachment service; 422 naming ``data.attachments`` where there is none."""
    if ctx.attachments is None:
        raise ValidationFailed(
            "attachments are not available here",
            errors=[{"loc": ["data", "attachments"], "message": "not available",
                     "type": "unavailable"}],
        )  # fmt: skip
    return ctx.attachments


async def upload(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    service = attachment_service(ctx)
    tenant = await authenticate_bearer(request, _store(ctx), ctx.clock.now(), Scope.events)
    limit = service.settings.max_file_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the file is larger than {limit} bytes")
    name = request.query.get("name")
    attachment = await service.upload(tenant.id, request.content.iter_chunked(64 * 1024), name)
    return respond_json(attachment_view(attachment), status=201)


async def _send_file(
    request: web.Request, service: Attachments, attachment: Attachment
) -> web.StreamResponse:
    chunks = service.read(attachment)
    try:
        first = await anext(chunks, b"")
    except StoreError as exc:  # metadata without its file: say gone, not 500
        raise NotFound("the file is gone") from exc
    quoted = quote(attachment.name, safe="")
    response = web.StreamResponse(
        headers={
            **DOWNLOAD_HEADERS,
            "Content-Type": attachment.content_type,
            "Content-Disposition": f'attachment; filename="{_ascii(attachment.name)}"; '
            f"filename*=UTF-8''{quoted}",
        }
    )
    response.content_length = attachment.size
    await response.prepare(request)
    await response.write(first)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)


def _find(attachments: list[Attachment], attachment_id: str) -> Attachment | None:
    return next((a for a in attachments if a.id == attachment_id), None)


async def read_link_download(request: web.Request) -> web.StreamResponse:
    """A file of the message behind a read link."""
    ctx = request.app[CTX]
    pages = request.app[PAGES]
    try:
        delivery_id = open_read_token(ctx.secret, request.match_info["token"], ctx.clock.now())
    except LinkInvalid as exc:
        return await token_problem(ctx, pages, exc)
    found = await load_delivery(ctx, delivery_id)
    if found is None or ctx.attachments is None:
        return problem(pages, "gone", 410)
    delivery, _ = found
    files = await ctx.attachments.for_message(delivery.tenant_id, delivery.message_id)
    attachment = _find(files, request.match_info["id"])
    if attachment is None:
        return problem(pages, "gone", 404)
    return await _send_file(request, ctx.attachments, attachment)


async def inbox_download(request: web.Request) -> web.StreamResponse:
    """A file of a message in the guardian's own inbox (the app)."""
    ctx = request.app[CTX]
    tenant_id, guardian_id = await authenticate_guardian(request)
    message_id = request.match_info["message_id"]
    service = attachment_service(ctx)
    if await visible_item(_store(ctx), tenant_id, guardian_id, message_id, ctx.clock.now()) is None:
        raise NotFound("message not found")
    attachment = _find(await service.for_message(tenant_id, message_id), request.match_info["id"])
    if attachment is None:
        raise NotFound("attachment not found")
    return await _send_file(request, service, attachment)


_FILE = spec.Response(
    "The file, with `Content-Disposition: attachment`, `X-Content-Type-Options: nosniff`"
    " and its real type",
    spec.BINARY,
    "application/octet-stream",
)
_ATTACHMENT_ID = spec.path("id", "The attachment id", **spec.ID)
OPERATIONS: dict[spec.Route, spec.Operation] = {
    ("POST", "/v1/attachments"): spec.Operation(
        tag="events",
        summary='Upload a file for a message (README "Attachments")',
        description=(
            "The body is the file itself, streamed; its type is read from its bytes:"
            " PDF, JPEG, PNG, DOCX, HEIC (converted to JPEG). Images are re-encoded"
            " without EXIF. Name the returned id in `message.created`'s"
            " `data.attachments`."
        ),
        security=spec.tenant("events"),
        params=(
            spec.query("name", "The file name shown to recipients", type="string", maxLength=1000),
        ),
        body=spec.Body(spec.BINARY, ("application/octet-stream",)),
        responses={
            201: spec.Response("Stored", AttachmentView),
            415: spec.Response("Not an allowed kind of file (judged from its bytes)", Error),
        },
        # streamed, not read by api/body.py: no 400
        errors=(401, 413, 422),
    ),
    ("GET", "/v1/me/inbox/{message_id}/files/{id}"): spec.Operation(
        tag="parent app",
        summary="Download an attachment of a message in the guardian's inbox",
        security=spec.GUARDIAN,
        params=(spec.path("message_id", "The message id", **spec.ID), _ATTACHMENT_ID),
        responses={200: _FILE},
        errors=(401, 404),
    ),
    ("GET", "/r/{token}/files/{id}"): spec.Operation(
        tag="pages",
        summary="Download an attachment of the message behind a read link",
        security=spec.PUBLIC,
        params=(spec.path("token", "The opaque token of a personal read link"), _ATTACHMENT_ID),
        responses={
            200: _FILE,
            404: spec.page("Friendly page: the link is forged, or no such file"),
            410: spec.page("Friendly page: the link expired or the message is gone"),
        },
    ),
}


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/attachments", upload)
    app.router.add_get("/r/{token}/files/{id}", read_link_download)
    app.router.add_get("/v1/me/inbox/{message_id}/files/{id}", inbox_download)
