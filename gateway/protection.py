"""Protection (sperret adresse) is a manual fact: an import may raise it, never lower it.

A student-administration platform that does not carry protection sends a person
without the field; before this rule the upsert wrote the default ``none`` over a
stored ``strictly_confidential`` and the person's address showed again. Now
every backend merges each imported person with the stored one through
:func:`merge_imported`, inside the same transaction as the write:

* ``protection``: absent means keep; a higher level raises it; a lower one is
  ignored (the stored level stays). Only ``PUT /v1/persons/{id}/protection``
  (:meth:`gateway.store.Store.set_protection`, with reason and actor, history
  kept) lowers it.
* ``language`` and ``consent_guardians``: absent means keep; given (also
  ``null`` for language) means replace.
* every other field of a person is the platform's truth and replaces the stored
  value (a missing optional field clears it).

Every raise by an import is written to the protection history too (actor
:data:`IMPORT_ACTOR`), so the history tells every change of the level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.models import DirectorySnapshot, Person, Protection, Role

IMPORT_ACTOR = "import"
IMPORT_REASON = "raised by a directory import"
# Fields an absent value keeps as stored (protection also never goes down by import).
KEPT_WHEN_ABSENT = ("protection", "language", "consent_guardians")

RANK: dict[Protection, int] = {
    Protection.none: 0,
    Protection.confidential: 1,
    Protection.strictly_confidential: 2,
}


def higher(a: Protection, b: Protection) -> Protection:
    """The stronger of two protection levels."""
    return a if RANK[a] >= RANK[b] else b


@dataclass(frozen=True, slots=True)
class ProtectionHistoryEntry:
    """One change of a person's protection level, kept for audit."""

    level: Protection
    previous: Protection
    reason: str
    actor: str
    at: datetime


def merge_imported(stored: Person | None, imported: Person) -> Person:
    """The person to write when ``imported`` arrives and ``stored`` is in the store.

    Which fields were given is ``imported.model_fields_set`` (pydantic keeps it from
    the JSON body, or from the keyword arguments the caller passed)."""
    if stored is None:
        return imported
    given = imported.model_fields_set
    update: dict[str, object] = {
        name: getattr(stored, name) for name in KEPT_WHEN_ABSENT if name not in given
    }
    update["protection"] = higher(stored.protection, imported.protection)
    return imported.model_copy(update=update)


def import_raise(stored: Person | None, written: Person, at: datetime) -> ProtectionHistoryEntry:
    """The history entry of an import raising the level from ``stored`` to ``written``."""
    before = stored.protection if stored is not None else Protection.none
    return ProtectionHistoryEntry(written.protection, before, IMPORT_REASON, IMPORT_ACTOR, at)


def raised_by_import(stored: Person | None, written: Person) -> bool:
    """Whether writing ``written`` over ``stored`` raises the protection level (to record)."""
    before = stored.protection if stored is not None else Protection.none
    return RANK[written.protection] > RANK[before]


def sensitive_children(snapshot: DirectorySnapshot) -> frozenset[str]:
    """The children of ``snapshot`` who are protected (either level) or have a protected
    guardian: whatever names their place is hidden from other recipients (rule 4)."""
    persons = snapshot.persons
    found = {p.id for p in persons.values() if p.protection is not Protection.none}
    if not found:
        return frozenset()
    found.update(
        r.child_id
        for r in snapshot.relations
        if r.guardian_id in persons and persons[r.guardian_id].protection is not Protection.none
    )
    return frozenset(found)


def hides_places(recipient: Person, child_ids: Sequence[str], sensitive: frozenset[str]) -> bool:
    """Whether ``recipient`` must get neutral wording about ``child_ids`` (DESIGN.md rule 4).

    When a child the message concerns, or another guardian of that child, has a
    protected address (either level; ``sensitive`` from :func:`sensitive_children`),
    no recipient but the protected persons themselves may learn where the child is:
    the unit, group, sender and staff names are left out of every channel and page
    (templates use neutral texts instead). Staff are told by role and know their own
    unit; they are never neutralised."""
    if recipient.role is Role.staff or recipient.protection is not Protection.none:
        return False
    return any(c in sensitive for c in child_ids)
