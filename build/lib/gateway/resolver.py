"""Who may be told: the resolution rules of DESIGN.md as one pure function.

``resolve`` turns an audience into recipients (one per person, naming the
children the message concerns for that person) and suppressions (who was left
out, for which child, and why). It does no I/O; the store hands it a
``DirectorySnapshot``.

Reason codes of a ``Suppression``:

- ``blocked``: a blocked relation (court order, child welfare); beats everything.
- ``no_parental_responsibility``: a parent without foreldreansvar, no grant.
- ``information_revoked``: a parent whose right to information was revoked.
- ``adult_no_consent``: the pupil is 18 or more and has not consented.
- ``adult_learner``: adult education has no guardians.
- ``confidential_not_named``: confidential content reached only by a broadcast.
- ``daily_care_confidential``: daily care without foreldreansvar, confidential content.
- ``minor_not_recipient``: a child under 18 named directly; children are told via guardians.
- ``unknown_person`` / ``unknown_child``: an id the snapshot does not hold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from gateway.constants import ADULT_AGE, EVERYDAY_CATEGORIES
from gateway.models import Audience, Category, DirectorySnapshot, Person, RelationRecord, Role

PARENTAL_RESPONSIBILITY = "parental_responsibility"
DAILY_CARE = "daily_care"
INFORMATION_GRANTED = "information_granted"
NAMED = "named"
SELF = "self"
CONSENT = "consent"

BLOCKED = "blocked"
NO_PARENTAL_RESPONSIBILITY = "no_parental_responsibility"
INFORMATION_REVOKED = "information_revoked"
ADULT_NO_CONSENT = "adult_no_consent"
ADULT_LEARNER = "adult_learner"
CONFIDENTIAL_NOT_NAMED = "confidential_not_named"
DAILY_CARE_CONFIDENTIAL = "daily_care_confidential"
MINOR_NOT_RECIPIENT = "minor_not_recipient"
UNKNOWN_PERSON = "unknown_person"
UNKNOWN_CHILD = "unknown_child"

# When one person is reached on several grounds, the Recipient shows the strongest.
_BASIS_RANK = {
    NAMED: 0,
    SELF: 1,
    PARENTAL_RESPONSIBILITY: 2,
    CONSENT: 3,
    INFORMATION_GRANTED: 4,
    DAILY_CARE: 5,
}


@dataclass(frozen=True, slots=True)
class Recipient:
    """One person to tell, and the children (their own) the message concerns for them."""

    person_id: str
    role: Role
    child_ids: tuple[str, ...]
    basis: str


@dataclass(frozen=True, slots=True)
class Suppression:
    """One person left out, for one child (or not child-specific), with a reason code."""

    person_id: str
    role: Role
    child_id: str | None
    reason: str


@dataclass(slots=True)
class Resolution:
    recipients: list[Recipient]
    suppressed: list[Suppression]


def age_on(birth_date: date, on: date) -> int:
    """Completed years on ``on``. A 29 February birthday completes a year on 1 March
    in non-leap years (the 28th is still the day before the anniversary)."""
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))


def is_adult(person: Person, on: date) -> bool:
    """A learner always; a pupil from the day they turn 18."""
    if person.role is Role.learner:
        return True
    return person.birth_date is not None and age_on(person.birth_date, on) >= ADULT_AGE


_NAMING_CANNOT_OVERRIDE = frozenset({BLOCKED, INFORMATION_REVOKED, ADULT_NO_CONSENT})


class _Outcome:
    """Per (person, child) decisions, merged so that ``blocked`` always wins."""

    __slots__ = ("granted", "named", "roles", "suppressed")

    def __init__(self) -> None:
        # person id -> child id -> basis
        self.granted: dict[str, dict[str, str]] = defaultdict(dict)
        # (person id, child id or None) -> reason
        self.suppressed: dict[tuple[str, str | None], str] = {}
        self.roles: dict[str, Role] = {}
        # persons listed by id who are told (even if about none of the audience's children)
        self.named: set[str] = set()

    def grant(self, person_id: str, role: Role, child_id: str, basis: str) -> None:
        if (person_id, child_id) in self.suppressed:
            if self.suppressed[(person_id, child_id)] != BLOCKED:
                # A duplicate relation row that grants wins over one that does not.
                del self.suppressed[(person_id, child_id)]
            else:
                return
        self.roles[person_id] = role
        self.granted[person_id].setdefault(child_id, basis)

    def suppress(self, person_id: str, role: Role, child_id: str | None, reason: str) -> None:
        key = (person_id, child_id)
        if child_id is not None and child_id in self.granted.get(person_id, {}):
            if reason != BLOCKED:
                return
            del self.granted[person_id][child_id]
        self.roles.setdefault(person_id, role)
        if self.suppressed.get(key) != BLOCKED:
            self.suppressed[key] = reason


def resolve(
    snapshot: DirectorySnapshot, audience: Audience, category: Category, on: date
) -> Resolution:
    """Who may be told about a message to ``audience`` of ``category``, on the local date ``on``.

    Deterministic: recipients sorted by person id, suppressions by (person id, child id).
    """
    persons = snapshot.persons
    named = set(audience.guardians) | set(audience.staff)
    addressed = named | set(audience.children)
    children = list(dict.fromkeys([*snapshot.audience_children, *audience.children]))
    in_audience = set(children)
    outcome = _Outcome()

    for child_id in children:
        child = persons.get(child_id)
        if child is not None:
            _resolve_pupil(outcome, child, category, on, child_id in addressed)

    # Relations of named guardians to children outside the audience count only for
    # "is every relation of this named person blocked?".
    named_relations: dict[str, list[RelationRecord]] = defaultdict(list)
    for relation in snapshot.relations:
        if relation.guardian_id in named:
            named_relations[relation.guardian_id].append(relation)
        if relation.child_id in in_audience:
            _resolve_relation(outcome, snapshot, relation, category, on, named)

    for person_id in sorted(named):
        person = persons.get(person_id)
        if person is None:
            role = Role.staff if person_id in audience.staff else Role.guardian
            outcome.suppress(person_id, role, None, UNKNOWN_PERSON)
        else:
            _resolve_named(outcome, person, named_relations[person_id], in_audience, on)

    return _finish(outcome)


def _resolve_pupil(
    outcome: _Outcome, child: Person, category: Category, on: date, addressed: bool
) -> None:
    """An adult pupil or a learner in the audience is told themself; a minor is not."""
    if child.role not in (Role.child, Role.learner) or not is_adult(child, on):
        return
    # Confidential content reaches an adult pupil only when addressed by id, not via
    # the class or unit they are in.
    if category == Category.confidential and not addressed:
        outcome.suppress(child.id, child.role, child.id, CONFIDENTIAL_NOT_NAMED)
    else:
        outcome.grant(child.id, child.role, child.id, SELF)


def _resolve_relation(
    outcome: _Outcome,
    snapshot: DirectorySnapshot,
    relation: RelationRecord,
    category: Category,
    on: date,
    named: set[str],
) -> None:
    guardian = snapshot.persons.get(relation.guardian_id)
    child = snapshot.persons.get(relation.child_id)
    role = guardian.role if guardian is not None else Role.guardian
    basis: str | None = None
    if relation.flags.blocked:
        reason = BLOCKED
    elif guardian is None:
        reason = UNKNOWN_PERSON
    elif child is None:
        reason = UNKNOWN_CHILD
    else:
        named_here = relation.guardian_id in named
        basis, reason = _relation_basis(relation, child, category, on, named_here)
    if basis is not None:
        outcome.grant(relation.guardian_id, role, relation.child_id, basis)
    else:
        outcome.suppress(relation.guardian_id, role, relation.child_id, reason)


def _relation_basis(
    relation: RelationRecord, child: Person, category: Category, on: date, named: bool
) -> tuple[str | None, str]:
    """(basis, "") if this unblocked relation may be told about ``child``, else (None, reason)."""
    if child.role is Role.learner:
        return None, ADULT_LEARNER
    adult = is_adult(child, on)
    if adult and not child.consent_guardians:
        return None, ADULT_NO_CONSENT
    if relation.parental_responsibility:
        basis = PARENTAL_RESPONSIBILITY
    elif relation.flags.information_granted:
        basis = INFORMATION_GRANTED
    elif relation.daily_care:
        if category not in EVERYDAY_CATEGORIES and not named:
            return None, DAILY_CARE_CONFIDENTIAL
        basis = DAILY_CARE
    elif relation.flags.information_reason:
        # A grant switched off again keeps its reason: revoked, never re-added.
        return None, INFORMATION_REVOKED
    else:
        return None, NO_PARENTAL_RESPONSIBILITY
    if category == Category.confidential and not named:
        return None, CONFIDENTIAL_NOT_NAMED
    return (CONSENT if adult else basis), ""


def _resolve_named(
    outcome: _Outcome,
    person: Person,
    relations: list[RelationRecord],
    in_audience: set[str],
    on: date,
) -> None:
    """A person listed by id is told, unless blocked on every relation or a minor."""
    if person.role is Role.child and not is_adult(person, on):
        outcome.suppress(person.id, person.role, None, MINOR_NOT_RECIPIENT)
        return
    if relations and all(r.flags.blocked for r in relations):
        # Already recorded per child when a blocked child is in the audience.
        if not any(r.child_id in in_audience for r in relations):
            outcome.suppress(person.id, person.role, None, BLOCKED)
        return
    # Naming a person never overrides a refusal about a child the message concerns: a
    # blocked or revoked relation, or an adult pupil's missing consent, keeps them out
    # (their suppression for that child is already recorded).
    if any(
        outcome.suppressed.get((person.id, r.child_id)) in _NAMING_CANNOT_OVERRIDE
        for r in relations
        if r.child_id in in_audience
    ):
        return
    outcome.roles[person.id] = person.role
    outcome.named.add(person.id)


def _finish(outcome: _Outcome) -> Resolution:
    told = {pid for pid, by_child in outcome.granted.items() if by_child} | outcome.named
    recipients = [
        Recipient(
            person_id=person_id,
            role=outcome.roles[person_id],
            child_ids=tuple(sorted(outcome.granted.get(person_id, ()))),
            basis=NAMED
            if person_id in outcome.named
            else _strongest(outcome.granted[person_id].values()),
        )
        for person_id in sorted(told)
    ]
    suppressed = [
        Suppression(
            person_id=person_id, role=outcome.roles[person_id], child_id=child_id, reason=reason
        )
        for (person_id, child_id), reason in sorted(
            outcome.suppressed.items(), key=lambda item: (item[0][0], item[0][1] or "")
        )
    ]
    return Resolution(recipients=recipients, suppressed=suppressed)


def _strongest(bases: Iterable[str]) -> str:
    return min(bases, key=_BASIS_RANK.__getitem__)
