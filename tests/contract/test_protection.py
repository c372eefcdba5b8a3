"""Protection is a manual fact (gateway/protection.py), on every backend.

An import (directory batch, OneRoster) may raise a person's protection but never lower
it; an absent language or consent keeps the stored value; only ``set_protection``
lowers, with reason, actor and history. The property test runs random directories and
random orders of imports, OneRoster batches, flag and protection calls and checks that
nothing manual ever drops without its own call.
"""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import NotFound
from gateway.models import Audience, DirectoryBatch, Person, Protection, Relation, Role
from gateway.oneroster import apply_oneroster
from gateway.protection import IMPORT_ACTOR, RANK
from gateway.store import Store

from .builders import T0, A, B, at, school_batch
from .conftest import Backend

LEVELS = list(Protection)


def person(pid: str, role: Role = Role.guardian, **fields: object) -> Person:
    extra = {"birth_date": date(2015, 5, 1)} if role is Role.child else {}
    return Person(id=pid, role=role, given_name=f"Name {pid}", **extra, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def school(store: Store) -> Store:
    await store.apply_directory(A, school_batch(), T0)
    return store


async def test_an_import_without_protection_keeps_it(school: Store) -> None:
    await school.apply_directory(
        A, DirectoryBatch(persons=[person("p1", protection=Protection.strictly_confidential)]), T0
    )
    # The same person again, as a platform that does not carry protection sends her.
    await school.apply_directory(A, DirectoryBatch(persons=[person("p1")]), at(1))
    stored = await school.get_person(A, "p1")
    assert stored is not None and stored.protection is Protection.strictly_confidential


async def test_an_import_may_raise_but_never_lower(school: Store) -> None:
    await school.apply_directory(
        A, DirectoryBatch(persons=[person("p2", protection=Protection.confidential)]), at(1)
    )
    lowered = DirectoryBatch(persons=[person("p2", protection=Protection.none)])
    await school.apply_directory(A, lowered, at(2))
    assert (await school.get_person(A, "p2")).protection is Protection.confidential  # type: ignore[union-attr]
    raised = DirectoryBatch(persons=[person("p2", protection=Protection.strictly_confidential)])
    await school.apply_directory(A, raised, at(3))
    assert (await school.get_person(A, "p2")).protection is Protection.strictly_confidential  # type: ignore[union-attr]
    history = await school.protection_history(A, "p2")
    assert [(h.previous, h.level, h.actor, h.at) for h in history] == [
        (Protection.none, Protection.confidential, IMPORT_ACTOR, at(1)),
        (Protection.confidential, Protection.strictly_confidential, IMPORT_ACTOR, at(3)),
    ]


async def test_absent_language_and_consent_keep_the_stored_values(school: Store) -> None:
    adult = person("c9", Role.child, language="en", consent_guardians=True)
    await school.apply_directory(A, DirectoryBatch(persons=[adult]), at(1))
    await school.apply_directory(A, DirectoryBatch(persons=[person("c9", Role.child)]), at(2))
    stored = await school.get_person(A, "c9")
    assert stored is not None
    assert (stored.language, stored.consent_guardians) == ("en", True)
    # Given explicitly (also null), they replace.
    explicit = person("c9", Role.child, language=None, consent_guardians=False)
    await school.apply_directory(A, DirectoryBatch(persons=[explicit]), at(3))
    stored = await school.get_person(A, "c9")
    assert stored is not None
    assert (stored.language, stored.consent_guardians) == (None, False)


async def test_only_set_protection_lowers_with_history(school: Store) -> None:
    await school.apply_directory(
        A, DirectoryBatch(persons=[person("p3", protection=Protection.strictly_confidential)]), T0
    )
    entry = await school.set_protection(
        A, "p3", Protection.none, "address no longer protected", "rektor", at(5)
    )
    assert (entry.previous, entry.level) == (Protection.strictly_confidential, Protection.none)
    assert (await school.get_person(A, "p3")).protection is Protection.none  # type: ignore[union-attr]
    history = await school.protection_history(A, "p3")
    assert [(h.level, h.reason, h.actor, h.at) for h in history][-1] == (
        Protection.none,
        "address no longer protected",
        "rektor",
        at(5),
    )
    assert await school.protection_history(B, "p3") == []
    with pytest.raises(NotFound):
        await school.set_protection(A, "ghost", Protection.none, "why", "rektor", at(6))
    with pytest.raises(NotFound):
        await school.set_protection(B, "p3", Protection.none, "why", "rektor", at(6))


# --------------------------------------------------------------------------- property

PERSONS = ("p1", "p2", "p3", "p4")
CHILDREN = ("c1", "c2")
FLAGS = ("blocked", "information_granted")

maybe_level = st.one_of(st.none(), st.sampled_from(LEVELS))


@st.composite
def imported_person(draw: st.DrawFn) -> Person:
    pid = draw(st.sampled_from(PERSONS))
    fields: dict[str, object] = {}
    level = draw(maybe_level)
    if level is not None:
        fields["protection"] = level
    if draw(st.booleans()):
        fields["language"] = draw(st.sampled_from([None, "nn", "en"]))
    return person(pid, **fields)


def _id(p: Person) -> str:
    return p.id  # a batch lists each person once (a repeat is a 422)


step = st.one_of(
    st.tuples(st.just("batch"), st.lists(imported_person(), min_size=1, max_size=4, unique_by=_id)),
    st.tuples(
        st.just("oneroster"), st.lists(imported_person(), min_size=1, max_size=4, unique_by=_id)
    ),
    st.tuples(
        st.just("flag"),
        st.tuples(st.sampled_from(CHILDREN), st.sampled_from(PERSONS), st.sampled_from(FLAGS)),
        st.booleans(),
    ),
    st.tuples(st.just("protect"), st.sampled_from(PERSONS), st.sampled_from(LEVELS)),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(step, min_size=1, max_size=12))
async def test_nothing_manual_drops_without_its_own_call(backend: Backend, steps: list) -> None:  # type: ignore[type-arg]
    tenant = f"prop-{uuid.uuid4().hex[:12]}"  # hypothesis may run one example twice
    async with backend.open() as store:
        base = DirectoryBatch(
            persons=[person(c, Role.child) for c in CHILDREN] + [person(p) for p in PERSONS],
            relations=[
                Relation(child_id=c, guardian_id=p, parental_responsibility=True)
                for c in CHILDREN
                for p in PERSONS
            ],
        )
        await store.apply_directory(tenant, base, T0)
        # What the model says must hold: protection and flags change only by their calls.
        level = {p: Protection.none for p in PERSONS}
        flags: dict[tuple[str, str, str], bool] = {}
        for i, action in enumerate(steps):
            when = at(i + 1)
            if action[0] in ("batch", "oneroster"):
                batch = DirectoryBatch(persons=action[1])
                if action[0] == "batch":
                    await store.apply_directory(tenant, batch, when)
                else:
                    await apply_oneroster(store, tenant, batch, when)
                for p in action[1]:
                    if RANK[p.protection] > RANK[level[p.id]]:
                        level[p.id] = p.protection
            elif action[0] == "flag":
                (child_id, guardian_id, flag), value = action[1], action[2]
                await store.set_relation_flag(
                    tenant, child_id, guardian_id, flag, value, "reason", "staff", when
                )
                flags[(child_id, guardian_id, flag)] = value
            else:
                _, pid, new_level = action
                await store.set_protection(tenant, pid, new_level, "vedtak", "staff", when)
                level[pid] = new_level
            for pid in PERSONS:
                stored = await store.get_person(tenant, pid)
                assert stored is not None and stored.protection is level[pid], (i, pid)
        snapshot = await store.load_audience(tenant, _everyone())
        for r in snapshot.relations:
            for flag in FLAGS:
                want = flags.get((r.child_id, r.guardian_id, flag), False)
                assert getattr(r.flags, flag) is want


def _everyone() -> Audience:
    return Audience(children=list(CHILDREN))
