"""The audience snapshot a message's 202 was resolved from, handed to its planner.

The intake of ``message.created`` resolves the audience to say in the 202 whom it
will reach (``gateway/api/recipients.py``); the planner used to load the same
audience again moments later, for a town-wide broadcast the largest cost outside the
sends (issue 18: about 9 % of the gateway's CPU in a 20k-guardian emergency). Now the
intake hands its snapshot over here, keyed by message id, and a planner in the same
process takes it when it plans within :data:`MAX_AGE` seconds of the snapshot's read.
Later (a scheduled message, a long queue), after a restart, or in another process, it
loads the audience itself as before.

What a client can rely on does not change: a directory change made before the event
was posted is in the snapshot; one made while the message is being planned never was
(the planner reads one snapshot at its start), and now that window starts at the
intake's read, at most ``MAX_AGE`` earlier. Deferred and escalated sends are checked
again before they go (``gateway/recheck.py``); an immediate send is not, so a block or a
loss of parental rights stored in those at most ``MAX_AGE`` seconds between the intake
and the plan is not seen by that message or absence alert, as one stored during its
planning never was. When the snapshot is taken, the 202's numbers are exactly what was
planned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.models import DirectorySnapshot, Message

MAX_AGE = 2.0  # seconds from the intake's read within which a planner may use it
MAX_HELD = 8  # snapshots held at most (a burst of large broadcasts must not pile up)


class AudienceHandoff:
    """Snapshots by message id, each taken at most once and only while fresh."""

    def __init__(
        self, max_age: float = MAX_AGE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age = max_age
        self._clock = clock
        # message id -> (read_at, body hash of the message it was read for, snapshot)
        self._held: OrderedDict[str, tuple[float, str, DirectorySnapshot]] = OrderedDict()

    def hand_over(self, message: Message, snapshot: DirectorySnapshot, read_at: float) -> None:
        """Offer ``snapshot`` of ``message``'s audience, read from the store at ``read_at``
        (on this clock)."""
        self._drop_stale()
        self._held[message.id] = (read_at, message.body_hash, snapshot)
        self._held.move_to_end(message.id)
        while len(self._held) > MAX_HELD:
            self._held.popitem(last=False)
        # Not kept for a planner of another process: gone once too old to be used.
        with contextlib.suppress(RuntimeError):  # no running loop: dropped on the next call
            asyncio.get_running_loop().call_later(self.max_age, self._drop_stale)

    def take(self, message: Message) -> DirectorySnapshot | None:
        """The snapshot handed over for ``message`` if still fresh (once), else None.

        Only for the same body: an event id sent again with another audience (a 409)
        must not lend its snapshot to the message first accepted under that id.
        """
        held = self._held.pop(message.id, None)
        self._drop_stale()
        if held is None or held[1] != message.body_hash or self._clock() - held[0] > self.max_age:
            return None
        return held[2]

    def now(self) -> float:
        """The clock ``read_at`` is on."""
        return self._clock()

    def __len__(self) -> int:
        return len(self._held)

    def _drop_stale(self) -> None:
        oldest = self._clock() - self.max_age
        for message_id in [m for m, (read_at, *_) in self._held.items() if read_at < oldest]:
            del self._held[message_id]
