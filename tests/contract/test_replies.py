"""Store contract: inbound replies (port ReplyStore).

These tests speak only the ports: nothing here may know which backend runs.
"""

from __future__ import annotations

from gateway.models import Reply
from gateway.store import Store

from .builders import A, B, accepted, at, message


async def test_replies_are_idempotent(store: Store) -> None:
    msg = await accepted(store, message())
    reply = Reply(
        id="r1",
        tenant_id=A,
        channel="sms",
        message_id=msg.id,
        person_id="p1",
        body="Ja, vi kommer",
        provider_id="SM9",
        received_at=at(30),
    )
    assert await store.add_reply(reply) is True
    assert await store.add_reply(reply.model_copy(update={"body": "changed"})) is False
    later = reply.model_copy(update={"id": "r2", "received_at": at(40)})
    assert await store.add_reply(later) is True
    assert await store.list_replies(A, msg.id) == [reply, later]
    assert await store.list_replies(B, msg.id) == []
