"""Routing, language, quiet hours (DST-safe) and the planned deliveries."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.constants import SUPPRESSED_CHANNEL
from gateway.models import (
    Audience,
    Category,
    ChannelName,
    Delivery,
    DeliveryStatus,
    Person,
    Preferences,
    Protection,
    Role,
)
from gateway.planner import (
    Route,
    choose_language,
    defer_until,
    plan_deliveries,
    planned,
    route,
)
from gateway.resolver import resolve
from tests.factories import NOW, TODAY, Directory, message

OSLO = ZoneInfo("Europe/Oslo")
INAPP = Route(ChannelName.inapp, "", None)


def oslo(year: int, month: int, day: int, hour: int, minute: int, fold: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=OSLO, fold=fold)


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def quiet(start: str = "22:00", end: str = "07:00") -> Preferences:
    return Preferences(quiet_start=start, quiet_end=end)


def person(
    email: str | None = "mor@example.no",
    phone: str | None = "+4741234567",
    role: Role = Role.guardian,
    language: str | None = None,
) -> Person:
    return Person(
        id="mor", role=role, given_name="Mor", email=email, phone=phone, language=language
    )


def channels(routes: list[Route]) -> list[str]:
    return [r.channel.value for r in routes]


# ------------------------------------------------------------------ language


def test_language_preference_then_directory_then_bokmal() -> None:
    assert choose_language(person(language="en"), Preferences(language="nn")) == "nn"
    assert choose_language(person(language="en"), Preferences()) == "en"
    assert choose_language(person(language="en"), None) == "en"
    assert choose_language(person(), None) == "nb"
    # Any tag is kept: rendering falls back when it has no template.
    assert choose_language(person(), Preferences(language="se")) == "se"
    assert choose_language(person(), Preferences(language="pt-BR")) == "pt-BR"


# ------------------------------------------------------------------ routing


def test_default_is_push_per_device_and_email_plus_inapp() -> None:
    d = Directory()
    d.guardian("mor")
    d.device("mor", "phone-b", fid=True)
    d.device("mor", "phone-a")
    routes = route(d.persons["mor"], None, d.devices["mor"], Category.general)
    assert routes == [
        INAPP,
        Route(ChannelName.push, "phone-a", "token-phone-a", "token"),
        Route(ChannelName.push, "phone-b", "fid-phone-b", "fid"),
        Route(ChannelName.email, "", "mor@example.no"),
    ]


def test_default_without_device_is_sms_and_email() -> None:
    routes = route(person(), None, [], Category.general)
    assert routes == [
        INAPP,
        Route(ChannelName.sms, "", "+4741234567"),
        Route(ChannelName.email, "", "mor@example.no"),
    ]
    assert channels(route(person(email=None), None, [], Category.reminder)) == ["inapp", "sms"]
    assert channels(route(person(email=None, phone=None), None, [], Category.general)) == ["inapp"]


def test_failing_contact_points_are_skipped() -> None:
    assert channels(route(person(), None, [], Category.general, ["phone"])) == ["inapp", "email"]
    assert channels(route(person(), None, [], Category.general, ["email"])) == ["inapp", "sms"]
    assert channels(route(person(), None, [], Category.emergency, ["phone", "email"])) == ["inapp"]


def test_preference_picks_exactly_its_channels() -> None:
    d = Directory()
    d.guardian("mor")
    d.device("mor", "p1")
    prefs = Preferences(channels={Category.general: [ChannelName.sms]})
    assert channels(route(d.persons["mor"], prefs, d.devices["mor"], Category.general)) == [
        "inapp",
        "sms",
    ]
    # Categories without a preference keep the default.
    assert channels(route(d.persons["mor"], prefs, d.devices["mor"], Category.reminder)) == [
        "inapp",
        "push",
        "email",
    ]


def test_preferred_channel_without_contact_point_is_skipped() -> None:
    prefs = Preferences(channels={Category.general: [ChannelName.push, ChannelName.email]})
    assert channels(route(person(), prefs, [], Category.general)) == ["inapp", "email"]
    # General may be switched off down to the inbox.
    off = Preferences(channels={Category.general: []})
    assert channels(route(person(), off, [], Category.general)) == ["inapp"]
    failing = Preferences(channels={Category.general: [ChannelName.sms]})
    assert channels(route(person(), failing, [], Category.general, ["phone"])) == ["inapp"]


@pytest.mark.parametrize(
    ("category", "default"),
    [
        # absence by default goes by push and SMS (here: no app, so SMS), not email
        (Category.absence, ["inapp", "sms"]),
        (Category.emergency, ["inapp", "sms", "email"]),
    ],
)
def test_absence_and_emergency_cannot_be_switched_off(
    category: Category, default: list[str]
) -> None:
    for wanted in ([], [ChannelName.inapp], [ChannelName.push]):
        prefs = Preferences(channels={category: wanted})
        assert channels(route(person(), prefs, [], category)) == default


def test_absence_may_move_between_channels() -> None:
    prefs = Preferences(channels={Category.absence: [ChannelName.email]})
    assert channels(route(person(), prefs, [], Category.absence)) == ["inapp", "email"]
    # The moved-to channel failing falls back to the default, minus what fails.
    assert channels(route(person(), prefs, [], Category.absence, ["email"])) == ["inapp", "sms"]


def test_emergency_goes_on_every_channel() -> None:
    d = Directory()
    d.guardian("mor")
    d.device("mor", "p1")
    d.device("mor", "p2")
    prefs = Preferences(channels={Category.emergency: [ChannelName.email]})
    assert channels(route(d.persons["mor"], prefs, d.devices["mor"], Category.emergency)) == [
        "inapp",
        "push",
        "push",
        "sms",
        "email",
    ]


def test_staff_default_is_inapp_and_email() -> None:
    staff = person(role=Role.staff)
    assert channels(route(staff, None, [], Category.general)) == ["inapp", "email"]
    assert channels(route(staff, None, [], Category.emergency)) == ["inapp", "sms", "email"]


def test_adult_pupil_is_routed_like_a_guardian() -> None:
    d = Directory()
    pupil = d.child("c1", age=18, email="elev@example.no", phone="+4790000001")
    assert channels(route(pupil, None, [], Category.general)) == ["inapp", "sms", "email"]


# ------------------------------------------------------------------ quiet hours


def test_no_quiet_hours_no_deferral() -> None:
    now = oslo(2026, 11, 27, 23, 0)
    assert defer_until(None, "Europe/Oslo", Category.general, now) is None
    assert defer_until(Preferences(), "Europe/Oslo", Category.general, now) is None
    same = quiet("22:00", "22:00")
    assert defer_until(same, "Europe/Oslo", Category.general, now) is None


def test_quiet_hours_wrapping_midnight() -> None:
    prefs = quiet()
    before_midnight = oslo(2026, 11, 27, 23, 30)
    assert defer_until(prefs, "Europe/Oslo", Category.general, before_midnight) == utc(
        2026, 11, 28, 6, 0
    )
    after_midnight = oslo(2026, 11, 28, 5, 0)
    assert defer_until(prefs, "Europe/Oslo", Category.general, after_midnight) == utc(
        2026, 11, 28, 6, 0
    )
    assert defer_until(prefs, "Europe/Oslo", Category.general, oslo(2026, 11, 28, 7, 0)) is None
    assert defer_until(prefs, "Europe/Oslo", Category.general, oslo(2026, 11, 27, 21, 59)) is None
    # At the start minute, quiet hours have begun.
    assert defer_until(prefs, "Europe/Oslo", Category.general, oslo(2026, 11, 27, 22, 0))


def test_quiet_hours_within_one_day_and_returned_in_utc() -> None:
    prefs = quiet("12:00", "13:00")
    deferred = defer_until(prefs, "Europe/Oslo", Category.reminder, oslo(2026, 6, 1, 12, 15))
    assert deferred == utc(2026, 6, 1, 11, 0)
    assert deferred is not None and deferred.utcoffset() is not None
    assert deferred.tzinfo is UTC
    assert defer_until(prefs, "Europe/Oslo", Category.general, oslo(2026, 6, 1, 11, 59)) is None


def test_quiet_hours_use_the_given_time_zone() -> None:
    prefs = quiet()
    now = utc(2026, 11, 27, 22, 30)  # 23:30 in Oslo, 17:30 in New York
    assert defer_until(prefs, "Europe/Oslo", Category.general, now) == utc(2026, 11, 28, 6, 0)
    assert defer_until(prefs, "America/New_York", Category.general, now) is None


@pytest.mark.parametrize("category", [Category.emergency, Category.absence])
def test_urgent_categories_ignore_quiet_hours(category: Category) -> None:
    assert defer_until(quiet(), "Europe/Oslo", category, oslo(2026, 11, 27, 23, 30)) is None


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        defer_until(quiet(), "Europe/Oslo", Category.general, datetime(2026, 11, 27, 23, 0))


def test_spring_forward_night() -> None:
    # 2026-03-29 02:00 CET jumps to 03:00 CEST: the night is one hour short.
    prefs = quiet()
    now = utc(2026, 3, 28, 22, 0)  # 23:00 CET; callers pass UTC
    assert defer_until(prefs, "Europe/Oslo", Category.general, now) == utc(2026, 3, 29, 5, 0)
    local = oslo(2026, 3, 28, 23, 0)
    assert defer_until(prefs, "Europe/Oslo", Category.general, local) == utc(2026, 3, 29, 5, 0)


def test_fall_back_night() -> None:
    # 2026-10-25 03:00 CEST goes back to 02:00 CET: the night is one hour long.
    prefs = quiet()
    now = utc(2026, 10, 24, 21, 0)  # 23:00 CEST; callers pass UTC
    assert defer_until(prefs, "Europe/Oslo", Category.general, now) == utc(2026, 10, 25, 6, 0)
    local = oslo(2026, 10, 24, 23, 0)
    assert defer_until(prefs, "Europe/Oslo", Category.general, local) == utc(2026, 10, 25, 6, 0)


def test_quiet_end_in_the_skipped_hour_ends_at_the_jump() -> None:
    prefs = quiet("22:00", "02:30")
    now = oslo(2026, 3, 29, 1, 15)  # 00:15 UTC
    # 02:30 never shows on the clock that night; quiet hours end at 03:00 CEST.
    assert defer_until(prefs, "Europe/Oslo", Category.general, now) == utc(2026, 3, 29, 1, 0)
    assert defer_until(prefs, "Europe/Oslo", Category.general, oslo(2026, 3, 29, 3, 5)) is None


def test_quiet_start_in_the_skipped_hour() -> None:
    prefs = quiet("02:30", "06:00")
    now = oslo(2026, 3, 29, 3, 15)  # 01:15 UTC, clock past 02:30
    assert defer_until(prefs, "Europe/Oslo", Category.general, now) == utc(2026, 3, 29, 4, 0)


def test_quiet_end_in_the_repeated_hour_is_the_next_occurrence() -> None:
    prefs = quiet("22:00", "02:30")
    first = oslo(2026, 10, 25, 2, 10, fold=0)  # 00:10 UTC, summer time
    assert defer_until(prefs, "Europe/Oslo", Category.general, first) == utc(2026, 10, 25, 0, 30)
    second = oslo(2026, 10, 25, 2, 10, fold=1)  # 01:10 UTC, winter time
    assert defer_until(prefs, "Europe/Oslo", Category.general, second) == utc(2026, 10, 25, 1, 30)
    for now in (first, second):
        deferred = defer_until(prefs, "Europe/Oslo", Category.general, now)
        assert deferred is not None and deferred > now


# ------------------------------------------------------------------ plan_deliveries


def siblings_directory() -> Directory:
    d = Directory()
    d.unit("u1", "Solberg skole", sender_name="Solberg skole SFO")
    d.child("ola", groups=("5a",), given_name="Ola")
    d.child("kari", groups=("5a",), given_name="Kari")
    d.guardian("mor", given_name="Randi", language="en")
    d.relate("ola", "mor")
    d.relate("kari", "mor")
    d.device("mor", "p1")
    d.guardian("far", given_name="Per", email=None)
    d.relate("ola", "far", pr=False)
    return d


def plan(
    d: Directory,
    audience: Audience,
    category: Category = Category.general,
    sender: str | None = "Kari Lærer",
) -> list[Delivery]:
    snapshot = d.snapshot(audience)
    res = resolve(snapshot, audience, category, TODAY)
    return list(
        plan_deliveries(message(audience, category, sender_name=sender), snapshot, res, NOW)
    )


def test_plan_is_a_generator() -> None:
    d = siblings_directory()
    audience = Audience(groups=["5a"])
    snapshot = d.snapshot(audience)
    res = resolve(snapshot, audience, Category.general, TODAY)
    assert inspect.isgenerator(plan_deliveries(message(audience), snapshot, res, NOW))


def test_plan_one_delivery_per_recipient_and_route() -> None:
    d = siblings_directory()
    deliveries = plan(d, Audience(groups=["5a"]))
    planned = [x for x in deliveries if x.status is DeliveryStatus.planned]
    assert [(x.recipient_id, x.channel, x.target) for x in planned] == [
        ("mor", "inapp", ""),
        ("mor", "push", "p1"),
        ("mor", "email", ""),
    ]
    for x in planned:
        assert x.id == Delivery.make_id("asker", "ev-1", "mor", x.channel, x.target)
        assert x.tenant_id == "asker" and x.message_id == "msg-1"
        assert x.recipient_role is Role.guardian
        assert x.language == "en"
        assert x.child_ids == ["kari", "ola"]
        expected = {
            "children": ["Kari", "Ola"],
            "unit": "Solberg skole",
            "sender": "Kari Lærer",
            "sms_sender": None,
            "category": "general",
            "urgency": "normal",
        }
        if x.channel == "push":
            expected["address_kind"] = "token"
        assert x.context == expected
        assert x.not_before is None
        assert x.created_at == NOW == x.updated_at
    assert [x.address for x in planned] == [None, "token-p1", "mor@example.no"]
    assert len({x.id for x in deliveries}) == len(deliveries)


def test_suppressions_become_suppressed_deliveries() -> None:
    d = siblings_directory()
    deliveries = plan(d, Audience(groups=["5a"]))
    suppressed = [x for x in deliveries if x.status is DeliveryStatus.suppressed]
    assert len(suppressed) == 1
    (far,) = suppressed
    assert far.recipient_id == "far"
    assert far.channel == SUPPRESSED_CHANNEL
    assert far.target == "ola"
    assert far.reason == "no_parental_responsibility"
    assert far.address is None
    assert far.child_ids == ["ola"]
    assert far.context == {}
    assert far.id == Delivery.make_id("asker", "ev-1", "far", SUPPRESSED_CHANNEL, "ola")


def test_send_jobs_carry_their_rank_in_the_message() -> None:
    # The urgent lane orders a message's sends by it (gateway/store/lanes.py): 0, 1, 2, …
    # over the deliveries that have a send job (an in-app delivery or a suppression has none).
    d = siblings_directory()
    audience = Audience(groups=["5a"])
    snapshot = d.snapshot(audience)
    res = resolve(snapshot, audience, Category.emergency, TODAY)
    pairs = list(planned(message(audience, Category.emergency), snapshot, res, NOW))
    jobs = [job for _, job in pairs if job is not None]
    assert len(jobs) >= 2 and len(jobs) < len(pairs)
    assert [job.rank for job in jobs] == list(range(len(jobs)))
    assert all(job.urgent and job.due_at == NOW for job in jobs)


def test_a_deferred_send_has_no_rank() -> None:
    # Due later (quiet hours): only its due time orders it, a rank would make it visible early.
    d = siblings_directory()
    d.preferences["mor"] = quiet("08:00", "12:00")  # NOW is 10:00 in Oslo
    audience = Audience(groups=["5a"])
    snapshot = d.snapshot(audience)
    res = resolve(snapshot, audience, Category.general, TODAY)
    jobs = [job for _, job in planned(message(audience), snapshot, res, NOW) if job is not None]
    assert jobs and all(job.rank is None and job.due_at > NOW for job in jobs)


def test_replanning_gives_the_same_ids() -> None:
    d = siblings_directory()
    first = [x.id for x in plan(d, Audience(groups=["5a"]))]
    assert first == [x.id for x in plan(d, Audience(groups=["5a"]))]


def test_sender_falls_back_to_the_unit() -> None:
    d = siblings_directory()
    (inapp, *_) = plan(d, Audience(groups=["5a"]), sender=None)
    assert inapp.context["sender"] == "Solberg skole SFO"


def test_named_staff_context_uses_their_unit() -> None:
    d = siblings_directory()
    d.staff("rektor")
    deliveries = plan(d, Audience(staff=["rektor"]), sender=None)
    staff_context = {
        "children": [],
        "unit": "Solberg skole",
        "sender": "Solberg skole SFO",
        "sms_sender": None,
        "category": "general",
        "urgency": "normal",
    }
    assert [(x.channel, x.context) for x in deliveries] == [
        ("inapp", staff_context),
        ("email", staff_context),
    ]
    assert all(x.recipient_role is Role.staff for x in deliveries)


def test_quiet_hours_defer_noisy_channels_not_the_inbox() -> None:
    d = siblings_directory()
    d.preferences["mor"] = quiet("08:00", "12:00")  # NOW is 10:00 in Oslo
    deliveries = plan(d, Audience(groups=["5a"]))
    by_channel = {x.channel: x.not_before for x in deliveries if x.recipient_id == "mor"}
    assert by_channel == {
        "inapp": None,
        "push": utc(2026, 11, 27, 11, 0),
        "email": utc(2026, 11, 27, 11, 0),
    }
    emergency = plan(d, Audience(groups=["5a"]), Category.emergency)
    assert all(x.not_before is None for x in emergency)


def test_context_never_names_a_protected_co_guardian_or_another_family() -> None:
    d = Directory()
    d.unit("u1", "Solberg skole")
    d.child("c1", groups=("5a",), given_name="Ola", protection=Protection.strictly_confidential)
    d.guardian("skjult", given_name="Hemmelig", protection=Protection.strictly_confidential)
    d.guardian("med", given_name="Synlig")
    d.relate("c1", "skjult")
    d.relate("c1", "med")
    d.child("c2", groups=("5a",), given_name="Nabo")
    d.guardian("nabo-mor", given_name="Naboen")
    d.relate("c2", "nabo-mor")
    deliveries = plan(d, Audience(groups=["5a"]))
    assert {x.recipient_id for x in deliveries} == {"skjult", "med", "nabo-mor"}
    secret = {"Hemmelig", "skjult@example.no", d.persons["skjult"].phone}
    for x in deliveries:
        shown = repr(x.context)
        if x.recipient_id != "skjult":
            assert not any(s and s in shown for s in secret)
            assert x.address not in secret
        if x.recipient_id == "nabo-mor":
            assert x.context["children"] == ["Nabo"]
        else:
            assert x.context["children"] == ["Ola"]
        assert "Synlig" not in shown and "Naboen" not in shown


def test_failing_and_preferences_from_the_snapshot_are_used() -> None:
    d = siblings_directory()
    d.devices.clear()
    d.failing["mor"] = ["phone"]
    d.preferences["mor"] = Preferences(language="nn")
    deliveries = [x for x in plan(d, Audience(groups=["5a"])) if x.recipient_id == "mor"]
    assert [(x.channel, x.language) for x in deliveries] == [("inapp", "nn"), ("email", "nn")]


def test_plan_streams_a_large_broadcast_fast() -> None:
    d = Directory()
    d.unit("u1", "Asker kommune")
    n = 20_000
    for i in range(n):
        child, guardian = f"c{i}", f"g{i}"
        d.child(child, groups=(f"k{i % 500}",))
        d.guardian(guardian)
        d.relate(child, guardian)
        if i % 2:
            d.device(guardian, f"d{i}")
    audience = Audience(units=["u1"])
    snapshot = d.snapshot(audience)
    res = resolve(snapshot, audience, Category.emergency, TODAY)
    planned = plan_deliveries(message(audience, Category.emergency), snapshot, res, NOW)
    assert next(planned).recipient_id == "g0"
    count = 1 + sum(1 for _ in planned)
    assert len(res.recipients) == n
    # inapp + sms + email for everyone, plus push for every other guardian
    assert count == n * 3 + n // 2
    # Speed is measured by `make bench`, not asserted here: a quadratic step would
    # still show up as this test taking minutes instead of about half a second.


def test_planned_deliveries_and_jobs_are_what_model_construct_makes() -> None:
    # The planner builds them from dicts that spell out every field (trusted.assembler):
    # none may be missing, extra, or out of the model's order.
    d = siblings_directory()
    audience = Audience(groups=["5a"])
    snapshot = d.snapshot(audience)
    res = resolve(snapshot, audience, Category.emergency, TODAY)
    pairs = list(planned(message(audience, Category.emergency), snapshot, res, NOW))
    jobs = [job for _, job in pairs if job is not None]
    assert jobs and any(x.status is DeliveryStatus.suppressed for x, _ in pairs)
    for built in [x for x, _ in pairs] + jobs:
        expected = type(built).model_construct(**vars(built))
        assert list(vars(built)) == list(type(built).model_fields)
        assert built == expected
        assert built.model_fields_set == expected.model_fields_set
