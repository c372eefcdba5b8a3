"""A synthetic municipality the size of Asker, generated deterministically from a seed.

12,000 children (``children``) in about 25 schools and 30 kindergartens, about
20,000 distinct guardians: siblings share guardians, some children have one
guardian, some a third relation without parental responsibility. 80 % of the
guardians have the parent app (one push device), every guardian has a mobile
number, most have an email address. Nothing here is personal data: names are
drawn from a short list and numbers and addresses are made up.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

GIVEN = tuple(
    [
        "Ola",
        "Kari",
        "Emma",
        "Noah",
        "Sara",
        "Jakob",
        "Nora",
        "Filip",
        "Ella",
        "Lucas",
        "Maja",
        "Emil",
        "Ingrid",
        "Oskar",
        "Sofie",
        "Aksel",
        "Leah",
        "Henrik",
        "Ida",
        "Johannes",
        "Frida",
        "Isak",
        "Tiril",
        "Magnus",
        "Astrid",
        "Mohammed",
        "Amina",
        "Jonas",
        "Selma",
        "Ali",
    ]
)
FAMILY = tuple(
    [
        "Hansen",
        "Johansen",
        "Olsen",
        "Larsen",
        "Andersen",
        "Pedersen",
        "Nilsen",
        "Kristiansen",
        "Jensen",
        "Karlsen",
        "Berg",
        "Haugen",
        "Hagen",
        "Eriksen",
        "Bakken",
        "Ahmed",
        "Solberg",
        "Lie",
        "Dahl",
        "Moen",
    ]
)

SCHOOLS = 25
KINDERGARTENS = 30
KINDERGARTEN_SHARE = 0.3  # of the children
CLASS_SIZE = 25
DEPARTMENT_SIZE = 18
PUSH_SHARE = 0.8  # guardians with the parent app
EMAIL_SHARE = 0.85  # guardians with an email address
# Children per family (siblings share guardians): 1, 2 or 3.
SIBLINGS = ((1, 0.74), (2, 0.2), (3, 0.06))
SINGLE_GUARDIAN = 0.1  # families with one guardian
THIRD_RELATION = 0.3  # families where a child has a third relation, without foreldreansvar


@dataclass
class Guardian:
    id: str
    phone: str
    email: str | None
    device_token: str | None  # the push registration token, if the app is installed
    language: str | None


@dataclass
class Municipality:
    """The directory rows, and who should be reached on what in an emergency broadcast."""

    seed: int
    units: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    children: list[dict[str, Any]] = field(default_factory=list)
    guardians: list[Guardian] = field(default_factory=list)
    relations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unit_ids(self) -> list[str]:
        return [unit["id"] for unit in self.units]

    def guardian_rows(self) -> Iterator[dict[str, Any]]:
        for n, guardian in enumerate(self.guardians):
            row: dict[str, Any] = {
                "id": guardian.id,
                "role": "guardian",
                "given_name": GIVEN[(n * 7) % len(GIVEN)],
                "family_name": FAMILY[(n * 3) % len(FAMILY)],
                "phone": guardian.phone,
            }
            if guardian.email:
                row["email"] = guardian.email
            if guardian.language:
                row["language"] = guardian.language
            yield row

    def with_responsibility(self) -> set[str]:
        """Guardians holding parental responsibility for at least one child: the emergency
        audience (the others are suppressed, never contacted)."""
        return {r["guardian_id"] for r in self.relations if r["parental_responsibility"]}

    def expected(self) -> dict[str, int]:
        """Deliveries per channel that an emergency to every unit must hand over."""
        told = self.with_responsibility()
        counts = {"inapp": 0, "push": 0, "sms": 0, "email": 0}
        for guardian in self.guardians:
            if guardian.id not in told:
                continue
            counts["inapp"] += 1
            counts["sms"] += 1
            counts["push"] += guardian.device_token is not None
            counts["email"] += guardian.email is not None
        return counts

    def children_told(self) -> list[str]:
        """Children with at least one guardian who holds parental responsibility."""
        told = {r["child_id"] for r in self.relations if r["parental_responsibility"]}
        return [c["id"] for c in self.children if c["id"] in told]


def _siblings(rng: random.Random) -> int:
    pick = rng.random()
    for count, share in SIBLINGS:
        if pick < share:
            return count
        pick -= share
    return SIBLINGS[-1][0]


def _birth_date(rng: random.Random, today: date, kindergarten: bool) -> str:
    age = rng.randint(1, 5) if kindergarten else rng.randint(6, 15)
    return date(today.year - age, rng.randint(1, 12), rng.randint(1, 28)).isoformat()


def generate(children: int = 12_000, seed: int = 1, today: date | None = None) -> Municipality:
    """The municipality for ``children`` children; the same seed gives the same rows."""
    rng = random.Random(seed)
    today = today or date(2025, 3, 1)
    town = Municipality(seed=seed)
    kindergarten_children = round(children * KINDERGARTEN_SHARE)
    places: list[tuple[str, str]] = []  # (unit id, group id), one per child seat

    def add_units(kind: str, count: int, seats: int, size: int, prefix: str) -> None:
        for u in range(count):
            unit_id = f"u-{prefix}{u + 1:02d}"
            town.units.append(
                {
                    "id": unit_id,
                    "kind": kind,
                    "name": f"{'Skole' if kind == 'school' else 'Barnehage'} {u + 1}",
                    "sender_name": f"{prefix.upper()}{u + 1}",
                    "sms_sender": f"Enhet{u + 1}",
                }
            )
            share = seats // count + (1 if u < seats % count else 0)
            groups = max(1, -(-share // size))
            for g in range(groups):
                group_id = f"{unit_id}-g{g + 1:02d}"
                town.groups.append(
                    {
                        "id": group_id,
                        "unit_id": unit_id,
                        "kind": "class" if kind == "school" else "department",
                        "name": f"Gruppe {g + 1}",
                    }
                )
            places.extend((unit_id, f"{unit_id}-g{(i % groups) + 1:02d}") for i in range(share))

    add_units("school", SCHOOLS, children - kindergarten_children, CLASS_SIZE, "s")
    add_units("kindergarten", KINDERGARTENS, kindergarten_children, DEPARTMENT_SIZE, "k")
    rng.shuffle(places)

    guardian_no = 0

    def new_guardian() -> str:
        nonlocal guardian_no
        guardian_no += 1
        gid = f"g{guardian_no:06d}"
        has_app = rng.random() < PUSH_SHARE
        language = rng.choices((None, "nn", "en"), weights=(90, 5, 5))[0]
        town.guardians.append(
            Guardian(
                id=gid,
                # Norwegian mobile numbers start with 4 or 9 and have eight digits.
                phone=f"+479{guardian_no:07d}",
                email=f"{gid}@example.org" if rng.random() < EMAIL_SHARE else None,
                device_token=f"fcm-{seed}-{gid}-{rng.getrandbits(48):012x}" if has_app else None,
                language=language,
            )
        )
        return gid

    child_no = 0
    while child_no < children:
        family = FAMILY[rng.randrange(len(FAMILY))]
        single = rng.random() < SINGLE_GUARDIAN
        parents = [new_guardian()] if single else [new_guardian(), new_guardian()]
        kids = min(_siblings(rng), children - child_no)
        third = new_guardian() if rng.random() < THIRD_RELATION else None
        for k in range(kids):
            unit_id, group_id = places[child_no]
            child_no += 1
            cid = f"c{child_no:06d}"
            town.children.append(
                {
                    "id": cid,
                    "role": "child",
                    "given_name": GIVEN[rng.randrange(len(GIVEN))],
                    "family_name": family,
                    "birth_date": _birth_date(rng, today, unit_id.startswith("u-k")),
                    "unit_ids": [unit_id],
                    "group_ids": [group_id],
                }
            )
            for parent in parents:
                town.relations.append(
                    {
                        "child_id": cid,
                        "guardian_id": parent,
                        "parental_responsibility": True,
                        "daily_care": False,
                    }
                )
            if third is not None and k == 0:
                town.relations.append(
                    {
                        "child_id": cid,
                        "guardian_id": third,
                        "parental_responsibility": False,
                        "daily_care": False,
                    }
                )
    return town
