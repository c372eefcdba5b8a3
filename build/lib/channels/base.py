"""The channel Protocol every adapter implements."""

from __future__ import annotations

from typing import ClassVar, Protocol

from gateway.models import Delivery, Receipt, Rendered


class Channel(Protocol):
    """One way of reaching a person. Limits are class attributes, not per-call branches.

    ``send`` hands one delivery (one recipient, never a shared list) to the
    provider and returns a Receipt, or raises from ``gateway.errors``:
    TransientDeliveryError (retry later), PermanentDeliveryError / DeadAddress
    (never retried), ChannelUnavailable (stop the channel).
    """

    name: ClassVar[str]
    max_body: ClassVar[int | None]
    rate_per_second: ClassVar[float | None]

    async def start(self) -> None:
        """Open connections inside the running loop."""

    async def send(self, delivery: Delivery, content: Rendered) -> Receipt: ...

    async def aclose(self) -> None: ...
