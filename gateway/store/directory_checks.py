"""The backend-neutral directory rules, shared by every store backend so each reports
the same errors: every problem at once, each naming its row and field, never the
row's personal data. A backend reads the facts (which ids exist, with which role);
the rules here decide: referential checks of a batch (:func:`batch_errors`, with the
half of "what may it refer to" that needs no store, :func:`batch_refs`), the role
table of ``missing_ids`` (:data:`AUDIENCE_CHECKS`), deletion checks
(:func:`check_deletion`) and the contact kinds of ``mark_contact_failing``."""

from __future__ import annotations

from typing import Any, NamedTuple

from gateway.errors import ValidationFailed
from gateway.models import Audience, DirectoryBatch, DirectoryDeletion, Role
from gateway.pacing import paced

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


def check_batch(batch: DirectoryBatch, known: Known) -> None:
    """Raise ValidationFailed naming every referential error; nothing is written then.
    (Blocking: run it in a thread for a large batch.)"""
    errors = batch_errors(batch, known)
    if errors:
        raise ValidationFailed(
            "the directory batch refers to unknown or unfit rows; nothing was written",
            errors=errors[:MAX_REPORTED_ERRORS],
        )


def batch_errors(batch: DirectoryBatch, known: Known) -> list[dict[str, Any]]:
    """Every referential error of the batch, each naming its row and field."""
    errors: list[dict[str, Any]] = [
        reference_error(["groups", i, "unit_id"], "unknown unit", "unknown_reference")
        for i, group in enumerate(paced(batch.groups))
        if group.unit_id not in known.units
    ]
    seen: set[str] = set()
    for i, person in enumerate(paced(batch.persons)):
        if person.id in seen:
            # SQLite added a repeat's memberships up, Redis kept the last row's, and in
            # chunks a later row replaced an earlier one's: ambiguous, so refused.
            errors.append(
                reference_error(
                    ["persons", i, "id"],
                    "this person is listed twice; list each once, with all their units and groups",
                    "duplicate",
                )
            )
        seen.add(person.id)
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
    for i, relation in enumerate(paced(batch.relations)):
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


class BatchRefs(NamedTuple):
    """The ids a directory batch brings (``known``) and the stored ids it refers to and
    must be looked up (``wanted_*``, minus what the batch brings)."""

    known: Known
    wanted_units: set[str]
    wanted_groups: set[str]
    wanted_persons: set[str]


def batch_refs(batch: DirectoryBatch) -> BatchRefs:
    """The half of "what may this batch refer to" that needs no store (run it in a
    thread for a large batch: 100,000s of rows, paced for the loop)."""
    units = {u.id for u in paced(batch.units)}
    groups = {g.id for g in paced(batch.groups)}
    roles = {p.id: p.role.value for p in paced(batch.persons)}
    wanted_units = {g.unit_id for g in paced(batch.groups)}
    wanted_units.update(u for p in paced(batch.persons) for u in p.unit_ids)
    wanted_groups = {g for p in paced(batch.persons) for g in p.group_ids}
    wanted_persons = {r.child_id for r in paced(batch.relations)}
    wanted_persons.update(r.guardian_id for r in paced(batch.relations))
    wanted_persons.update(batch.preferences)
    return BatchRefs(
        Known(units, groups, roles),
        wanted_units - units,
        wanted_groups - groups,
        wanted_persons - roles.keys(),
    )


# missing_ids: which audience field names which kind of row, and the roles that fit
# (() = any). A backend maps the kind to its table.
AUDIENCE_CHECKS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("children", "person", CHILD_ROLES),
    ("groups", "group", ()),
    ("units", "unit", ()),
    ("guardians", "person", (Role.guardian.value,)),
    ("staff", "person", (Role.staff.value,)),
)


def audience_ids(audience: Audience) -> list[tuple[str, str, tuple[str, ...], list[str]]]:
    """(field, row kind, fitting roles, distinct ids) per field of an audience."""
    return [
        (field, kind, roles, list(dict.fromkeys(getattr(audience, field))))
        for field, kind, roles in AUDIENCE_CHECKS
    ]


class DeletionFacts(NamedTuple):
    """What a deletion needs to know of the stored directory."""

    units: set[str]  # of the deletion's units, those that exist
    groups: set[str]
    persons: set[str]
    relations: set[tuple[str, str]]  # of the deletion's (child, guardian) pairs, existing
    unit_groups: dict[str, set[str]]  # the groups of each unit to delete


def check_deletion(deletion: DirectoryDeletion, facts: DeletionFacts) -> None:
    """Raise ValidationFailed naming every unknown or still used row; nothing is deleted
    then. A unit goes only together with its groups: a group never points nowhere."""
    errors: list[dict[str, Any]] = []
    for kind, ids, found in (
        ("units", deletion.units, facts.units),
        ("groups", deletion.groups, facts.groups),
        ("persons", deletion.persons, facts.persons),
    ):
        errors.extend(
            reference_error([kind, i], "unknown id", "not_found")
            for i, row_id in enumerate(ids)
            if row_id not in found
        )
    errors.extend(
        reference_error(["relations", i], "unknown relation", "not_found")
        for i, r in enumerate(deletion.relations)
        if (r.child_id, r.guardian_id) not in facts.relations
    )
    leaving = set(deletion.groups)
    errors.extend(
        reference_error(["units", i], "the unit still has groups", "in_use")
        for i, unit_id in enumerate(deletion.units)
        if facts.unit_groups.get(unit_id, set()) - leaving
    )
    if errors:
        raise ValidationFailed(
            "the deletion names unknown or still used rows; nothing was deleted",
            errors=errors[:MAX_REPORTED_ERRORS],
        )


CONTACT_KINDS = ("email", "phone")


def check_contact_kind(kind: str) -> None:
    """``mark_contact_failing``'s kind: email or phone."""
    if kind not in CONTACT_KINDS:
        raise ValidationFailed(
            "unknown contact kind",
            errors=[reference_error(["kind"], "unknown contact kind", "enum")],
        )


RELATION_FLAGS = ("information_granted", "blocked")


def check_relation_flag(flag: str) -> None:
    """``set_relation_flag``'s flag: one of the manual relation flags."""
    if flag not in RELATION_FLAGS:
        raise ValidationFailed(
            "unknown flag", errors=[reference_error(["flag"], "unknown flag", "enum")]
        )
