"""In-app: the delivery row in the store is the guardian's inbox item, so nothing is sent."""

from __future__ import annotations

from typing import ClassVar

from gateway.models import Delivery, DeliveryStatus, Receipt, Rendered


class InAppChannel:
    """Marks the delivery delivered: the app reads it from the store's inbox."""

    name: ClassVar[str] = "inapp"
    max_body: ClassVar[int | None] = None
    rate_per_second: ClassVar[float | None] = None

    async def start(self) -> None:
        """Nothing to open."""

    async def send(self, delivery: Delivery, content: Rendered) -> Receipt:
        """The inbox item exists as soon as the delivery does."""
        return Receipt(status=DeliveryStatus.delivered)

    async def aclose(self) -> None:
        """Nothing to close."""
