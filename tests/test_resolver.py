"""The resolution rules of DESIGN.md, one test (or more) per rule, plus properties."""

from __future__ import annotations

import random
from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.models import Audience, Category, Protection, Role
from gateway.resolver import (
    Recipient,
    Resolution,
    Suppression,
    age_on,
    is_adult,
    resolve,
)
from tests.factories import TODAY, Directory

CLASS = Audience(groups=["5a"])


def run(
    d: Directory,
    audience: Audience = CLASS,
    category: Category = Category.general,
    on: date = TODAY,
) -> Resolution:
    return resolve(d.snapshot(audience), audience, category, on)


def recipients(res: Resolution) -> dict[str, Recipient]:
    return {r.person_id: r for r in res.recipients}


def reasons(res: Resolution) -> dict[tuple[str, str | None], str]:
    return {(s.person_id, s.child_id): s.reason for s in res.suppressed}


def family(d: Directory, child: str = "c1", group: str = "5a", **child_kw: object) -> None:
    """A child in ``group`` with two guardians holding parental responsibility."""
    d.child(child, groups=(group,), **child_kw)  # type: ignore[arg-type]
    for g in (f"{child}-mor", f"{child}-far"):
        if g not in d.persons:
            d.guardian(g)
        d.relate(child, g)


# ------------------------------------------------------------------ rule 1


def test_guardians_with_parental_responsibility_are_told_not_the_minor_child() -> None:
    d = Directory()
    family(d)
    res = run(d)
    assert res.recipients == [
        Recipient("c1-far", Role.guardian, ("c1",), "parental_responsibility"),
        Recipient("c1-mor", Role.guardian, ("c1",), "parental_responsibility"),
    ]
    assert res.suppressed == []


def test_children_outside_the_audience_are_ignored() -> None:
    d = Directory()
    family(d, "c1", "5a")
    family(d, "c2", "6b")
    res = run(d)
    assert set(recipients(res)) == {"c1-mor", "c1-far"}


# ------------------------------------------------------------------ rule 2


def test_parent_without_parental_responsibility_is_suppressed() -> None:
    d = Directory()
    family(d)
    d.guardian("far2")
    d.relate("c1", "far2", pr=False)
    res = run(d)
    assert "far2" not in recipients(res)
    assert res.suppressed == [
        Suppression("far2", Role.guardian, "c1", "no_parental_responsibility")
    ]


def test_information_granted_is_told_and_revocation_stops_it() -> None:
    d = Directory()
    family(d)
    d.guardian("far2")
    d.relate("c1", "far2", pr=False, granted=True)
    res = run(d)
    assert recipients(res)["far2"] == Recipient(
        "far2", Role.guardian, ("c1",), "information_granted"
    )

    d.relations[-1] = d.relations[-1].model_copy(
        update={
            "flags": d.relations[-1].flags.model_copy(
                update={"information_granted": False, "information_reason": "revoked by rektor"}
            )
        }
    )
    res = run(d)
    assert "far2" not in recipients(res)
    assert reasons(res)[("far2", "c1")] == "information_revoked"


def test_information_granted_is_not_confidential() -> None:
    d = Directory()
    family(d)
    d.guardian("far2")
    d.relate("c1", "far2", pr=False, granted=True)
    res = run(d, category=Category.confidential)
    assert recipients(res) == {}
    assert reasons(res)[("far2", "c1")] == "confidential_not_named"


# ------------------------------------------------------------------ rule 3


def test_blocked_parent_is_suppressed_even_with_parental_responsibility() -> None:
    d = Directory()
    family(d)
    d.guardian("voldelig")
    d.relate("c1", "voldelig", pr=True, daily_care=True, granted=True, blocked=True)
    res = run(d)
    assert "voldelig" not in recipients(res)
    assert reasons(res) == {("voldelig", "c1"): "blocked"}


def test_blocked_parent_named_directly_is_still_suppressed_for_that_child() -> None:
    d = Directory()
    family(d)
    d.guardian("voldelig")
    d.relate("c1", "voldelig", blocked=True)
    audience = Audience(groups=["5a"], guardians=["voldelig"])
    for category in Category:
        if category is Category.absence:
            continue
        res = run(d, audience, category)
        assert "voldelig" not in recipients(res)
        assert reasons(res)[("voldelig", "c1")] == "blocked"


def test_naming_a_guardian_never_overrides_a_block_on_a_child_of_the_audience() -> None:
    # Blocked for c1, an ordinary parent of c2: a confidential message about c1 that
    # also names the guardian must not reach them (it is about the blocked child).
    d = Directory()
    family(d, "c1", "5a")
    family(d, "c2", "5b")
    d.guardian("voldelig")
    d.relate("c1", "voldelig", blocked=True)
    d.relate("c2", "voldelig")
    for category in (Category.confidential, Category.general):
        res = run(d, Audience(children=["c1"], guardians=["voldelig"]), category)
        assert "voldelig" not in recipients(res)
        assert reasons(res)[("voldelig", "c1")] == "blocked"


def test_naming_a_guardian_never_overrides_revoked_information_or_missing_consent() -> None:
    d = Directory()
    family(d, "c1", "5a")
    d.guardian("far")
    d.relate("c1", "far", pr=False, information_reason="revoked 2026-11-01")
    family(d, "c2", "5b")
    d.relate("c2", "far")
    res = run(d, Audience(children=["c1"], guardians=["far"]), Category.confidential)
    assert "far" not in recipients(res)
    assert reasons(res)[("far", "c1")] == "information_revoked"


def test_named_guardian_whose_every_relation_is_blocked_is_suppressed() -> None:
    d = Directory()
    family(d, "c1", "5a")
    d.guardian("voldelig")
    d.relate("c1", "voldelig", blocked=True)
    # Named in a message that is not about the child at all.
    res = run(d, Audience(guardians=["voldelig"]))
    assert res.recipients == []
    assert res.suppressed == [Suppression("voldelig", Role.guardian, None, "blocked")]


def test_pr_for_one_child_blocked_for_the_other() -> None:
    d = Directory()
    d.child("a", groups=("5a",))
    d.child("b", groups=("5a",))
    d.guardian("g")
    d.relate("a", "g")
    d.relate("b", "g", blocked=True)
    res = run(d)
    assert res.recipients == [Recipient("g", Role.guardian, ("a",), "parental_responsibility")]
    assert res.suppressed == [Suppression("g", Role.guardian, "b", "blocked")]


def test_duplicate_relation_rows_cannot_unblock() -> None:
    d = Directory()
    d.child("a", groups=("5a",))
    d.guardian("g")
    d.relate("a", "g", blocked=True)
    d.relate("a", "g")
    assert run(d).recipients == []
    d.relations.reverse()
    assert run(d).recipients == []
    assert reasons(run(d)) == {("g", "a"): "blocked"}


# ------------------------------------------------------------------ rule 4


def test_protected_guardian_in_a_class_message_is_told_without_leaking() -> None:
    d = Directory()
    d.child("c1", groups=("5a",), protection=Protection.strictly_confidential)
    d.guardian("skjult", protection=Protection.strictly_confidential)
    d.guardian("med")
    d.relate("c1", "skjult")
    d.relate("c1", "med")
    family(d, "c2", "5a")
    res = run(d)
    by_id = recipients(res)
    assert by_id["skjult"].child_ids == ("c1",)
    assert by_id["med"].child_ids == ("c1",)
    # Each recipient names only its own children, so no one sees the other family.
    assert by_id["c2-mor"].child_ids == ("c2",)
    for r in res.recipients:
        assert set(r.child_ids) <= {x.child_id for x in d.relations if x.guardian_id == r.person_id}


# ------------------------------------------------------------------ rule 6


def test_eighteen_year_old_without_consent_is_told_instead_of_guardians() -> None:
    d = Directory()
    family(d, "c1", "vg3", age=18, email="elev@example.no")
    res = run(d, Audience(groups=["vg3"]))
    assert res.recipients == [Recipient("c1", Role.child, ("c1",), "self")]
    assert reasons(res) == {
        ("c1-far", "c1"): "adult_no_consent",
        ("c1-mor", "c1"): "adult_no_consent",
    }


def test_eighteen_year_old_with_consent_guardians_told_too() -> None:
    d = Directory()
    family(d, "c1", "vg3", age=18, consent_guardians=True)
    d.guardian("far2")
    d.relate("c1", "far2", pr=False)
    res = run(d, Audience(groups=["vg3"]))
    assert res.recipients == [
        Recipient("c1", Role.child, ("c1",), "self"),
        Recipient("c1-far", Role.guardian, ("c1",), "consent"),
        Recipient("c1-mor", Role.guardian, ("c1",), "consent"),
    ]
    # Consent does not widen the circle to a parent who had no rights.
    assert reasons(res) == {("far2", "c1"): "no_parental_responsibility"}


def test_the_day_before_the_eighteenth_birthday_guardians_are_told() -> None:
    d = Directory()
    birthday = date(2008, 11, 28)
    family(d, "c1", "vg3", birth_date=birthday)
    before = run(d, Audience(groups=["vg3"]), on=date(2026, 11, 27))
    assert {r.person_id for r in before.recipients} == {"c1-mor", "c1-far"}
    on_day = run(d, Audience(groups=["vg3"]), on=date(2026, 11, 28))
    assert [r.person_id for r in on_day.recipients] == ["c1"]


def test_leap_day_birthday_becomes_adult_on_first_of_march() -> None:
    leapling = date(2008, 2, 29)
    assert age_on(leapling, date(2026, 2, 28)) == 17
    assert age_on(leapling, date(2026, 3, 1)) == 18
    assert age_on(leapling, date(2028, 2, 28)) == 19
    assert age_on(leapling, date(2028, 2, 29)) == 20
    d = Directory()
    family(d, "c1", "vg3", birth_date=leapling)
    assert [
        r.person_id for r in run(d, Audience(groups=["vg3"]), on=date(2026, 2, 28)).recipients
    ] == ["c1-far", "c1-mor"]
    assert [
        r.person_id for r in run(d, Audience(groups=["vg3"]), on=date(2026, 3, 1)).recipients
    ] == ["c1"]


def test_adult_learner_is_told_and_never_guardians() -> None:
    d = Directory()
    d.unit("voks", "Asker voksenopplæring")
    d.child(
        "l1", groups=("norsk1",), unit_id="voks", role=Role.learner, age=17, consent_guardians=True
    )
    d.guardian("g")
    d.relate("l1", "g")
    res = run(d, Audience(units=["voks"]))
    assert is_adult(d.persons["l1"], TODAY)
    assert res.recipients == [Recipient("l1", Role.learner, ("l1",), "self")]
    assert res.suppressed == [Suppression("g", Role.guardian, "l1", "adult_learner")]


def test_a_named_minor_is_not_a_recipient() -> None:
    d = Directory()
    family(d)
    res = run(d, Audience(guardians=["c1"]))
    assert res.recipients == []
    assert res.suppressed == [Suppression("c1", Role.child, None, "minor_not_recipient")]


# ------------------------------------------------------------------ rule 7


def test_confidential_broadcast_reaches_no_guardian() -> None:
    d = Directory()
    family(d)
    d.guardian("fosterfar")
    d.relate("c1", "fosterfar", pr=False, daily_care=True)
    res = run(d, Audience(groups=["5a"], children=["c1"]), Category.confidential)
    assert res.recipients == []
    assert reasons(res) == {
        ("c1-far", "c1"): "confidential_not_named",
        ("c1-mor", "c1"): "confidential_not_named",
        ("fosterfar", "c1"): "daily_care_confidential",
    }


def test_confidential_to_a_named_guardian_only() -> None:
    d = Directory()
    family(d)
    d.staff("helsesykepleier")
    audience = Audience(children=["c1"], guardians=["c1-mor"], staff=["helsesykepleier"])
    res = run(d, audience, Category.confidential)
    assert res.recipients == [
        Recipient("c1-mor", Role.guardian, ("c1",), "named"),
        Recipient("helsesykepleier", Role.staff, (), "named"),
    ]
    assert reasons(res) == {("c1-far", "c1"): "confidential_not_named"}


def test_confidential_to_adult_pupil_only_when_addressed_by_id() -> None:
    d = Directory()
    family(d, "c1", "vg3", age=19, consent_guardians=True)
    via_class = run(d, Audience(groups=["vg3"]), Category.confidential)
    assert via_class.recipients == []
    assert reasons(via_class)[("c1", "c1")] == "confidential_not_named"
    direct = run(d, Audience(children=["c1"]), Category.confidential)
    assert direct.recipients == [Recipient("c1", Role.child, ("c1",), "self")]
    assert reasons(direct)[("c1-mor", "c1")] == "confidential_not_named"


# ------------------------------------------------------------------ rule 8


def test_daily_care_gets_everyday_categories_only() -> None:
    d = Directory()
    d.child("c1", groups=("5a",))
    d.guardian("fostermor")
    d.relate("c1", "fostermor", pr=False, daily_care=True)
    for category in (Category.general, Category.reminder, Category.absence, Category.emergency):
        res = run(d, category=category)
        assert res.recipients == [Recipient("fostermor", Role.guardian, ("c1",), "daily_care")]
    res = run(d, category=Category.confidential)
    assert res.recipients == []
    assert reasons(res) == {("fostermor", "c1"): "daily_care_confidential"}
    named = run(d, Audience(children=["c1"], guardians=["fostermor"]), Category.confidential)
    assert named.recipients == [Recipient("fostermor", Role.guardian, ("c1",), "named")]


def test_strongest_basis_is_reported_when_several_apply() -> None:
    d = Directory()
    d.child("a", groups=("5a",))
    d.child("b", groups=("5a",))
    d.guardian("g")
    d.relate("a", "g", pr=False, daily_care=True)
    d.relate("b", "g")
    assert run(d).recipients == [
        Recipient("g", Role.guardian, ("a", "b"), "parental_responsibility")
    ]


# ------------------------------------------------------------------ rule 9


def test_siblings_in_one_class_give_one_recipient_naming_both() -> None:
    d = Directory()
    d.child("ola", groups=("5a",))
    d.child("kari", groups=("5a",))
    d.guardian("mor")
    d.relate("ola", "mor")
    d.relate("kari", "mor")
    res = run(d)
    assert res.recipients == [
        Recipient("mor", Role.guardian, ("kari", "ola"), "parental_responsibility")
    ]


def test_guardian_of_children_in_two_classes_of_the_audience() -> None:
    d = Directory()
    d.child("ola", groups=("5a",))
    d.child("kari", groups=("7c",))
    d.guardian("mor")
    d.relate("ola", "mor")
    d.relate("kari", "mor")
    both = run(d, Audience(groups=["5a", "7c"]))
    assert both.recipients == [
        Recipient("mor", Role.guardian, ("kari", "ola"), "parental_responsibility")
    ]
    only_5a = run(d, Audience(groups=["5a"]))
    assert only_5a.recipients[0].child_ids == ("ola",)


# ------------------------------------------------------------------ named persons


def test_named_and_broadcast_reached_appears_once_as_named() -> None:
    d = Directory()
    family(d)
    res = run(d, Audience(groups=["5a"], guardians=["c1-mor"]))
    assert [r.person_id for r in res.recipients] == ["c1-far", "c1-mor"]
    assert recipients(res)["c1-mor"] == Recipient("c1-mor", Role.guardian, ("c1",), "named")


def test_named_guardian_without_rights_gets_no_child_names() -> None:
    d = Directory()
    family(d)
    d.guardian("far2")
    d.relate("c1", "far2", pr=False)
    res = run(d, Audience(children=["c1"], guardians=["far2"]))
    assert recipients(res)["far2"] == Recipient("far2", Role.guardian, (), "named")
    assert reasons(res)[("far2", "c1")] == "no_parental_responsibility"


def test_named_guardian_about_no_child_and_unknown_ids() -> None:
    d = Directory()
    family(d)
    d.staff("rektor")
    res = run(d, Audience(guardians=["c1-mor", "ghost"], staff=["rektor", "ghost-staff"]))
    assert res.recipients == [
        Recipient("c1-mor", Role.guardian, (), "named"),
        Recipient("rektor", Role.staff, (), "named"),
    ]
    assert res.suppressed == [
        Suppression("ghost", Role.guardian, None, "unknown_person"),
        Suppression("ghost-staff", Role.staff, None, "unknown_person"),
    ]


def test_relation_to_a_person_missing_from_the_snapshot_is_suppressed() -> None:
    d = Directory()
    family(d)
    d.relate("c1", "not-loaded")
    res = run(d)
    assert reasons(res)[("not-loaded", "c1")] == "unknown_person"


# ------------------------------------------------------------------ determinism


def test_output_is_deterministic_whatever_the_input_order() -> None:
    d = Directory()
    for i in range(30):
        family(d, f"c{i:02d}", "5a" if i % 2 else "6b")
        d.guardian(f"x{i}")
        d.relate(f"c{i:02d}", f"x{i}", pr=False, blocked=i % 3 == 0, granted=i % 3 == 1)
    audience = Audience(groups=["5a", "6b"], guardians=["x4", "c03-mor"])
    first = run(d, audience)
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(d.relations)
        snapshot = d.snapshot(audience)
        snapshot.audience_children.reverse()
        snapshot.persons = dict(rng.sample(list(snapshot.persons.items()), len(snapshot.persons)))
        again = resolve(snapshot, audience, Category.general, TODAY)
        assert again == first
    ids = [r.person_id for r in first.recipients]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    keys = [(s.person_id, s.child_id or "") for s in first.suppressed]
    assert keys == sorted(keys)


# ------------------------------------------------------------------ properties

_relation = st.fixed_dictionaries(
    {
        "pr": st.booleans(),
        "daily_care": st.booleans(),
        "blocked": st.booleans(),
        "granted": st.booleans(),
        "revoked": st.booleans(),
    }
)


@st.composite
def _directories(draw: st.DrawFn) -> tuple[Directory, Audience, Category, date]:
    d = Directory()
    on = TODAY
    n_children = draw(st.integers(1, 6))
    n_guardians = draw(st.integers(1, 6))
    for c in range(n_children):
        age_days = draw(st.integers(5 * 365, 20 * 365))
        d.child(
            f"c{c}",
            groups=(draw(st.sampled_from(["5a", "6b"])),),
            birth_date=on - timedelta(days=age_days),
            role=draw(st.sampled_from([Role.child, Role.child, Role.learner])),
            consent_guardians=draw(st.booleans()),
        )
    for g in range(n_guardians):
        d.guardian(f"g{g}")
    pairs = draw(
        st.sets(st.tuples(st.integers(0, n_children - 1), st.integers(0, n_guardians - 1)))
    )
    for c, g in sorted(pairs):
        flags = draw(_relation)
        d.relate(
            f"c{c}",
            f"g{g}",
            pr=flags["pr"],
            daily_care=flags["daily_care"],
            blocked=flags["blocked"],
            granted=flags["granted"],
            information_reason="revoked" if flags["revoked"] and not flags["granted"] else None,
        )
    groups = draw(st.lists(st.sampled_from(["5a", "6b"]), min_size=1, unique=True))
    named = draw(st.lists(st.sampled_from([f"g{g}" for g in range(n_guardians)]), unique=True))
    category = draw(st.sampled_from(list(Category)))
    return d, Audience(groups=groups, guardians=named), category, on


@settings(max_examples=300, deadline=None)
@given(_directories())
def test_properties_of_every_resolution(case: tuple[Directory, Audience, Category, date]) -> None:
    d, audience, category, on = case
    snapshot = d.snapshot(audience)
    res = resolve(snapshot, audience, category, on)
    told = recipients(res)
    suppressed = {(s.person_id, s.child_id) for s in res.suppressed}
    in_audience = set(snapshot.audience_children)
    own = {(r.guardian_id, r.child_id) for r in d.relations}

    # One recipient per person, sorted.
    assert [r.person_id for r in res.recipients] == sorted(told)
    for r in res.recipients:
        for c in r.child_ids:
            # Only their own children (or themself), and only children of the audience.
            assert (r.person_id, c) in own or r.person_id == c
            assert c in in_audience
        # Nobody under 18 is told.
        person = snapshot.persons[r.person_id]
        if person.role is Role.child:
            assert is_adult(person, on)
    for relation in d.relations:
        key = (relation.guardian_id, relation.child_id)
        if relation.child_id not in in_audience:
            continue
        # Every related person appears, as a recipient naming the child or a suppression.
        named_child = (
            relation.child_id
            in told.get(relation.guardian_id, Recipient("", Role.guardian, (), "")).child_ids
        )
        assert named_child != (key in suppressed)
        # A blocked relation never yields a recipient for that child.
        if relation.flags.blocked:
            assert not named_child
            assert reasons(res)[key] == "blocked"
        # Confidential content never reaches a guardian through the broadcast alone.
        if category is Category.confidential and named_child:
            assert relation.guardian_id in audience.guardians
    # Deterministic.
    assert resolve(snapshot, audience, category, on) == res
