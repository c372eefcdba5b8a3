"""``GET /v1/messages/{id}``: a message, its deliveries with their history, and replies.

Addresses are never shown, nor the render context (it carries children's names):
a delivery is identified by its recipient id only. That is also all a recipient
with a protected address (fortrolig / strengt fortrolig) may be shown as.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.context import CTX
from gateway.auth import authenticate_bearer
from gateway.errors import NotFound
from gateway.models import Delivery, Reply, StatusChange


def _delivery(delivery: Delivery, history: list[StatusChange]) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "recipient_id": delivery.recipient_id,
        "recipient_role": delivery.recipient_role.value,
        "channel": delivery.channel,
        "target": delivery.target,
        "status": delivery.status.value,
        "reason": delivery.reason,
        "segments": delivery.segments,
        "child_ids": delivery.child_ids,
        "history": [
            {"status": change.status.value, "at": change.at.isoformat(), "detail": change.detail}
            for change in history
        ],
    }


def _reply(reply: Reply) -> dict[str, Any]:
    # Staff may read replies to their own message; the sender's address is left out.
    return {
        "id": reply.id,
        "channel": reply.channel,
        "person_id": reply.person_id,
        "body": reply.body,
        "received_at": reply.received_at.isoformat(),
    }


async def get_message(request: web.Request) -> web.Response:
    """The status of one message of the calling tenant; another tenant's is 404."""
    ctx = request.app[CTX]
    tenant = await authenticate_bearer(request, ctx.store)
    message = await ctx.store.get_message(tenant.id, request.match_info["id"])
    if message is None:
        raise NotFound("no such message")
    deliveries = await ctx.store.list_deliveries(tenant.id, message.id)
    history = await ctx.store.history([d.id for d in deliveries])
    counts = await ctx.store.count_by_status(tenant.id, message.id)
    replies = await ctx.store.list_replies(tenant.id, message.id)
    return web.json_response(
        {
            "id": message.id,
            "event_id": message.event_id,
            "category": message.category.value,
            "subject": message.subject,
            "created_at": message.created_at.isoformat(),
            "planned_at": message.planned_at.isoformat() if message.planned_at else None,
            "counts": counts,
            "deliveries": [_delivery(d, history.get(d.id, [])) for d in deliveries],
            "replies": [_reply(r) for r in replies],
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/messages/{id}", get_message)
