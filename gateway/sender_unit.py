"""Every message names its sender unit: also one to guardians or staff directly.

A message about children names the unit of the first child it concerns (the planner).
One addressed to guardians or staff directly concerns no child; it names the unit of
its sender (``sender_id``, a staff member), else the first unit of its audience. This
adds those units to the planning snapshot as ``sender_units``. Whether a recipient may
learn the unit at all stays the planner's rule 4 (gateway/protection.py): a guardian of
a protected child gets the neutral sender instead.
"""

from __future__ import annotations

from gateway.models import Audience, DirectorySnapshot, Message
from gateway.store.ports import AudienceReader


async def add_sender_units(
    store: AudienceReader, message: Message, snapshot: DirectorySnapshot
) -> None:
    """Set ``snapshot.sender_units`` (and load those units) for ``message``."""
    ids = list(message.audience.units)
    sender_id = message.sender_id
    if sender_id:
        sender = snapshot.persons.get(sender_id)
        if sender is None:
            # Only the sender and their units, not their groups' children.
            extra = await store.load_audience(message.tenant_id, Audience(staff=[sender_id]))
            sender = extra.persons.get(sender_id)
            for unit_id, unit in extra.units.items():
                snapshot.units.setdefault(unit_id, unit)
        if sender is not None:
            ids = [*sender.unit_ids, *ids]
    snapshot.sender_units = [unit_id for unit_id in dict.fromkeys(ids) if unit_id in snapshot.units]
