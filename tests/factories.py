"""A small builder of directory snapshots for resolver and planner tests.

It expands an audience the way ``Store.load_audience`` documents: children and
learners listed, in the listed groups or in the listed units, deduplicated and sorted.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import count

from gateway.models import (
    Audience,
    Category,
    Device,
    DirectorySnapshot,
    Group,
    GroupKind,
    Message,
    Person,
    Preferences,
    Protection,
    RelationFlags,
    RelationRecord,
    Role,
    Unit,
    UnitKind,
)

TODAY = date(2026, 11, 27)
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
_numbers = count(1)


def born(age: int, on: date = TODAY) -> date:
    """A birth date that makes someone exactly ``age`` (birthday a few months back)."""
    return date(on.year - age, 1, 15)


class Directory:
    """Mutable builder; ``snapshot(audience)`` freezes it into a DirectorySnapshot."""

    def __init__(self) -> None:
        self.units: dict[str, Unit] = {}
        self.groups: dict[str, Group] = {}
        self.persons: dict[str, Person] = {}
        self.relations: list[RelationRecord] = []
        self.preferences: dict[str, Preferences] = {}
        self.devices: dict[str, list[Device]] = {}
        self.failing: dict[str, list[str]] = {}

    def unit(
        self,
        unit_id: str = "u1",
        name: str = "Solberg skole",
        *,
        kind: UnitKind = UnitKind.school,
        time_zone: str = "Europe/Oslo",
        sender_name: str | None = None,
    ) -> Unit:
        unit = Unit(id=unit_id, kind=kind, name=name, time_zone=time_zone, sender_name=sender_name)
        self.units[unit_id] = unit
        return unit

    def group(self, group_id: str, unit_id: str = "u1", name: str | None = None) -> Group:
        if unit_id not in self.units:
            self.unit(unit_id)
        group = Group(id=group_id, unit_id=unit_id, kind=GroupKind.class_, name=name or group_id)
        self.groups[group_id] = group
        return group

    def child(
        self,
        child_id: str,
        *,
        birth_date: date | None = None,
        age: int = 10,
        groups: tuple[str, ...] = (),
        unit_id: str = "u1",
        given_name: str | None = None,
        role: Role = Role.child,
        consent_guardians: bool = False,
        protection: Protection = Protection.none,
        email: str | None = None,
        phone: str | None = None,
    ) -> Person:
        for group_id in groups:
            if group_id not in self.groups:
                self.group(group_id, unit_id)
        if unit_id not in self.units:
            self.unit(unit_id)
        person = Person(
            id=child_id,
            role=role,
            given_name=given_name or f"Child {child_id}",
            family_name="Hansen",
            birth_date=birth_date or born(age),
            unit_ids=[unit_id],
            group_ids=list(groups),
            consent_guardians=consent_guardians,
            protection=protection,
            email=email,
            phone=phone,
        )
        self.persons[child_id] = person
        return person

    def guardian(
        self,
        guardian_id: str,
        *,
        given_name: str | None = None,
        email: str | None = "auto",
        phone: str | None = "auto",
        protection: Protection = Protection.none,
        language: str | None = None,
        role: Role = Role.guardian,
        unit_ids: tuple[str, ...] = (),
    ) -> Person:
        number = next(_numbers)
        person = Person(
            id=guardian_id,
            role=role,
            given_name=given_name or f"Guardian {guardian_id}",
            family_name="Olsen",
            email=f"{guardian_id}@example.no" if email == "auto" else email,
            phone=f"+47410{number % 100000:05d}" if phone == "auto" else phone,
            protection=protection,
            language=language,
            unit_ids=list(unit_ids),
        )
        self.persons[guardian_id] = person
        return person

    def staff(self, staff_id: str, *, unit_id: str = "u1", email: str | None = "auto") -> Person:
        return self.guardian(staff_id, role=Role.staff, email=email, unit_ids=(unit_id,))

    def relate(
        self,
        child_id: str,
        guardian_id: str,
        *,
        pr: bool = True,
        daily_care: bool = False,
        blocked: bool = False,
        granted: bool = False,
        information_reason: str | None = None,
    ) -> RelationRecord:
        flags = RelationFlags(
            information_granted=granted,
            information_reason=information_reason or ("§ 47 request" if granted else None),
            blocked=blocked,
            blocked_reason="court order" if blocked else None,
        )
        relation = RelationRecord(
            child_id=child_id,
            guardian_id=guardian_id,
            parental_responsibility=pr,
            daily_care=daily_care,
            flags=flags,
        )
        self.relations.append(relation)
        return relation

    def device(self, guardian_id: str, device_id: str, *, fid: bool = False) -> Device:
        device = (
            Device(id=device_id, fid=f"fid-{device_id}", platform="ios")
            if fid
            else Device(id=device_id, token=f"token-{device_id}", platform="android")
        )
        self.devices.setdefault(guardian_id, []).append(device)
        return device

    def audience_children(self, audience: Audience) -> list[str]:
        groups, units = set(audience.groups), set(audience.units)
        found = set(audience.children)
        for person in self.persons.values():
            if person.role not in (Role.child, Role.learner):
                continue
            if groups.intersection(person.group_ids) or units.intersection(person.unit_ids):
                found.add(person.id)
        return sorted(found)

    def snapshot(self, audience: Audience) -> DirectorySnapshot:
        return DirectorySnapshot(
            units=dict(self.units),
            groups=dict(self.groups),
            persons=dict(self.persons),
            audience_children=self.audience_children(audience),
            relations=list(self.relations),
            preferences=dict(self.preferences),
            devices={k: list(v) for k, v in self.devices.items()},
            failing={k: list(v) for k, v in self.failing.items()},
        )


def message(
    audience: Audience,
    category: Category = Category.general,
    *,
    event_id: str = "ev-1",
    sender_name: str | None = "Kari Lærer",
) -> Message:
    return Message(
        id="msg-1",
        tenant_id="asker",
        event_id=event_id,
        event_type="message.created",
        body_hash="0" * 64,
        category=category,
        subject="Turdag",
        body="Husk matpakke.",
        sender_name=sender_name,
        audience=audience,
        created_at=NOW,
    )
