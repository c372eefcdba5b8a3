"""Audience expansion, the same on every backend: which persons, groups and units one
audience brings into the planning snapshot, and how the snapshot is put together.

A backend offers a :class:`DirectoryRead` over ONE consistent state of a tenant's
directory (SQLite: one read transaction; Redis: reads checked against the directory
versions, repeated by :func:`checked` while a write lands in between) and calls
:func:`expand`. The rule:

* the audience's children are the children and learners listed, placed in a listed
  group, or placed in a listed unit directly or through one of its groups; sorted;
* its relations are every relation of those children and of the listed guardians
  (unfit ones too: the resolver decides);
* its persons are those children, both ends of those relations, the listed guardians
  and staff; each with its preferences, devices and the contact kinds whose CURRENT
  address is the one found failing;
* its groups are the listed ones and the persons' groups; its units the listed ones,
  the persons' units and the groups' units.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from gateway.errors import StoreError
from gateway.models import (
    Audience,
    Device,
    DirectorySnapshot,
    Group,
    Person,
    Preferences,
    RelationRecord,
    Role,
    Unit,
)
from gateway.store.directory_checks import CHILD_ROLES

# How often a checked read is tried before it gives up on a directory that keeps changing.
SNAPSHOT_TRIES = 10
CONTACT_KINDS = ("email", "phone")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Members:
    """Who is placed directly in some groups and units, and which groups the units have."""

    persons: set[str]
    unit_groups: set[str]


@dataclass(slots=True)
class People:
    """Persons that exist among some ids, with what they keep about being contacted."""

    persons: dict[str, Person] = field(default_factory=dict)
    preferences: dict[str, Preferences] = field(default_factory=dict)
    devices: dict[str, list[Device]] = field(default_factory=dict)
    # person -> contact kind -> the address found failing (current or not)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, other: People) -> None:
        self.persons.update(other.persons)
        self.preferences.update(other.preferences)
        self.devices.update(other.devices)
        self.failed.update(other.failed)


@dataclass(frozen=True, slots=True)
class Places:
    """The groups and units that exist among some ids."""

    groups: dict[str, Group]
    units: dict[str, Unit]


class DirectoryRead(Protocol):
    """One consistent read of one tenant's directory; ids that do not exist are left out."""

    async def members(self, groups: Sequence[str], units: Sequence[str]) -> Members:
        """Persons placed directly in these groups or units; the groups of these units."""
        ...

    async def people(self, ids: Sequence[str]) -> People:
        """These persons with their preferences, devices and failed addresses."""
        ...

    async def relations(
        self, children: Sequence[str], guardians: Sequence[str]
    ) -> list[RelationRecord]:
        """Every relation of these children and of these guardians, by (child, guardian)."""
        ...

    async def places(self, groups: Sequence[str], units: Sequence[str]) -> Places:
        """These groups and units."""
        ...


async def expand(read: DirectoryRead, audience: Audience) -> DirectorySnapshot:
    """The planning snapshot of ``audience`` from one consistent ``read``."""
    people = await _audience_children(read, audience)
    children = sorted(p.id for p in people.persons.values() if p.role.value in CHILD_ROLES)
    relations = await read.relations(children, audience.guardians)
    wanted = list(
        dict.fromkeys(
            [
                *children,
                *(i for r in relations for i in (r.child_id, r.guardian_id)),
                *audience.guardians,
                *audience.staff,
            ]
        )
    )
    people.add(await read.people([i for i in wanted if i not in people.persons]))
    persons = {i: people.persons[i] for i in wanted if i in people.persons}
    places = await _places(read, audience, persons.values())
    return DirectorySnapshot.model_construct(
        units=places.units,
        groups=places.groups,
        persons=persons,
        audience_children=children,
        relations=relations,
        preferences={i: v for i, v in people.preferences.items() if i in persons},
        devices={i: v for i, v in people.devices.items() if i in persons and v},
        failing=failing(persons, people.failed),
    )


async def staff(read: DirectoryRead, groups: Sequence[str], units: Sequence[str]) -> list[str]:
    """The staff placed directly in these groups or units, sorted (who is told of an
    absence: ``AbsenceStore.staff_members``)."""
    if not groups and not units:
        return []
    placed = await read.members(groups, units)
    people = await read.people(sorted(placed.persons))
    return sorted(p.id for p in people.persons.values() if p.role is Role.staff)


async def _audience_children(read: DirectoryRead, audience: Audience) -> People:
    """The candidates for the audience's children (listed, or placed in a listed group
    or unit, directly or through the unit's groups), read with their contact state."""
    placed = await read.members(audience.groups, audience.units)
    extra = sorted(placed.unit_groups - set(audience.groups))
    through = (await read.members(extra, ())).persons if extra else set()
    return await read.people(sorted({*audience.children, *placed.persons, *through}))


async def _places(read: DirectoryRead, audience: Audience, persons: Iterable[Person]) -> Places:
    group_ids = dict.fromkeys(audience.groups)
    unit_ids = dict.fromkeys(audience.units)
    for person in persons:
        group_ids.update(dict.fromkeys(person.group_ids))
        unit_ids.update(dict.fromkeys(person.unit_ids))
    places = await read.places(list(group_ids), list(unit_ids))
    more = [g.unit_id for g in places.groups.values() if g.unit_id not in unit_ids]
    if not more:
        return places
    extra = await read.places((), list(dict.fromkeys(more)))
    return Places(places.groups, {**places.units, **extra.units})


def failing(persons: dict[str, Person], failed: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """Person -> contact kinds whose current address is the one that failed: a failure
    no longer counts once the address is changed, and counts again if it comes back."""
    out: dict[str, list[str]] = {}
    for person_id, person in persons.items():
        addresses = failed.get(person_id, {})
        current = {"email": person.email, "phone": person.phone}
        kinds = [k for k in CONTACT_KINDS if k in addresses and addresses[k] == current[k]]
        if kinds:
            out[person_id] = kinds
    return out


async def checked(read_once: Callable[[], Awaitable[_T | None]]) -> _T:
    """The result of the first of ``SNAPSHOT_TRIES`` reads that saw no write land while
    it ran (``read_once`` answers None when one did); a directory that keeps changing is
    a (transient) StoreError, never a torn snapshot."""
    for attempt in range(SNAPSHOT_TRIES):
        result = await read_once()
        if result is not None:
            return result
        await asyncio.sleep(0.001 * 2**attempt)  # let the writers pass
    raise StoreError("the directory kept changing while it was read; try again")
