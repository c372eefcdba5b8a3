"""Models the store builds from its own rows (gateway/store/trusted.py): the same objects
``model_construct`` makes, only cheaper."""

from __future__ import annotations

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
from gateway.store.trusted import builder

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
