"""Models the store builds from its own rows (gateway/store/trusted.py): the same objects
``model_construct`` makes, only cheaper."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import BaseModel, Field

from gateway.models import (
    Delivery,
    DeliveryStatus,
    Device,
    Job,
    Person,
    Protection,
    RelationFlags,
    RelationRecord,
    Role,
)
from gateway.store.encoding import dumps, loads, us
from gateway.store.sqlite.deliveries import _delivery
from gateway.store.sqlite.jobs import _job
from gateway.store.trusted import assembler, builder

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
FLAGS: dict[str, Any] = {
    "information_granted": False,
    "information_reason": None,
    "blocked": True,
    "blocked_reason": "Court order",
    "updated_by": "rektor",
    "updated_at": AT,
}
ROWS: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (
        Delivery,
        {
            "id": "d1",
            "tenant_id": "t1",
            "message_id": "m1",
            "recipient_id": "p1",
            "recipient_role": Role.guardian,
            "channel": "sms",
            "target": "phone",
            "address": "+4790012345",
            "language": "nb",
            "child_ids": ["c1"],
            "context": {"children": "Kari"},
            "status": DeliveryStatus.queued,
            "reason": None,
            "provider_id": None,
            "segments": None,
            "attempts": 0,
            "not_before": None,
            "created_at": AT,
            "updated_at": AT,
        },
    ),
    (
        Job,
        {
            "id": "send:d1",
            "tenant_id": "t1",
            "kind": "send",
            "ref": "d1",
            "due_at": AT,
            "attempts": 1,
            "last_error": None,
            "urgent": True,
        },
    ),
    (
        Person,
        {
            "id": "p1",
            "role": Role.guardian,
            "given_name": "Ola",
            "family_name": "Nordmann",
            "birth_date": date(1985, 1, 1),
            "protection": Protection.none,
            "email": "ola@example.no",
            "phone": "+4790012345",
            "language": "nb",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
            "consent_guardians": False,
        },
    ),
    (RelationFlags, FLAGS),
    (
        RelationRecord,
        {
            "child_id": "c1",
            "guardian_id": "p1",
            "parental_responsibility": True,
            "daily_care": False,
            "flags": RelationFlags.model_construct(**FLAGS),
        },
    ),
    (
        Device,
        {
            "id": "dev1",
            "token": "tok",
            "fid": None,
            "platform": "android",
            "app_version": "1.2",
            "last_seen": AT,
        },
    ),
]


@pytest.mark.parametrize(("model", "values"), ROWS, ids=[m.__name__ for m, _ in ROWS])
def test_a_row_builds_the_object_model_construct_makes(
    model: type[BaseModel], values: dict[str, Any]
) -> None:
    built = builder(model)(**values)
    expected = model.model_construct(**values)
    assert type(built) is model
    assert built == expected
    assert list(vars(built).items()) == list(vars(expected).items())
    assert built.model_fields_set == expected.model_fields_set
    assert built.model_dump_json() == expected.model_dump_json()
    assert repr(built) == repr(expected)


def test_a_row_without_every_field_gets_model_constructs_defaults() -> None:
    values = dict(ROWS[1][1])
    del values["urgent"]
    built = builder(Job)(**values)
    assert built == Job.model_construct(**values)
    assert built.urgent is False
    assert "urgent" not in built.model_fields_set


def test_a_model_with_aliases_is_refused() -> None:
    class Aliased(BaseModel):
        name: str = Field(alias="Name")

    with pytest.raises(TypeError):
        builder(Aliased)


def _same(built: BaseModel, expected: BaseModel) -> None:
    assert type(built) is type(expected)
    assert built == expected
    assert list(vars(built).items()) == list(vars(expected).items())
    assert built.model_fields_set == expected.model_fields_set
    assert repr(built) == repr(expected)


def test_an_assembled_object_is_the_one_model_construct_makes() -> None:
    values = ROWS[0][1]
    _same(assembler(Delivery)(dict(values)), Delivery.model_construct(**values))


def test_the_sqlite_rows_of_a_delivery_and_a_job_build_what_model_construct_makes() -> None:
    # Their readers spell every field out for assembler(): none may be missing or extra.
    d = {**ROWS[0][1], "not_before": AT, "context": {"children": ["Kari"], "unit": "Å"}}
    row = (
        *(d[k] for k in ("id", "tenant_id", "message_id", "recipient_id")),
        d["recipient_role"].value,
        *(d[k] for k in ("channel", "target", "address", "language")),
        dumps(d["child_ids"]),
        dumps(d["context"]),
        d["status"].value,
        *(d[k] for k in ("reason", "provider_id", "segments", "attempts")),
        us(AT),
        us(AT),
        us(AT),
    )
    _same(_delivery(row), Delivery.model_construct(**d))
    _same(
        _delivery((*row[:16], None, *row[17:])),
        Delivery.model_construct(**{**d, "not_before": None}),
    )
    j = {**ROWS[1][1], "rank": None}
    job_row = (j["id"], j["tenant_id"], j["kind"], j["ref"], us(AT), j["attempts"], None, 1)
    _same(_job(job_row), Job.model_construct(**j))


@pytest.mark.parametrize(
    "value",
    [{"children": ["Åse", "Ola"], "unit": 'Skole "1"\n', "n": [1, 2.5, None, True]}, [], "x", 0],
)
def test_the_stores_json_is_what_json_writes_and_reads(value: Any) -> None:
    text = dumps(value)
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert loads(text) == value == json.loads(text)


def test_text_that_is_no_json_is_a_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads("")
    with pytest.raises(TypeError):
        dumps({"a": object()})
