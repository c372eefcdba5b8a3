"""OneRoster CSV import: the mapping, its errors, the CLI and the API, into a real SQLite store.

The shared samples (../shared/samples/oneroster) are real exports found in the wild;
the fixtures in tests/fixtures/oneroster are small Norwegian ones of our own.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.auth import create_tenant
from gateway.cli import main
from gateway.clock import ManualClock
from gateway.errors import PayloadTooLarge, ValidationFailed
from gateway.models import (
    Audience,
    DirectoryBatch,
    DirectorySnapshot,
    Protection,
    Role,
    UnitKind,
)
from gateway.oneroster import (
    ImportOptions,
    apply_oneroster,
    describe,
    load_oneroster,
    load_oneroster_zip,
    read_oneroster,
    read_oneroster_zip,
    unit_kind,
)
from gateway.settings import ArchiveSettings, Settings
from gateway.store import Store
from gateway.store.sqlite import SqliteStore
from tests.conftest import TenantCreds

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "oneroster"
NORDBY = FIXTURES / "nordby"
NORDBY_V1P2 = FIXTURES / "nordby-v1p2"
SAMPLES = ROOT.parent / "shared" / "samples" / "oneroster"
TODAY = date(2026, 11, 27)
# What the shared samples need: US numbers (some invalid even there), no birth dates.
SAMPLE_OPTIONS = ImportOptions(
    phone_region="US", assume_minor=True, skip_invalid_contacts=True, today=TODAY
)
SAMPLE_FLAGS = ["--phone-region", "US", "--assume-minor", "--skip-invalid-contacts"]

needs_samples = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"shared OneRoster samples not found at {SAMPLES}"
)


def sample(version: str) -> Path:
    return SAMPLES / f"{version}-full"


def overlay(tmp_path: Path, error: str) -> Path:
    """The nordby export with the files of fixtures/oneroster/errors/<error> put over it."""
    target = tmp_path / error
    shutil.copytree(NORDBY, target)
    for changed in (FIXTURES / "errors" / error).iterdir():
        shutil.copy(changed, target / changed.name)
    return target


def edited(tmp_path: Path, name: str, old: str, new: str, source: Path = NORDBY) -> Path:
    """A copy of ``source`` with ``old`` replaced by ``new`` in one file."""
    target = tmp_path / "edited"
    shutil.copytree(source, target)
    text = (target / name).read_text(encoding="utf-8-sig")
    assert old in text, f"{old!r} not in {name}"
    (target / name).write_text(text.replace(old, new), encoding="utf-8")
    return target


def zipped(folder: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, prefix + path.name)
    return buffer.getvalue()


def errors_of(exc: pytest.ExceptionInfo[ValidationFailed]) -> list[tuple[Any, ...]]:
    return [(*error["loc"], error["message"]) for error in exc.value.errors]


def read(folder: Path, **options: Any) -> DirectoryBatch:
    return read_oneroster(folder, ImportOptions(today=TODAY, **options))


async def snapshot(store: Store, tenant_id: str, batch: DirectoryBatch) -> DirectorySnapshot:
    """Every person of ``batch`` as stored, with the relations of its children."""
    return await store.load_audience(
        tenant_id,
        Audience(
            children=[p.id for p in batch.persons if p.role in (Role.child, Role.learner)],
            staff=[p.id for p in batch.persons],
        ),
    )


# --------------------------------------------------------------------------- mapping


def test_nordby_v1p1_maps_units_groups_persons_and_relations() -> None:
    result = load_oneroster(NORDBY, ImportOptions(today=TODAY))
    batch = result.batch
    assert result.version == "1.1"
    # The district is no unit; the deleted school is skipped; kinds from clear names.
    assert {u.id: u.kind for u in batch.units} == {
        "org-nordby": UnitKind.school,
        "org-nordby-sfo": UnitKind.sfo,
        "org-tunet": UnitKind.kindergarten,
        "org-vo": UnitKind.adult_education,
    }
    assert all(u.time_zone == "Europe/Oslo" for u in batch.units)
    assert {(g.id, g.unit_id, g.kind.value, g.name) for g in batch.groups} == {
        ("cls-5a", "org-nordby", "class", "5A"),
        ("cls-5b", "org-nordby", "class", "5B"),  # blank status = active
        ("cls-norsk", "org-vo", "class", "Norsk for voksne"),
    }
    persons = {p.id: p for p in batch.persons}
    assert set(persons) == {
        "usr-kari",
        "usr-jonas",
        "usr-ola",
        "usr-kristin",
        "usr-berit",
        "usr-lise",
        "usr-amir",
    }  # usr-gone is tobedeleted, usr-vikar has an extension role
    kari, ola, lise, amir = (persons[k] for k in ("usr-kari", "usr-ola", "usr-lise", "usr-amir"))
    assert (kari.role, kari.birth_date, kari.group_ids) == (
        Role.child,
        date(2015, 3, 1),
        ["cls-5a"],  # not the deleted 4C
    )
    assert persons["usr-jonas"].unit_ids == ["org-nordby", "org-nordby-sfo"]
    assert (ola.role, ola.phone, ola.email) == (Role.guardian, "+4790012345", "ola@example.no")
    assert ola.birth_date is None  # demographics has it, but a guardian's is not needed
    assert persons["usr-kristin"].phone == "+4791234567"  # sms before phone
    assert (lise.role, lise.unit_ids, lise.group_ids) == (Role.staff, ["org-nordby"], ["cls-5a"])
    # A student whose only unit is adult education is a learner.
    assert (amir.role, amir.birth_date, amir.phone) == (
        Role.learner,
        date(1990, 5, 5),
        "+4741234567",
    )
    relations = {(r.child_id, r.guardian_id): r.parental_responsibility for r in batch.relations}
    assert relations == {
        ("usr-kari", "usr-ola"): True,  # parent
        ("usr-kari", "usr-kristin"): True,  # guardian
        ("usr-kari", "usr-berit"): False,  # relativeOf
        ("usr-jonas", "usr-ola"): True,  # linked from both sides, once
    }
    assert result.skipped == {
        "agents_ignored": 1,
        "enrollments_of_deleted": 2,
        "ext_roles": 1,
        "orgs_not_units": 1,
        "tobedeleted": 3,
    }
    assert result.warnings == [
        "users.csv row 10 field role: an extension role is not mapped; user left out",
        "users.csv row 7 field agentSourcedIds: ignored on a user who is neither a student"
        " nor a parent/guardian/relativeOf",
    ]


def test_v1p2_takes_the_primary_role_from_roles_csv() -> None:
    result = load_oneroster(NORDBY_V1P2, ImportOptions(today=TODAY))
    persons = {p.id: p for p in result.batch.persons}
    assert result.version == "1.2"
    # Lise is a teacher (primary) and a parent (secondary): one person, staff.
    assert persons["usr-lise"].role is Role.staff
    assert persons["usr-lise"].group_ids == ["cls-5a"]
    # Per has only a secondary role, at the district: staff, in no unit.
    assert (persons["usr-per"].role, persons["usr-per"].unit_ids) == (Role.staff, [])
    assert persons["usr-ola"].unit_ids == ["org-nordby"]  # from roles.csv
    assert persons["usr-kari"].given_name == "Kari"  # the BOM did not eat the first column
    assert [(r.child_id, r.guardian_id) for r in result.batch.relations] == [
        ("usr-kari", "usr-ola")
    ]
    # Kari's link to the teacher is no relation; manifest file.userProfiles blank = absent.
    assert result.warnings == [
        "users.csv row 2 field agentSourcedIds: ignored: a link joins a student and a"
        " parent/guardian/relativeOf (primary role)"
    ]


def test_bad_phone_names_file_row_and_field_but_never_the_value(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as exc:
        read(overlay(tmp_path, "bad-phone"))
    assert exc.value.errors == [
        {
            "loc": ["users.csv", 7, "phone"],
            "message": "not a valid phone number",
            "type": "value_error",
        }
    ]
    assert "12345" not in str(exc.value.to_json())
    assert describe(exc.value.errors[0]) == "users.csv row 7 field phone: not a valid phone number"


def test_bad_phone_can_be_left_out_with_a_warning(tmp_path: Path) -> None:
    result = load_oneroster(
        overlay(tmp_path, "bad-phone"), ImportOptions(today=TODAY, skip_invalid_contacts=True)
    )
    lise = next(p for p in result.batch.persons if p.id == "usr-lise")
    assert lise.phone is None
    assert result.skipped["invalid_contacts"] == 1
    assert "users.csv row 7 field phone: not a valid phone number; left out" in result.warnings


def test_unknown_class_in_enrollments(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as exc:
        read(overlay(tmp_path, "unknown-class"))
    assert errors_of(exc) == [
        ("enrollments.csv", 3, "classSourcedId", "refers to an unknown class")
    ]


def test_missing_required_column(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as exc:
        read(overlay(tmp_path, "missing-column"))
    assert exc.value.errors == [
        {
            "loc": ["classes.csv", 1, "schoolSourcedId"],
            "message": "missing required column",
            "type": "missing",
        }
    ]


def test_student_without_birth_date_is_an_error_unless_assume_minor(tmp_path: Path) -> None:
    folder = edited(
        tmp_path,
        "demographics.csv",
        "usr-jonas,active,2026-08-01T00:00:00Z,2018-08-20",
        "usr-jonas,active,,",
    )
    with pytest.raises(ValidationFailed) as exc:
        read(folder)
    [(file, row, column, message)] = errors_of(exc)
    assert (file, row, column) == ("users.csv", 3, "birthDate")
    assert "birth date" in message and "--assume-minor" in message

    result = load_oneroster(folder, ImportOptions(today=TODAY, assume_minor=True))
    jonas = next(p for p in result.batch.persons if p.id == "usr-jonas")
    assert jonas.birth_date == date(2016, 1, 1)  # ten years before the import year: a minor
    assert any("1 student(s) without a birth date got a placeholder" in w for w in result.warnings)


def test_a_birth_date_that_is_no_date_is_one_problem_on_its_own_field(tmp_path: Path) -> None:
    folder = edited(
        tmp_path,
        "demographics.csv",
        "usr-jonas,active,2026-08-01T00:00:00Z,2018-08-20",
        "usr-jonas,active,2026-08-01T00:00:00Z,20.08.2018",
    )
    with pytest.raises(ValidationFailed) as exc:
        read(folder)
    # not also "birth_date is required" against users.csv's sourcedId
    assert errors_of(exc) == [("demographics.csv", 3, "birthDate", "not a date (YYYY-MM-DD)")]


def test_a_birth_date_in_the_future_or_before_1900_is_an_error(tmp_path: Path) -> None:
    folder = edited(
        tmp_path,
        "demographics.csv",
        "usr-jonas,active,2026-08-01T00:00:00Z,2018-08-20",
        "usr-jonas,active,2026-08-01T00:00:00Z,2108-08-20",
    )
    with pytest.raises(ValidationFailed) as exc:
        read(folder)
    assert errors_of(exc) == [
        ("demographics.csv", 3, "birthDate", "the birth date is in the future")
    ]


def test_a_row_with_more_fields_than_the_header_is_refused_not_shifted(tmp_path: Path) -> None:
    """An unquoted list in a cell adds fields: read as it was, the rest of the row would
    land in the wrong columns (or be dropped) without a word."""
    text = (NORDBY / "users.csv").read_text(encoding="utf-8-sig")
    header, first, *rest = text.splitlines()
    fields = first.split(",")
    wider = ",".join([*fields, "cls-5a", "cls-5b"])
    folder = tmp_path / "wide"
    shutil.copytree(NORDBY, folder)
    (folder / "users.csv").write_text("\n".join([header, wider, *rest]) + "\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as exc:
        read(folder)
    columns = len(header.split(","))
    assert (
        "users.csv",
        2,
        f"{columns + 2} fields but the header has {columns} columns"
        " (a value with a comma in it must be in double quotes)",
    ) in errors_of(exc)
    # a trailing comma (an empty field past the last column) is fine
    (folder / "users.csv").write_text(
        "\n".join([header, first + ",", *rest]) + "\n", encoding="utf-8"
    )
    assert len(read(folder).persons) == 7


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", ("users.csv", 1, "the file is empty: no header line")),
        (
            b"sourcedId;status;givenName;familyName\nusr-1;active;Ola;Nordmann\n",
            (
                "users.csv",
                1,
                "the columns are separated by semicolons; OneRoster CSV uses commas"
                " (in Excel: save as CSV UTF-8, comma-separated)",
            ),
        ),
        (
            "sourcedId,status,givenName,familyName\nusr-1,active,Ola,Nordmann\n"
            "usr-2,active,Åse,Ødegård\n".encode("latin-1"),
            ("users.csv", 3, "not UTF-8 text (save the file as UTF-8; in Excel: CSV UTF-8)"),
        ),
    ],
    ids=["empty", "semicolons", "latin-1"],
)
def test_an_unreadable_users_csv_says_why(
    tmp_path: Path, content: bytes, expected: tuple[Any, ...]
) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(NORDBY, folder)
    (folder / "users.csv").write_bytes(content)
    with pytest.raises(ValidationFailed) as exc:
        read(folder)
    assert errors_of(exc) == [expected]


def test_a_bad_status_does_not_hide_the_other_problems(tmp_path: Path) -> None:
    """It stopped the import after the files were read, with "1 problem(s)": the next
    run then showed the next problem, one at a time."""
    folder = edited(tmp_path, "users.csv", "usr-kari,active,", "usr-kari,aktiv,")
    text = (folder / "users.csv").read_text(encoding="utf-8")
    (folder / "users.csv").write_text(text.replace("ola@example.no", "ola@@example"), "utf-8")
    with pytest.raises(ValidationFailed) as exc:
        read(folder)
    assert [(e[0], e[2]) for e in errors_of(exc)] == [
        ("users.csv", "status"),
        ("users.csv", "email"),
    ]
    assert not any("unknown" in e[3] for e in errors_of(exc))  # kari is still known


def test_a_guardian_without_email_or_phone_is_imported_with_a_warning(tmp_path: Path) -> None:
    folder = edited(tmp_path, "users.csv", "ola@example.no,900 12 345", ",")
    result = load_oneroster(folder, ImportOptions(today=TODAY))
    ola = next(p for p in result.batch.persons if p.id == "usr-ola")
    assert (ola.email, ola.phone) == (None, None)
    assert (
        "users.csv row 4: a parent/guardian without email or phone:"
        " reached only in the app, if they use it"
    ) in result.warnings


def test_a_path_that_is_no_folder_says_which(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_text("sourcedId\n")
    for path, what in (
        (tmp_path / "nope", "no such folder"),
        (tmp_path / "export.csv", "not a folder"),
    ):
        with pytest.raises(ValidationFailed) as exc:
            read(path)
        [(loc, message)] = errors_of(exc)
        assert (loc, message.split(":")[0]) == ("path", what)
        assert str(path) in message


def test_every_problem_is_reported_at_once_in_row_order(tmp_path: Path) -> None:
    folder = edited(
        tmp_path, "users.csv", "Kristin,Hansen,,,,+4791234567", "Kristin,Hansen,,,nope,+4791234567"
    )
    text = (folder / "users.csv").read_text(encoding="utf-8")
    text = text.replace('"usr-ola,usr-kristin,usr-berit"', '"usr-ola,usr-nobody"')
    text = text.replace(",student,amir.h,", ",pupil,amir.h,")
    (folder / "users.csv").write_text(text, encoding="utf-8")
    with pytest.raises(ValidationFailed) as exc:
        read(folder)
    assert errors_of(exc) == [
        ("users.csv", 2, "agentSourcedIds", "refers to an unknown user"),
        ("users.csv", 5, "email", "not a valid email address"),
        ("users.csv", 8, "role", "unknown role"),
    ]


def test_delta_files_are_refused_and_required_files_must_be_bulk(tmp_path: Path) -> None:
    folder = edited(tmp_path, "manifest.csv", "file.users,bulk", "file.users,delta")
    with pytest.raises(ValidationFailed) as exc:
        read(folder)
    assert errors_of(exc) == [
        ("manifest.csv", 16, "value", "delta files are not supported: export bulk")
    ]
    folder = edited(tmp_path / "absent", "manifest.csv", "file.orgs,bulk", "file.orgs,")
    with pytest.raises(ValidationFailed) as exc:
        read(folder)
    assert errors_of(exc) == [
        ("manifest.csv", 13, "value", "must be bulk: the import needs orgs.csv")
    ]
    (folder / "manifest.csv").unlink()
    with pytest.raises(ValidationFailed) as exc:
        read(folder)
    assert errors_of(exc) == [("manifest.csv", "file missing")]


def test_unsupported_version_is_refused(tmp_path: Path) -> None:
    folder = edited(tmp_path, "manifest.csv", "oneroster.version,1.1", "oneroster.version,1.0")
    with pytest.raises(ValidationFailed) as exc:
        read(folder)
    assert errors_of(exc) == [
        ("manifest.csv", 3, "value", "unsupported OneRoster version; expected 1.1 or 1.2")
    ]


def test_responsibility_roles_option_decides_new_relations() -> None:
    everyone = read(NORDBY, responsibility_roles=frozenset({"parent", "guardian", "relativeOf"}))
    assert all(r.parental_responsibility for r in everyone.relations)
    nobody = read(NORDBY, responsibility_roles=frozenset())
    assert not any(r.parental_responsibility for r in nobody.relations)
    with pytest.raises(ValueError, match="responsibility_roles"):
        ImportOptions(responsibility_roles=frozenset({"teacher"}))
    with pytest.raises(ValueError, match="phone region"):
        ImportOptions(phone_region="XX")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("Solvang skole", UnitKind.school),
        ("Tunet barnehage", UnitKind.kindergarten),
        ("Huseby SFO", UnitKind.sfo),
        ("Aktivitetsskolen Bjølsen", UnitKind.sfo),
        ("Asker voksenopplæring", UnitKind.adult_education),
        ("Nordby skole og barnehage", UnitKind.school),  # two kinds: no clear signal
        ("Barnehageveien skole", UnitKind.school),  # a word, not a part of one
        ("History Department", UnitKind.school),
    ],
)
def test_unit_kind_only_from_a_clear_signal(name: str, kind: UnitKind) -> None:
    assert unit_kind(name) is kind


def test_zip_with_a_top_folder_reads_like_the_folder() -> None:
    data = zipped(NORDBY, prefix="export-2026-11-27/")
    assert read_oneroster_zip(data, ImportOptions(today=TODAY)) == read(NORDBY)


def test_zip_errors() -> None:
    with pytest.raises(ValidationFailed) as exc:
        read_oneroster_zip(b"not a zip at all")
    assert errors_of(exc) == [("archive", "not a zip archive")]
    with pytest.raises(PayloadTooLarge):
        load_oneroster_zip(zipped(NORDBY), limits=ArchiveSettings(max_total_bytes=1024))


@needs_samples
@pytest.mark.parametrize("version", ["v1p1", "v1p2"])
def test_samples_report_each_bad_row_without_options(version: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        read_oneroster(sample(version), ImportOptions(phone_region="US", today=TODAY))
    # Numbers that are no valid US numbers either; students without any birth date.
    assert [describe(e) for e in exc.value.errors if e["loc"][2] == "sms"] == [
        f"users.csv row {row} field sms: not a valid phone number" for row in (3, 5, 6)
    ]
    assert [e["loc"][1] for e in exc.value.errors if e["loc"][2] == "birthDate"] == [3, 6, 7]
    # The default region (NO) rejects every US number in the file.
    with pytest.raises(ValidationFailed) as exc:
        read_oneroster(sample(version), ImportOptions(assume_minor=True, today=TODAY))
    assert [e["loc"][1] for e in exc.value.errors] == [2, 3, 4, 5, 6, 7]


# --------------------------------------------------------------------------- into a store


async def test_reimport_keeps_flags_protection_stored_responsibility_and_unit_settings(
    store: Store, tenant: TenantCreds, clock: ManualClock
) -> None:
    tenant_id = tenant.tenant.id
    batch = read(NORDBY)
    assert (await apply_oneroster(store, tenant_id, batch))["persons"] == 7
    await store.set_relation_flag(
        tenant_id, "usr-kari", "usr-berit", "blocked", True, "court order", "rektor", clock.now()
    )
    # The platform sends what OneRoster cannot say through the JSON API.
    kari = next(p for p in batch.persons if p.id == "usr-kari")
    ola_kari = next(
        r for r in batch.relations if r.guardian_id == "usr-ola" and r.child_id == kari.id
    )
    # ... and a unit's own senders and time zone (a unit with pupils, and one without)
    settings = {
        "org-nordby": {"sender_name": "Nordby skole – rektor", "sms_sender": "Nordby"},
        "org-tunet": {"sms_sender": "Tunet", "time_zone": "Arctic/Longyearbyen"},
    }
    await store.apply_directory(
        tenant_id,
        DirectoryBatch(
            units=[u.model_copy(update=settings[u.id]) for u in batch.units if u.id in settings],
            persons=[kari.model_copy(update={"protection": Protection.confidential})],
            relations=[
                ola_kari.model_copy(update={"parental_responsibility": False, "daily_care": True})
            ],
        ),
    )

    again = read(NORDBY, responsibility_roles=frozenset({"parent", "guardian", "relativeOf"}))
    await apply_oneroster(store, tenant_id, again)

    stored = await snapshot(store, tenant_id, again)
    relations = {(r.child_id, r.guardian_id): r for r in stored.relations}
    berit = relations[("usr-kari", "usr-berit")]
    assert berit.flags.blocked and berit.flags.blocked_reason == "court order"
    assert berit.parental_responsibility is False  # existing relation: stored value kept
    ola = relations[("usr-kari", "usr-ola")]
    assert (ola.parental_responsibility, ola.daily_care) == (False, True)
    assert stored.persons["usr-kari"].protection is Protection.confidential
    assert stored.persons["usr-kari"].group_ids == ["cls-5a"]
    units = (await store.load_audience(tenant_id, Audience(units=list(settings)))).units
    for unit_id, kept in settings.items():
        unit = units[unit_id]
        assert {k: getattr(unit, k) for k in kept} == kept, unit_id
        assert unit.name == next(u.name for u in again.units if u.id == unit_id)


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A fresh SQLite file with one tenant, named by the environment as an operator would."""
    db = tmp_path / "cli.db"
    monkeypatch.setenv("BUDBRINGER_STORE_URL", f"sqlite:///{db}")

    async def create() -> str:
        store = SqliteStore(str(db))
        await store.open()
        try:
            created, _, _ = await create_tenant(store, "Asker kommune", ManualClock().now())
            return created.id
        finally:
            await store.close()

    yield db, asyncio.run(create())


def stored(
    db: Path, tenant_id: str, batch: DirectoryBatch
) -> tuple[DirectorySnapshot, dict[str, list[str]]]:
    """The stored persons and relations of ``batch``, and the staff of each of its groups."""

    async def load() -> tuple[DirectorySnapshot, dict[str, list[str]]]:
        store = SqliteStore(str(db))
        await store.open()
        try:
            staff = {
                g.id: await store.staff_members(tenant_id, group_ids=[g.id]) for g in batch.groups
            }
            return await snapshot(store, tenant_id, batch), staff
        finally:
            await store.close()

    return asyncio.run(load())


@needs_samples
def test_cli_imports_the_v1p1_sample(
    cli_env: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, tenant_id = cli_env
    code = main(["import", "oneroster", str(sample("v1p1")), "--tenant", tenant_id, *SAMPLE_FLAGS])
    out = capsys.readouterr().out
    assert code == 0, out
    for line in ("units: 1", "groups: 1", "persons: 6", "relations: 1", "skipped tobedeleted: 1"):
        assert line in out.splitlines()
    assert "warning: users.csv row 5 field agentSourcedIds: ignored on a user who is neither" in out
    assert "note: a tobedeleted row keeps what is stored" in out  # skipped is not deleted

    snap, staff = stored(db, tenant_id, read_oneroster(sample("v1p1"), SAMPLE_OPTIONS))
    assert len(snap.persons) == 6
    # The parent's agentSourcedIds name the student: a relation with responsibility.
    [relation] = snap.relations
    assert (relation.child_id, relation.guardian_id, relation.parental_responsibility) == (
        "usr-222-66778899",
        "usr-222-1234561",
        True,
    )
    assert snap.persons["usr-222-1234561"].phone == "+16039876543"
    # The teacher enrolled in the class is a staff member of that group.
    assert snap.persons["usr-222-123456"].role is Role.staff
    assert "usr-222-123456" in staff["cls-222-123456"]
    assert snap.persons["usr-222-1234561232"].group_ids == ["cls-222-123456"]


@needs_samples
def test_cli_imports_the_v1p2_sample(
    cli_env: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, tenant_id = cli_env
    code = main(["import", "oneroster", str(sample("v1p2")), "--tenant", tenant_id, *SAMPLE_FLAGS])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "persons: 6" in out.splitlines() and "relations: 0" in out.splitlines()
    snap, staff = stored(db, tenant_id, read_oneroster(sample("v1p2"), SAMPLE_OPTIONS))
    roles = {pid: p.role for pid, p in snap.persons.items()}
    assert roles == {
        "usr-222-123456": Role.staff,  # teacher (primary) and guardian (secondary)
        "usr-222-66778899": Role.child,  # blank status: active
        "usr-222-1234561": Role.staff,  # siteAdministrator
        "usr-222-987654": Role.staff,
        "usr-222-1234561232": Role.child,
        "usr-222-567891": Role.child,
    }
    assert staff["cls-222-123456"] == ["usr-222-123456", "usr-222-987654"]
    assert snap.relations == []  # every agent link joins a student to staff: warned


def test_cli_error_prints_one_line_per_problem_and_writes_nothing(
    cli_env: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, tenant_id = cli_env
    folder = overlay(tmp_path, "bad-phone")
    assert main(["import", "oneroster", str(folder), "--tenant", tenant_id]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[1:] == ["users.csv row 7 field phone: not a valid phone number"]
    snap, _ = stored(db, tenant_id, read(NORDBY))
    assert snap.persons == {}


def test_cli_dry_run_validates_only(
    cli_env: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, tenant_id = cli_env
    assert main(["import", "oneroster", str(NORDBY), "--tenant", tenant_id, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:5] == [
        "dry run: nothing was written",
        "units: 4",
        "groups: 3",
        "persons: 7",
        "relations: 4",
    ]
    snap, _ = stored(db, tenant_id, read(NORDBY))
    assert snap.persons == {}


def test_cli_refuses_an_unknown_tenant_and_bad_options(
    cli_env: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", "oneroster", str(NORDBY), "--tenant", "nobody"]) == 2
    assert "unknown tenant" in capsys.readouterr().err
    _, tenant_id = cli_env
    args = ["import", "oneroster", str(NORDBY), "--tenant", tenant_id, "--phone-region", "XX"]
    assert main(args) == 2
    assert "phone region" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_as_a_process_reads_a_zip(cli_env: tuple[Path, str], tmp_path: Path) -> None:
    db, tenant_id = cli_env
    archive = tmp_path / "nordby.zip"
    archive.write_bytes(zipped(NORDBY))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "import",
            "oneroster",
            str(archive),
            "--tenant",
            tenant_id,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "BUDBRINGER_STORE_URL": f"sqlite:///{db}",
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert "persons: 7" in proc.stdout.splitlines()
    snap, _ = stored(db, tenant_id, read(NORDBY))
    assert set(snap.persons) == {p.id for p in read(NORDBY).persons}


# --------------------------------------------------------------------------- API

ENDPOINT = "/v1/directory/oneroster"


def zip_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Content-Type": "application/zip"}


@needs_samples
@pytest.mark.parametrize("version", ["v1p1", "v1p2"])
async def test_api_imports_the_samples(
    app_client: TestClient, store: Store, tenant: TenantCreds, version: str
) -> None:
    resp = await app_client.post(
        ENDPOINT,
        data=zipped(sample(version)),
        params={"phone_region": "US", "assume_minor": "true", "skip_invalid_contacts": "true"},
        headers=zip_headers(tenant.api_key),
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["applied"] == {
        "units": 1,
        "groups": 1,
        "persons": 6,
        "relations": 1 if version == "v1p1" else 0,
        "preferences": 0,
    }
    assert body["skipped"]["tobedeleted"] == 1 and body["dry_run"] is False
    assert "users.csv row 5 field agentSourcedIds" in "\n".join(body["warnings"])

    batch = read_oneroster(sample(version), SAMPLE_OPTIONS)
    snap = await snapshot(store, tenant.tenant.id, batch)
    assert set(snap.persons) == {p.id for p in batch.persons}
    assert "usr-222-123456" in await store.staff_members(
        tenant.tenant.id, group_ids=["cls-222-123456"]
    )
    if version == "v1p1":
        assert [(r.child_id, r.guardian_id) for r in snap.relations] == [
            ("usr-222-66778899", "usr-222-1234561")
        ]


async def test_api_422_names_file_row_field_and_writes_nothing(
    app_client: TestClient, store: Store, tenant: TenantCreds, tmp_path: Path
) -> None:
    resp = await app_client.post(
        ENDPOINT,
        data=zipped(overlay(tmp_path, "unknown-class")),
        headers=zip_headers(tenant.api_key),
    )
    assert resp.status == 422
    body = await resp.json()
    assert body["error"] == "validation_failed"
    assert body["errors"] == [
        {
            "loc": ["enrollments.csv", 3, "classSourcedId"],
            "message": "refers to an unknown class",
            "type": "value_error",
        }
    ]
    assert await store.get_person(tenant.tenant.id, "usr-kari") is None


async def test_api_dry_run_and_options(
    app_client: TestClient, store: Store, tenant: TenantCreds
) -> None:
    resp = await app_client.post(
        ENDPOINT,
        data=zipped(NORDBY),
        params={"dry_run": "true"},
        headers=zip_headers(tenant.api_key),
    )
    assert resp.status == 200
    body = await resp.json()
    assert (body["dry_run"], body["applied"]["persons"]) == (True, 7)
    assert await store.get_person(tenant.tenant.id, "usr-kari") is None

    resp = await app_client.post(
        ENDPOINT,
        data=zipped(NORDBY),
        params={"phone_region": "XX", "dry_runn": "1"},
        headers=zip_headers(tenant.api_key),
    )
    assert resp.status == 422
    assert [e["loc"] for e in (await resp.json())["errors"]] == [
        ["query", "phone_region"],
        ["query", "dry_runn"],
    ]


async def test_api_refuses_wrong_caller_type_and_size(
    app_client: TestClient, tenant: TenantCreds, settings: Settings
) -> None:
    data = zipped(NORDBY)
    resp = await app_client.post(ENDPOINT, data=data, headers={"Content-Type": "application/zip"})
    assert resp.status == 401
    resp = await app_client.post(
        ENDPOINT, data=data, headers={**zip_headers(tenant.api_key), "Content-Type": "text/csv"}
    )
    assert (resp.status, (await resp.json())["error"]) == (415, "unsupported_media_type")
    settings.http.directory_max_body_bytes = 100_000  # the route's own limit (64 MB by default)
    too_big = b"\0" * 100_001
    resp = await app_client.post(ENDPOINT, data=too_big, headers=zip_headers(tenant.api_key))
    assert resp.status == 413
