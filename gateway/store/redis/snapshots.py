"""Audience snapshots this process read lately, kept with the directory versions they
were read at (``dirv``, ``prefv``, ``devv``: redis/directory.py).

Every write of what a snapshot holds bumps one of those versions (a directory write's
MULTI/EXEC, the device and preference writes), and a snapshot is only kept when they
did not move while it was read (``load_audience``). So while one ``MGET`` of the
versions still answers the same numbers, no write landed since, and the kept snapshot
is exactly what a new read would give: a broadcast read by its intake and again by its
plan (its handed-over snapshot older than ``gateway/audience_handoff.py`` allows) costs
the second time one command instead of one or two per person. Nothing here relaxes the
handoff's age rule: a block stored after the first read moves ``dirv``, and the next
read is a new one.

Callers change the snapshot they get (gateway/sender_unit.py adds units, the
escalation pins preferences), so each hit is a copy of the containers (the rows in
them are replaced, never changed in place). Bounded: a few entries, persons summed,
and an age, so a large audience is not held much past its plan.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.models import Audience, DirectorySnapshot

MAX_ENTRIES = 8
MAX_PERSONS = 100_000  # persons over all entries: the oldest go first
MAX_AGE = 30.0  # seconds a snapshot is kept at most (monotonic)

Versions = tuple[str | None, ...]


@dataclass(frozen=True)
class _Entry:
    versions: Versions
    snapshot: DirectorySnapshot
    stored_at: float


def _copy(s: DirectorySnapshot) -> DirectorySnapshot:
    return DirectorySnapshot.model_construct(
        units=dict(s.units),
        groups=dict(s.groups),
        persons=dict(s.persons),
        audience_children=list(s.audience_children),
        sender_units=list(s.sender_units),
        relations=list(s.relations),
        preferences=dict(s.preferences),
        devices={p: list(d) for p, d in s.devices.items()},
        failing={p: list(k) for p, k in s.failing.items()},
    )


class SnapshotCache:
    """Snapshots by (tenant, audience), each with the versions it was read at."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        """How many snapshots are held."""
        return len(self._entries)

    @staticmethod
    def key(tenant_id: str, audience: Audience) -> tuple[str, str]:
        return tenant_id, audience.model_dump_json()

    def versions_of(self, key: tuple[str, str]) -> Versions | None:
        """The versions the kept snapshot of ``key`` was read at (None: none kept)."""
        self._expire()
        entry = self._entries.get(key)
        return None if entry is None else entry.versions

    def _expire(self) -> None:
        """Drop every snapshot older than ``MAX_AGE``, whichever audience is read now:
        a large audience's persons are not held by an idle process. The entries are in
        the order they were kept, so the old ones are at the front."""
        now = self._clock()
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now - oldest.stored_at <= MAX_AGE:
                return
            self._entries.popitem(last=False)

    def take(self, key: tuple[str, str], current: Sequence[str | None]) -> DirectorySnapshot | None:
        """A copy of the kept snapshot if the versions are still ``current``, else None
        (and the entry goes)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.versions != tuple(current):
            del self._entries[key]
            return None
        return _copy(entry.snapshot)

    def keep(
        self, key: tuple[str, str], versions: Sequence[str | None], snapshot: DirectorySnapshot
    ) -> DirectorySnapshot:
        """Keep ``snapshot`` (read at ``versions``); the caller gets a copy of it."""
        self._expire()
        self._entries.pop(key, None)
        self._entries[key] = _Entry(tuple(versions), snapshot, self._clock())
        while len(self._entries) > MAX_ENTRIES or (
            len(self._entries) > 1
            and sum(len(e.snapshot.persons) for e in self._entries.values()) > MAX_PERSONS
        ):
            self._entries.popitem(last=False)
        if len(snapshot.persons) > MAX_PERSONS:
            self._entries.pop(key, None)
        return _copy(snapshot)
