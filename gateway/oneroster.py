"""Import a municipality's directory from a OneRoster CSV export (OneRoster 1.1 and 1.2).

Student-administration platforms export OneRoster: ``manifest.csv`` and one CSV
file per kind. This module maps such an export onto Budbringer's directory:

* ``orgs.csv`` → units: orgs of type ``school``, and any org a class names as
  its school (exports in the wild hang classes on a ``department``). The kind
  is ``school`` unless the name clearly says otherwise: the word *barnehage*
  (kindergarten), *SFO*/*AKS*/*skolefritidsordning* (sfo), or
  *voksenopplæring* (adult_education). Other orgs (districts, ...) are skipped.
* ``classes.csv`` → groups of kind ``class`` under their school.
* ``users.csv`` (1.1: its ``role`` column; 1.2: the primary role in
  ``roles.csv``) → persons: student → child (learner when all their units are
  adult education), parent/guardian/relativeOf → guardian, every other role →
  staff. ``sms`` (else ``phone``) → phone in E.164, ``email`` → email, orgs that
  are units → ``unit_ids``. Birth dates of students come from
  ``demographics.csv`` (``birthDate``), or a ``birthDate`` column in users.csv.
* ``agentSourcedIds`` between a student and a parent/guardian/relativeOf (on
  either side) → relations; ``parental_responsibility`` is True for the roles
  in :attr:`ImportOptions.responsibility_roles` (parent and guardian) on NEW
  relations only, since OneRoster cannot say who holds foreldreansvar.
* ``enrollments.csv`` → group memberships.

Not mapped: academic sessions, courses, results, user profiles, demographics
other than the birth date, middle and preferred names, ``grades``,
``enabledUser``, secondary roles (a teacher who is also a guardian is staff).
Only bulk files are read: a delta file is refused. Rows with status
``tobedeleted`` are skipped and counted, never deleted; nothing absent from the
export is deleted either (use ``POST /v1/directory/delete``).

Reading (:func:`load_oneroster`, :func:`read_oneroster` and their zip variants)
is pure and reports every problem at once as :class:`ValidationFailed` rows
``{"loc": [file, row, field], ...}``; ``row`` is the 1-based line in the CSV
file where the record starts (the header is line 1). Messages never contain
the values themselves: they may be personal data. :func:`apply_oneroster`
writes the result through the all-or-nothing ``DirectoryStore.apply_directory``.
"""

from __future__ import annotations

import csv
import io
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

import phonenumbers
from pydantic import BaseModel, ValidationError

from gateway.archive import checked_members, zip_error
from gateway.constants import DEFAULT_PHONE_REGION, DEFAULT_TIME_ZONE
from gateway.errors import ValidationFailed, plain_message
from gateway.models import (
    Audience,
    DirectoryBatch,
    DirectorySnapshot,
    Group,
    GroupKind,
    Person,
    Relation,
    Role,
    Unit,
    UnitKind,
    birth_date_problem,
    normalise_email,
    normalise_phone,
)
from gateway.settings import ArchiveSettings
from gateway.store.ports import AudienceReader, DirectoryStore

VERSIONS = ("1.1", "1.2")
MANIFEST = "manifest.csv"
MAX_REPORTED_ERRORS = 100
MAX_WARNINGS = 100
PLACEHOLDER_AGE = 10  # --assume-minor: a student without a birth date is taken to be ten

GUARDIAN_ROLES = frozenset({"parent", "guardian", "relativeof"})
DEFAULT_RESPONSIBILITY_ROLES = frozenset({"parent", "guardian"})
_STAFF_ROLES = frozenset(
    {
        "teacher",
        "aide",
        "administrator",
        "proctor",
        "counselor",
        "principal",
        "districtadministrator",
        "siteadministrator",
        "systemadministrator",
    }
)
ROLES: dict[str, Role] = {
    "student": Role.child,
    **dict.fromkeys(GUARDIAN_ROLES, Role.guardian),
    **dict.fromkeys(_STAFF_ROLES, Role.staff),
}
_CHILD_ROLES = (Role.child, Role.learner)

# Whole words of an org's name that clearly say what kind of unit it is; else school.
_UNIT_KIND_WORDS: tuple[tuple[UnitKind, frozenset[str]], ...] = (
    (
        UnitKind.sfo,
        frozenset(
            {
                "sfo",
                "aks",
                "skolefritidsordning",
                "skolefritidsordningen",
                "aktivitetsskole",
                "aktivitetsskolen",
            }
        ),
    ),
    (UnitKind.kindergarten, frozenset({"barnehage", "barnehagen", "barnehager"})),
    (
        UnitKind.adult_education,
        frozenset(
            {
                "voksenopplæring",
                "voksenopplæringen",
                "voksenopplæringssenter",
                "voksenopplæringssenteret",
            }
        ),
    ),
)

_SCHOOL_WORDS = frozenset({"skole", "skolen", "skule", "skulen"})

_REQUIRED: dict[str, tuple[str, ...]] = {
    "orgs": ("sourcedId", "name", "type"),
    "classes": ("sourcedId", "title", "schoolSourcedId"),
    "users": ("sourcedId", "givenName", "familyName"),
    "enrollments": ("classSourcedId", "userSourcedId"),
    "roles": ("userSourcedId", "role"),
    "demographics": ("sourcedId", "birthDate"),
}
# The columns of the OneRoster 1.0/1.1/1.2 bulk files (with the spellings seen in real
# exports). The import reads some and knowingly leaves the rest (README: "Not mapped");
# any other column (``ext_*``, a vendor's own) is reported as a warning naming it, never
# ignored in silence.
_COMMON_COLUMNS = ("sourcedId", "status", "dateLastModified", "dataLastModified", "metadata")
_KNOWN_COLUMNS: dict[str, frozenset[str]] = {
    kind: frozenset((*_COMMON_COLUMNS, *columns))
    for kind, columns in {
        "orgs": ("name", "type", "identifier", "parentSourcedId"),
        "classes": (
            "title",
            "grades",
            "courseSourcedId",
            "classCode",
            "classType",
            "location",
            "schoolSourcedId",
            "termSourcedIds",
            "subjects",
            "subjectCodes",
            "periods",
        ),
        "users": (
            "enabledUser",
            "orgSourcedIds",
            "role",
            "username",
            "userIds",
            "givenName",
            "familyName",
            "middleName",
            "identifier",
            "email",
            "sms",
            "phone",
            "agentSourcedIds",
            "agents",  # OneRoster 1.0's name of agentSourcedIds
            "grades",
            "password",
            "birthDate",
            "userMasterIdentifier",
            "preferredGivenName",
            "preferredMiddleName",
            "preferredFamilyName",
            "prefferedGivenName",
            "prefferedMiddleName",
            "prefferedFamilyName",
            "primaryOrgSourcedId",
            "pronouns",
        ),
        "enrollments": (
            "classSourcedId",
            "schoolSourcedId",
            "userSourcedId",
            "role",
            "primary",
            "beginDate",
            "endDate",
        ),
        "roles": (
            "userSourcedId",
            "roleType",
            "role",
            "orgSourcedId",
            "userProfileSourcedId",
            "beginDate",
            "endDate",
        ),
        "demographics": (
            "birthDate",
            "sex",
            "americanIndianOrAlaskaNative",
            "asian",
            "blackOrAfricanAmerican",
            "nativeHawaiianOrOtherPacificIslander",
            "white",
            "demographicRaceTwoOrMoreRaces",
            "hispanicOrLatinoEthnicity",
            "countryOfBirthCode",
            "stateOfBirthAbbreviation",
            "cityOfBirth",
            "publicSchoolResidenceStatus",
        ),
    }.items()
}
# OneRoster files the import knowingly does not map (README: "Not mapped"); any other
# file in the export (relationships.csv, a vendor's own) is reported as a warning.
_UNMAPPED_FILES = frozenset(
    f"{name.lower()}.csv"
    for name in (
        "academicSessions",
        "courses",
        "categories",
        "classResources",
        "courseResources",
        "resources",
        "lineItems",
        "results",
        "scoreScales",
        "lineItemLearningObjectiveIds",
        "lineItemScoreScales",
        "resultLearningObjectiveIds",
        "resultScoreScales",
        "userProfiles",
        "userResources",
    )
)

# Pydantic field -> the CSV column it came from, for error locations.
_PERSON_FIELDS = {
    "id": "sourcedId",
    "given_name": "givenName",
    "family_name": "familyName",
    "birth_date": "birthDate",
    "email": "email",
    "unit_ids": "orgSourcedIds",
    "": "sourcedId",
}
_UNIT_FIELDS = {"id": "sourcedId", "name": "name", "": "sourcedId"}
_GROUP_FIELDS = {"id": "sourcedId", "name": "title", "unit_id": "schoolSourcedId"}

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


def parse_phone_region(value: str) -> str:
    """A region code phonenumbers knows (``NO``, ``US``, ...); ValueError otherwise."""
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("not a known phone region (a two-letter code such as NO or US)")
    return region


def parse_responsibility_roles(value: str) -> frozenset[str]:
    """``"parent,guardian"`` -> the roles whose new relations get parental responsibility;
    ``""`` -> none. ValueError for anything but parent, guardian and relativeOf."""
    roles = frozenset(part.strip().lower() for part in value.split(",") if part.strip())
    if not roles <= GUARDIAN_ROLES:
        raise ValueError("expected a comma-separated list of parent, guardian, relativeOf")
    return roles


@dataclass(frozen=True)
class ImportOptions:
    """How to read an export. The defaults refuse anything doubtful."""

    # Region for numbers without a country code ("90012345" in NO, "6037778888" in US).
    phone_region: str = DEFAULT_PHONE_REGION
    # Give students without a birth date a placeholder (1 January, ten years before the
    # import year: a minor) instead of reporting them as errors.
    assume_minor: bool = False
    # Leave invalid phone numbers and emails out (a warning each) instead of failing.
    skip_invalid_contacts: bool = False
    # OneRoster roles whose NEW relations get parental_responsibility=True (lower case).
    responsibility_roles: frozenset[str] = DEFAULT_RESPONSIBILITY_ROLES
    # The import date for the placeholder birth date; default today in Norway.
    today: date | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "phone_region", parse_phone_region(self.phone_region))
        roles = frozenset(role.lower() for role in self.responsibility_roles)
        if not roles <= GUARDIAN_ROLES:
            raise ValueError("responsibility_roles: only parent, guardian and relativeOf")
        object.__setattr__(self, "responsibility_roles", roles)

    def import_date(self) -> date:
        return self.today or datetime.now(ZoneInfo(DEFAULT_TIME_ZONE)).date()

    def placeholder_birth_date(self) -> date:
        return date(self.import_date().year - PLACEHOLDER_AGE, 1, 1)


@dataclass
class OneRosterImport:
    """What an export maps to: the batch, plus what was skipped and warned about."""

    version: str
    batch: DirectoryBatch
    # Rows or references left out, per reason (tobedeleted, orgs_not_units, ...).
    skipped: dict[str, int] = field(default_factory=dict)
    # One line each, without personal data: "users.csv row 5 field agentSourcedIds: ...".
    warnings: list[str] = field(default_factory=list)


def describe(error: Mapping[str, Any]) -> str:
    """One problem as a line: ``users.csv row 7 field phone: not a valid phone number``."""
    loc = list(error.get("loc") or [])
    parts = [str(loc.pop(0))] if loc else []
    if loc and isinstance(loc[0], int):
        parts.append(f"row {loc.pop(0)}")
    if loc:
        parts.append("field " + ".".join(str(part) for part in loc))
    where = " ".join(parts)
    return f"{where}: {error['message']}" if where else str(error["message"])


def counts(batch: DirectoryBatch) -> dict[str, int]:
    """Rows per kind, in the shape ``DirectoryStore.apply_directory`` returns (for a dry run)."""
    return {
        "units": len(batch.units),
        "groups": len(batch.groups),
        "persons": len(batch.persons),
        "relations": len(batch.relations),
        "preferences": len(batch.preferences),
    }


# --------------------------------------------------------------------------- reading


def load_oneroster(directory: Path, options: ImportOptions | None = None) -> OneRosterImport:
    """Read and map the export in ``directory``; ValidationFailed lists every problem."""
    if not directory.is_dir():
        what = "not a folder" if directory.exists() else "no such folder"
        message = f"{what}: {directory} (give the folder of the export's CSV files, or its zip)"
        raise ValidationFailed(
            "the export cannot be read",
            errors=[{"loc": ["path"], "message": message, "type": "value_error"}],
        )
    files = {path.name.lower(): path for path in directory.iterdir() if path.is_file()}

    def source(name: str) -> bytes | None:
        path = files.get(name)
        return path.read_bytes() if path is not None else None

    return _Mapper(source, options or ImportOptions(), files).run()


def read_oneroster(directory: Path, options: ImportOptions | None = None) -> DirectoryBatch:
    """The directory batch of the export in ``directory`` (see :func:`load_oneroster`)."""
    return load_oneroster(directory, options).batch


def load_oneroster_zip(
    data: bytes,
    options: ImportOptions | None = None,
    *,
    limits: ArchiveSettings | None = None,
) -> OneRosterImport:
    """Like :func:`load_oneroster` for a zip of the CSV files (folders inside are ignored).

    PayloadTooLarge if the archive exceeds ``limits`` (entries, a file's or all files'
    uncompressed size, compression ratio): found while streaming, before anything is
    kept (:mod:`gateway.archive`).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise zip_error(["archive"], "not a zip archive") from exc
    with archive:
        members = checked_members(archive, limits or ArchiveSettings())

        def source(name: str) -> bytes | None:
            info = members.get(name)
            if info is None:
                return None
            try:
                return archive.read(info)  # within the limits: checked_members read it
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error) as exc:
                raise zip_error([name], "cannot be read from the archive") from exc

        return _Mapper(source, options or ImportOptions(), members).run()


def read_oneroster_zip(data: bytes, options: ImportOptions | None = None) -> DirectoryBatch:
    """The directory batch of a zipped export (see :func:`load_oneroster_zip`)."""
    return load_oneroster_zip(data, options).batch


# --------------------------------------------------------------------------- writing


class ImportStore(DirectoryStore, AudienceReader, Protocol):
    """The directory's writes, and its reads to compare an import with."""


async def apply_oneroster(
    store: ImportStore,
    tenant_id: str,
    batch: DirectoryBatch,
    at: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Write an imported batch all or nothing; return the counts ``apply_directory`` gives.

    What OneRoster cannot express is kept as stored: a person's protection
    (sperret adresse), language and consent_guardians are never in the batch, so the
    store keeps them (gateway/protection.py: absent means keep, protection only goes
    up); an existing relation's parental_responsibility and daily_care, and an
    existing unit's time zone and email and SMS senders, are kept here (the platform
    sends the real foreldreansvar, and those unit settings, through
    ``POST /v1/directory``). Manual flags are never touched (the store guarantees it).
    """
    if progress is not None:
        progress("comparing with the stored directory")
    if batch.relations or batch.units:
        audience = Audience(
            children=sorted({r.child_id for r in batch.relations}),
            units=sorted({u.id for u in batch.units}),
        )
        batch = _keep_stored(batch, await store.load_audience(tenant_id, audience))
    if progress is not None:
        progress(f"writing {len(batch.persons)} persons")
    return await store.apply_directory(tenant_id, batch, at)


# What a unit has that OneRoster's orgs.csv does not say: set through the directory API.
_UNIT_SETTINGS = ("time_zone", "sender_name", "sms_sender")


def _keep_stored(batch: DirectoryBatch, stored: DirectorySnapshot) -> DirectoryBatch:
    units = [
        unit.model_copy(update={f: getattr(old, f) for f in _UNIT_SETTINGS})
        if (old := stored.units.get(unit.id)) is not None
        else unit
        for unit in batch.units
    ]
    old_relations = {(r.child_id, r.guardian_id): r for r in stored.relations}
    relations = []
    for relation in batch.relations:
        old_relation = old_relations.get((relation.child_id, relation.guardian_id))
        if old_relation is not None:
            relation = relation.model_copy(
                update={
                    "parental_responsibility": old_relation.parental_responsibility,
                    "daily_care": old_relation.daily_care,
                }
            )
        relations.append(relation)
    return batch.model_copy(update={"units": units, "relations": relations})


# --------------------------------------------------------------------------- internals


def _values(header: list[str], fields: list[str]) -> dict[str, str]:
    """A row's values by column (the first of a repeated column name)."""
    values: dict[str, str] = {}
    for column, value in zip(header, fields, strict=False):
        if column and column not in values:
            values[column] = value.strip()
    return values


@dataclass
class _Row:
    line: int
    values: dict[str, str]

    def __getitem__(self, column: str) -> str:
        return self.values.get(column, "")

    def ids(self, column: str) -> list[str]:
        """A multi-valued column ("a,b,c") as a list without blanks or repeats."""
        return list(dict.fromkeys(p.strip() for p in self[column].split(",") if p.strip()))


@dataclass
class _Table:
    name: str
    columns: frozenset[str]
    rows: list[_Row]  # active rows only (status blank or active)
    gone: set[str] = field(default_factory=set)  # sourcedIds of rows to be deleted


@dataclass
class _Draft:
    """A user on the way to becoming a Person."""

    line: int
    oneroster_role: str  # lower case
    data: dict[str, Any]
    agents: list[str]
    phone_field: str = "sms"

    @property
    def role(self) -> Role:
        role: Role = self.data["role"]
        return role


class _Problems:
    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.skipped: Counter[str] = Counter()

    def error(self, loc: Loc, message: str, kind: str = "value_error") -> None:
        self.errors.append({"loc": list(loc), "message": message, "type": kind})

    def warn(self, loc: Loc, message: str, reason: str) -> None:
        self.warnings.append(describe({"loc": list(loc), "message": message}))
        self.skipped[reason] += 1

    def fail_if_any(self) -> None:
        if self.errors:
            self.errors.sort(key=_error_order)
            shown = self.errors[:MAX_REPORTED_ERRORS]
            more = f" (the first {len(shown)} are listed)" * (len(self.errors) > len(shown))
            raise ValidationFailed(
                f"{len(self.errors)} problem(s) in the OneRoster files{more}; nothing was written",
                errors=shown,
            )

    def warning_lines(self) -> list[str]:
        lines = self.warnings[:MAX_WARNINGS]
        if len(self.warnings) > MAX_WARNINGS:
            lines.append(f"... and {len(self.warnings) - MAX_WARNINGS} more warnings")
        return lines


def _error_order(error: Mapping[str, Any]) -> tuple[str, int, str]:
    """File by file, row by row: the order someone fixing the export works in."""
    loc = error["loc"]
    row = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
    return str(loc[0]) if loc else "", row, ".".join(str(part) for part in loc[2:])


class _Mapper:
    """One read of one export: tables in, a batch (or every problem) out."""

    def __init__(
        self,
        source: Callable[[str], bytes | None],
        options: ImportOptions,
        names: Iterable[str] = (),
    ) -> None:
        self.source = source
        self.names = sorted(names)  # every file of the export (lower case), to report extras
        self.options = options
        self.problems = _Problems()
        self.orgs: dict[str, _Row] = {}
        self.units: dict[str, Unit] = {}
        self.classes: dict[str, _Row] = {}
        self.groups: dict[str, Group] = {}
        self.users: dict[str, _Row] = {}
        self.drafts: dict[str, _Draft] = {}
        self.gone_orgs: set[str] = set()
        self.gone_classes: set[str] = set()
        self.gone_users: set[str] = set()

    def run(self) -> OneRosterImport:
        version, tables = self._read_tables()
        self._map_orgs_and_classes(tables["orgs"], tables.get("classes"))
        self._map_users(tables["users"], tables.get("roles"), version)
        self._birth_dates(tables["users"], tables.get("demographics"))
        self._enrollments(tables.get("enrollments"))
        persons = self._persons()
        relations = self._relations(persons)
        self.problems.fail_if_any()
        try:
            batch = DirectoryBatch(
                units=list(self.units.values()),
                groups=list(self.groups.values()),
                persons=list(persons.values()),
                relations=relations,
            )
        except ValidationError as exc:  # more rows than one batch takes
            files = {"units": "orgs.csv", "groups": "classes.csv", "relations": "users.csv"}
            for err in exc.errors(include_url=False, include_input=False):
                kind = str(err["loc"][0])
                message = f"too many {kind} for one import ({err['msg']}); import per school"
                self.problems.error((files.get(kind, "users.csv"),), message, err["type"])
            self.problems.fail_if_any()
            raise  # unreachable: fail_if_any raised
        return OneRosterImport(
            version=version,
            batch=batch,
            skipped=dict(sorted(self.problems.skipped.items())),
            warnings=self.problems.warning_lines(),
        )

    # ---------------------------------------------------------------- files

    def _read_tables(self) -> tuple[str, dict[str, _Table]]:
        version, modes = self._manifest()
        self.problems.fail_if_any()
        needed = {"orgs", "users", *({"roles"} if version == "1.2" else set())}
        for kind in sorted(needed):
            if modes[kind][1] != "bulk":
                self.problems.error(
                    (MANIFEST, *modes[kind][0]), f"must be bulk: the import needs {kind}.csv"
                )
        tables: dict[str, _Table] = {}
        used = {*needed, "classes", "enrollments", "demographics"}
        readable = True
        for kind, (_, mode) in modes.items():
            if mode == "bulk" and kind in used:
                table = self._table(kind)
                if table is not None:
                    tables[kind] = table
                readable = readable and table is not None
        readable = readable and needed <= tables.keys()
        if version == "1.1" and "users" in tables:
            readable = self._require(tables["users"], ("role",)) and readable
        if not readable:
            # A file missing, unreadable or without a column the mapping needs: its rows
            # cannot be checked. Problems of single rows do not stop here: every one of
            # them is reported at once, after the mapping.
            self.problems.fail_if_any()
        self._report_unread(tables)
        return version, tables

    def _report_unread(self, tables: Mapping[str, _Table]) -> None:
        """Warn about every file and column the import does not read, naming it."""
        read = {MANIFEST.lower(), *(f"{kind.lower()}.csv" for kind in tables)}
        for name in self.names:
            if name.endswith(".csv") and name not in read and name not in _UNMAPPED_FILES:
                self.problems.warnings.append(f"{name}: not read by the import")
        for kind, table in tables.items():
            for column in sorted(table.columns - _KNOWN_COLUMNS[kind]):
                if column:
                    self.problems.warnings.append(
                        f"{table.name} column {column}: not read by the import"
                    )
        users = tables.get("users")
        if users is not None and {"agents", "agentSourcedIds"} <= users.columns:
            self.problems.warnings.append(
                "users.csv column agents: not read by the import (agentSourcedIds is)"
            )
        demographics = tables.get("demographics")
        if demographics is not None and not demographics.rows:
            self.problems.warnings.append(
                "demographics.csv: has no rows; birth dates come from users.csv (birthDate)"
            )

    def _manifest(self) -> tuple[str, dict[str, tuple[Loc, str]]]:
        table = self._csv(MANIFEST)
        if table is None or not self._require(table, ("propertyName", "value")):
            return "", {}
        props = {row["propertyName"]: row for row in table.rows}
        version = props["oneroster.version"]["value"] if "oneroster.version" in props else ""
        if "oneroster.version" not in props:
            self.problems.error((MANIFEST, "oneroster.version"), "missing", "missing")
        elif version not in VERSIONS:
            self.problems.error(
                (MANIFEST, props["oneroster.version"].line, "value"),
                "unsupported OneRoster version; expected 1.1 or 1.2",
            )
        modes: dict[str, tuple[Loc, str]] = {}
        for kind in _REQUIRED:
            row = props.get(f"file.{kind}")
            loc: Loc = (row.line, "value") if row else (f"file.{kind}",)
            mode = (row["value"].lower() if row else "") or "absent"  # blank = absent
            if mode == "delta":
                self.problems.error((MANIFEST, *loc), "delta files are not supported: export bulk")
            elif mode not in ("bulk", "absent"):
                self.problems.error((MANIFEST, *loc), "expected bulk, delta or absent")
            modes[kind] = (loc, mode)
        return version, modes

    def _table(self, kind: str) -> _Table | None:
        name = f"{kind}.csv"
        table = self._csv(name)
        if table is None or not self._require(table, _REQUIRED[kind]):
            return None
        active = []
        for row in table.rows:
            status = row["status"].lower()
            if status in ("", "active"):
                active.append(row)
            elif status in ("tobedeleted", "inactive"):
                table.gone.add(row["sourcedId"])
                self.problems.skipped["tobedeleted"] += 1
            else:
                # Checked as an active row: the rest of the export's problems are found
                # too, and its users are no unknown references in others' rows.
                self.problems.error(
                    (name, row.line, "status"), "expected active or tobedeleted (or blank)"
                )
                active.append(row)
        table.rows = active
        return table

    def _csv(self, name: str) -> _Table | None:
        raw = self.source(name)
        if raw is None:
            where = "" if name == MANIFEST else "; the manifest lists it as bulk"
            self.problems.error((name,), f"file missing{where}", "missing")
            return None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            self.problems.error(
                (name, line),
                "not UTF-8 text (save the file as UTF-8; in Excel: CSV UTF-8)",
            )
            return None
        reader = csv.reader(io.StringIO(text, newline=""))
        rows: list[_Row] = []
        start = 1
        try:
            header = [column.strip() for column in next(reader, [])]
            if not self._header_fits(name, header):
                return None
            start = reader.line_num + 1
            for fields in reader:
                # blank lines are no records
                if any(v.strip() for v in fields):
                    self._check_field_count(name, start, header, fields)
                    rows.append(_Row(start, _values(header, fields)))
                start = reader.line_num + 1
        except csv.Error:
            self.problems.error((name, start), "not valid CSV")
            return None
        return _Table(name, frozenset(header), rows)

    def _header_fits(self, name: str, header: list[str]) -> bool:
        """A header line there is, and separated by commas."""
        if not any(header):
            self.problems.error((name, 1), "the file is empty: no header line", "missing")
            return False
        if len(header) == 1 and header[0].count(";") >= 2:
            self.problems.error(
                (name, 1),
                "the columns are separated by semicolons; OneRoster CSV uses commas"
                " (in Excel: save as CSV UTF-8, comma-separated)",
            )
            return False
        return True

    def _check_field_count(
        self, name: str, line: int, header: list[str], fields: list[str]
    ) -> None:
        """No more fields than the header has columns (empty ones past the last column,
        a trailing comma, are fine): one more means a value landed in the wrong column,
        so the import is refused (the row is still checked, for the other problems).
        Fewer are read as empty, as exports leave out trailing empty columns (the 1.2
        samples' roles.csv does)."""
        if not any(value.strip() for value in fields[len(header) :]):
            return
        self.problems.error(
            (name, line),
            f"{len(fields)} fields but the header has {len(header)} columns"
            " (a value with a comma in it must be in double quotes)",
            "field_count",
        )

    def _require(self, table: _Table, columns: Iterable[str]) -> bool:
        missing = [column for column in columns if column not in table.columns]
        for column in missing:
            self.problems.error((table.name, 1, column), "missing required column", "missing")
        return not missing

    def _unique(self, table: _Table, row: _Row, seen: Mapping[str, object]) -> str | None:
        sourced_id = row["sourcedId"]
        if sourced_id in seen:
            self.problems.error((table.name, row.line, "sourcedId"), "duplicate sourcedId")
            return None
        return sourced_id

    def _build(
        self, model: type[M], data: dict[str, Any], loc: Loc, fields: Mapping[str, str]
    ) -> M | None:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                name = str(err["loc"][0]) if err["loc"] else ""
                self.problems.error((*loc, fields.get(name, name)), plain_message(err), err["type"])
            return None

    # ---------------------------------------------------------------- orgs, classes

    def _map_orgs_and_classes(self, orgs: _Table, classes: _Table | None) -> None:
        self.gone_orgs = orgs.gone
        for row in orgs.rows:
            sourced_id = self._unique(orgs, row, self.orgs)
            if sourced_id is not None:
                self.orgs[sourced_id] = row
        class_rows = classes.rows if classes is not None else []
        wanted = {sid for sid, row in self.orgs.items() if row["type"].lower() == "school"}
        wanted.update(row["schoolSourcedId"] for row in class_rows)
        for sourced_id, row in self.orgs.items():
            if sourced_id not in wanted:
                self.problems.skipped["orgs_not_units"] += 1
                continue
            data = {"id": sourced_id, "kind": unit_kind(row["name"]), "name": row["name"]}
            unit = self._build(Unit, data, (orgs.name, row.line), _UNIT_FIELDS)
            if unit is not None:
                self.units[sourced_id] = unit
        if classes is None:
            return
        self.gone_classes = classes.gone
        for row in class_rows:
            sourced_id = self._unique(classes, row, self.classes)
            if sourced_id is None:
                continue
            self.classes[sourced_id] = row
            school = row["schoolSourcedId"]
            if school not in self.orgs:
                self.problems.error(
                    (classes.name, row.line, "schoolSourcedId"), "refers to an unknown org"
                )
            elif school in self.units:
                data = {"id": sourced_id, "unit_id": school, "kind": GroupKind.class_}
                data["name"] = row["title"]
                group = self._build(Group, data, (classes.name, row.line), _GROUP_FIELDS)
                if group is not None:
                    self.groups[sourced_id] = group

    # ---------------------------------------------------------------- users

    def _map_users(self, users: _Table, roles: _Table | None, version: str) -> None:
        self.gone_users = users.gone
        for row in users.rows:
            sourced_id = self._unique(users, row, self.users)
            if sourced_id is not None:
                self.users[sourced_id] = row
        roles_of = self._roles_by_user(roles) if version == "1.2" else {}
        for sourced_id, row in self.users.items():
            if version == "1.2":
                user_roles = roles_of.get(sourced_id, [])
                if not user_roles:
                    self.problems.error(
                        (users.name, row.line, "sourcedId"), "no role for this user in roles.csv"
                    )
                    continue
                primary = next(
                    (r for r in user_roles if r["roleType"].lower() == "primary"), user_roles[0]
                )
                role_loc: Loc = ("roles.csv", primary.line, "role")
                role_value = primary["role"]
            else:
                user_roles, role_loc, role_value = [], (users.name, row.line, "role"), row["role"]
            self._draft(sourced_id, row, role_value, role_loc, user_roles)

    def _roles_by_user(self, roles: _Table | None) -> dict[str, list[_Row]]:
        by_user: defaultdict[str, list[_Row]] = defaultdict(list)
        for row in roles.rows if roles is not None else []:
            user = row["userSourcedId"]
            if user in self.users:
                by_user[user].append(row)
            elif user not in self.gone_users:
                self.problems.error(
                    ("roles.csv", row.line, "userSourcedId"), "refers to an unknown user"
                )
        return by_user

    def _draft(
        self, sourced_id: str, row: _Row, role_value: str, role_loc: Loc, user_roles: list[_Row]
    ) -> None:
        oneroster_role = role_value.lower()
        if oneroster_role.startswith("ext:"):
            self.problems.warn(
                role_loc, "an extension role is not mapped; user left out", "ext_roles"
            )
            self.gone_users.add(sourced_id)
            return
        role = ROLES.get(oneroster_role)
        if role is None:
            self.problems.error(role_loc, "unknown role")
            return
        loc: Loc = ("users.csv", row.line)
        refs: list[tuple[Loc, str]] = [
            ((*loc, "orgSourcedIds"), o) for o in row.ids("orgSourcedIds")
        ]
        if row["primaryOrgSourcedId"]:
            refs.append(((*loc, "primaryOrgSourcedId"), row["primaryOrgSourcedId"]))
        refs += [(("roles.csv", r.line, "orgSourcedId"), r["orgSourcedId"]) for r in user_roles]
        unit_ids = self._unit_refs(refs)
        adult_education = [self.units[u].kind is UnitKind.adult_education for u in unit_ids]
        if role is Role.child and adult_education and all(adult_education):
            role = Role.learner
        # OneRoster 1.0 calls the column "agents"; 1.1 and 1.2 "agentSourcedIds".
        agents = (
            row.ids("agentSourcedIds") if "agentSourcedIds" in row.values else row.ids("agents")
        )
        draft = _Draft(row.line, oneroster_role, {"id": sourced_id, "role": role}, agents)
        draft.data.update(
            given_name=row["givenName"],
            family_name=row["familyName"],
            unit_ids=unit_ids,
            group_ids=[],
            email=self._email(row),
        )
        draft.data["phone"], draft.phone_field = self._phone(row)
        self.drafts[sourced_id] = draft

    def _unit_refs(self, refs: list[tuple[Loc, str]]) -> list[str]:
        unit_ids: dict[str, None] = {}
        for loc, org in refs:
            if org in self.units:
                unit_ids[org] = None
            elif org and org not in self.orgs and org not in self.gone_orgs:
                self.problems.error(loc, "refers to an unknown org")
            # else a district or another org that is no unit, or one to be deleted
        return list(unit_ids)

    def _phone(self, row: _Row) -> tuple[str | None, str]:
        """The first of sms and phone that is given, in E.164 (the model stores one)."""
        for column in ("sms", "phone"):
            if not row[column]:
                continue
            try:
                return normalise_phone(row[column], self.options.phone_region), column
            except ValueError as exc:
                if not self._contact_problem(("users.csv", row.line, column), str(exc)):
                    return None, column
        return None, "sms"

    def _email(self, row: _Row) -> str | None:
        if not row["email"]:
            return None
        try:
            return normalise_email(row["email"])
        except ValueError as exc:
            self._contact_problem(("users.csv", row.line, "email"), str(exc))
            return None

    def _contact_problem(self, loc: Loc, message: str) -> bool:
        """Report a bad contact point; True when the import may go on without it."""
        if self.options.skip_invalid_contacts:
            self.problems.warn(loc, f"{message}; left out", "invalid_contacts")
            return True
        self.problems.error(loc, message)
        return False

    def _birth_dates(self, users: _Table, demographics: _Table | None) -> None:
        """Birth dates of students only: nobody else's is needed (data minimisation)."""
        found: dict[str, tuple[Loc, str]] = {}
        for row in demographics.rows if demographics is not None else []:
            if row["birthDate"]:
                found[row["sourcedId"]] = (
                    ("demographics.csv", row.line, "birthDate"),
                    row["birthDate"],
                )
        placeholders = 0
        for sourced_id, draft in self.drafts.items():
            if draft.role not in _CHILD_ROLES:
                continue
            own = self.users[sourced_id]["birthDate"]
            loc, value = found.get(sourced_id, ((users.name, draft.line, "birthDate"), own))
            if value:
                try:
                    born = date.fromisoformat(value)
                except ValueError:
                    self.problems.error(loc, "not a date (YYYY-MM-DD)")
                    # Reported: a stand-in lets the model check the rest of the row, and
                    # it is not reported again as a missing birth date.
                    draft.data["birth_date"] = self.options.placeholder_birth_date()
                else:
                    draft.data["birth_date"] = born
                    problem = birth_date_problem(born, self.options.import_date())
                    if problem is not None:
                        self.problems.error(loc, problem, "implausible_date")
            elif self.options.assume_minor:
                draft.data["birth_date"] = self.options.placeholder_birth_date()
                placeholders += 1
            else:
                self.problems.error(
                    loc,
                    "a student needs a birth date (birthDate in demographics.csv or users.csv);"
                    " or import with --assume-minor",
                    "missing",
                )
                # Reported: a stand-in lets the model check the rest of the row.
                draft.data["birth_date"] = self.options.placeholder_birth_date()
        if placeholders:
            self.problems.warnings.append(
                f"users.csv: {placeholders} student(s) without a birth date got a placeholder"
                f" (1 January {self.options.placeholder_birth_date().year})"
            )

    # ---------------------------------------------------------------- enrollments, relations

    def _enrollments(self, enrollments: _Table | None) -> None:
        for row in enrollments.rows if enrollments is not None else []:
            class_id, user_id = row["classSourcedId"], row["userSourcedId"]
            loc: Loc = ("enrollments.csv", row.line)
            if class_id in self.gone_classes or user_id in self.gone_users:
                self.problems.skipped["enrollments_of_deleted"] += 1
            elif class_id not in self.classes:
                self.problems.error((*loc, "classSourcedId"), "refers to an unknown class")
            elif user_id not in self.users:
                self.problems.error((*loc, "userSourcedId"), "refers to an unknown user")
            elif user_id in self.drafts and class_id in self.groups:
                group_ids: list[str] = self.drafts[user_id].data["group_ids"]
                if class_id not in group_ids:
                    group_ids.append(class_id)

    def _persons(self) -> dict[str, Person]:
        persons: dict[str, Person] = {}
        for sourced_id, draft in self.drafts.items():
            fields = {**_PERSON_FIELDS, "phone": draft.phone_field}
            person = self._build(Person, draft.data, ("users.csv", draft.line), fields)
            if person is not None:
                persons[sourced_id] = person
                if person.role is Role.guardian and not (person.email or person.phone):
                    # Imported: the app reaches them, if they use it. No email or SMS can.
                    self.problems.warnings.append(
                        describe(
                            {
                                "loc": ["users.csv", draft.line],
                                "message": "a parent/guardian without email or phone:"
                                " reached only in the app, if they use it",
                            }
                        )
                    )
        return persons

    def _relations(self, persons: Mapping[str, Person]) -> list[Relation]:
        relations: dict[tuple[str, str], Relation] = {}
        for sourced_id, draft in self.drafts.items():
            if not draft.agents:
                continue
            loc: Loc = ("users.csv", draft.line, "agentSourcedIds")
            if draft.role is Role.staff:
                self.problems.warn(
                    loc,
                    "ignored on a user who is neither a student nor a parent/guardian/relativeOf",
                    "agents_ignored",
                )
                continue
            for agent in draft.agents:
                if agent in self.gone_users:
                    continue
                if agent not in self.users:
                    self.problems.error(loc, "refers to an unknown user")
                    continue
                other = self.drafts.get(agent)
                if other is None:  # its own row is in error already
                    continue
                pair = (sourced_id, agent) if draft.role in _CHILD_ROLES else (agent, sourced_id)
                child, guardian = self.drafts[pair[0]], self.drafts[pair[1]]
                if child.role not in _CHILD_ROLES or guardian.role is not Role.guardian:
                    self.problems.warn(
                        loc,
                        "ignored: a link joins a student and a parent/guardian/relativeOf"
                        " (primary role)",
                        "agents_ignored",
                    )
                elif pair not in relations and pair[0] in persons and pair[1] in persons:
                    relations[pair] = Relation(
                        child_id=pair[0],
                        guardian_id=pair[1],
                        parental_responsibility=(
                            guardian.oneroster_role in self.options.responsibility_roles
                        ),
                    )
        return list(relations.values())


def unit_kind(name: str) -> UnitKind:
    """The unit kind an org's name clearly says, else school.

    Clear means: whole words of exactly one kind (``Solvang barnehage``, ``Huseby
    SFO``), and no word for school (``Nordby skole og barnehage`` stays a school)."""
    words = set("".join(c if c.isalnum() else " " for c in name.casefold()).split())
    kinds = [kind for kind, signals in _UNIT_KIND_WORDS if words & signals]
    if len(kinds) == 1 and not words & _SCHOOL_WORDS:
        return kinds[0]
    return UnitKind.school
