"""The second step of recording a webhook change on Redis (see redis/webhooks.py).

A tenant script that fed its tenant's change feed answers ``[FED, tenant, earliest
change time, result]`` (:func:`gateway.store.redis.scripts.tenant_script`); the
EVALSHA response callback (:meth:`FeedMarks.unwrap`) notes the tenant and hands the
caller the result, and before the store call returns, :meth:`FeedMarks.flush` marks
the noted tenants pending in the queue's slot (``P:{q}:wh:pend``) and makes sure the
fan-out job exists. A plain object the handle (redis/base.py) is built with: the error
wrapper settles it through the handle, and the webhook and absence features reach
the same one there.
"""

from __future__ import annotations

from typing import Any

from gateway.store.redis import keys as K
from gateway.store.redis.scripts import APPEND_CHANGE, FED, Lua, read

# KEYS[1] the pending tenants (wh:pend). ARGV: 2 per tenant: tenant earliest_change_us.
# Marks them pending and makes sure the fan-out job exists, due at the change's time.
MARK_FED = Lua(read("feed_mark"))
# KEYS[1] tenant anchor. ARGV: tp kind data_json at_us (scripts.APPEND_CHANGE).
_APPEND_CHANGE = Lua(APPEND_CHANGE)


def queue_change(pipe: Any, tp: str, kind: str, data: str, at_us: int) -> None:
    """Queue in a MULTI/EXEC the append of one change to the tenant's feed (prefix
    ``tp``): EVAL, not EVALSHA, since a missing script must not fail one command of an
    EXEC whose others commit. Its answer goes through :meth:`FeedMarks.unwrap`."""
    pipe.execute_command(
        "EVAL", _APPEND_CHANGE.source, 1, tp + K.WEBHOOKS_ON, tp, kind, data, at_us
    )


class FeedMarks:
    """Tenants whose feed got entries and are not marked pending yet."""

    def __init__(self, queue_prefix: str) -> None:
        self._pending_key = queue_prefix + K.PENDING
        self._fed: dict[str, int] = {}  # tenant -> earliest change time (us)

    @property
    def pending(self) -> bool:
        return bool(self._fed)

    def note(self, tenant_id: str, at: int) -> None:
        known = self._fed.get(tenant_id)
        self._fed[tenant_id] = at if known is None else min(known, at)

    def unwrap(self, response: Any, **options: Any) -> Any:
        """The EVALSHA response callback (also applied by hand to a script's answer in a
        MULTI/EXEC): note a fed tenant, give the caller the script's own result."""
        if isinstance(response, list) and len(response) >= 3 and response[0] == FED:
            self.note(str(response[1]), int(response[2]))
            return response[3] if len(response) > 3 else None
        return response

    async def flush(self, client: Any) -> None:
        """Mark the noted tenants pending; on failure they stay noted for the next call."""
        fed, self._fed = self._fed, {}
        if not fed:
            return
        args: list[Any] = []
        for tenant_id, at in sorted(fed.items()):
            args.extend((tenant_id, at))
        try:
            await client.execute_command("EVALSHA", MARK_FED.sha, 1, self._pending_key, *args)
        except BaseException:
            for tenant_id, at in fed.items():
                self.note(tenant_id, at)
            raise
