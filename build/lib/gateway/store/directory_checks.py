"""Referential checks of directory batches, shared by every store backend so each
reports the same errors: every problem at once, each naming its row and field,
never the row's personal data."""

from __future__ import annotations

from typing import Any, NamedTuple

from gateway.models import DirectoryBatch, Role

MAX_REPORTED_ERRORS = 100
CHILD_ROLES = (Role.child.value, Role.learner.value)


def reference_error(loc: list[str | int], message: str, kind: str) -> dict[str, Any]:
    # Messages name the kind of problem only, never the row's personal data.
    return {"loc": loc, "message": message, "type": kind}


class Known(NamedTuple):
    """What a directory batch may refer to: its own rows plus the stored ones."""

    units: set[str]
    groups: set[str]
    roles: dict[str, str]


def batch_errors(batch: DirectoryBatch, known: Known) -> list[dict[str, Any]]:
    """Every referential error of the batch, each naming its row and field."""
    errors: list[dict[str, Any]] = [
        reference_error(["groups", i, "unit_id"], "unknown unit", "unknown_reference")
        for i, group in enumerate(batch.groups)
        if group.unit_id not in known.units
    ]
    for i, person in enumerate(batch.persons):
        errors.extend(
            reference_error(["persons", i, "unit_ids", j], "unknown unit", "unknown_reference")
            for j, unit_id in enumerate(person.unit_ids)
            if unit_id not in known.units
        )
        errors.extend(
            reference_error(["persons", i, "group_ids", j], "unknown group", "unknown_reference")
            for j, group_id in enumerate(person.group_ids)
            if group_id not in known.groups
        )
    for i, relation in enumerate(batch.relations):
        for field, person_id, fit in (
            ("child_id", relation.child_id, CHILD_ROLES),
            ("guardian_id", relation.guardian_id, (Role.guardian.value,)),
        ):
            role = known.roles.get(person_id)
            if role is None:
                errors.append(
                    reference_error(["relations", i, field], "unknown person", "unknown_reference")
                )
            elif role not in fit:
                errors.append(
                    reference_error(
                        ["relations", i, field], "the person has the wrong role", "wrong_role"
                    )
                )
    errors.extend(
        reference_error(["preferences", person_id], "unknown person", "unknown_reference")
        for person_id in batch.preferences
        if person_id not in known.roles
    )
    return errors
