"""The backend-neutral audience rules (gateway/store/audience.py) that need no store:
the contact kinds still failing, and a checked read that refuses rather than tears.
Expansion itself runs on every backend in tests/contract/test_audience.py."""

from __future__ import annotations

import pytest

from gateway.errors import StoreError
from gateway.models import Person, Role
from gateway.store.audience import SNAPSHOT_TRIES, checked, failing


def _person(email: str | None, phone: str | None) -> Person:
    return Person(id="p1", role=Role.guardian, given_name="A", email=email, phone=phone)


def test_a_failure_counts_only_for_the_current_address() -> None:
    failed = {"p1": {"email": "old@example.no", "phone": "+4791234567"}}
    assert failing({"p1": _person("old@example.no", "+4791234567")}, failed) == {
        "p1": ["email", "phone"]
    }
    assert failing({"p1": _person("new@example.no", "+4791234567")}, failed) == {"p1": ["phone"]}
    assert failing({"p1": _person(None, None)}, failed) == {}
    assert failing({"p2": _person("old@example.no", None)}, failed) == {}


async def test_checked_read_returns_the_first_undisturbed_read() -> None:
    answers = iter([None, None, "snapshot"])
    calls: list[int] = []

    async def once() -> str | None:
        calls.append(1)
        return next(answers)

    assert await checked(once) == "snapshot"
    assert len(calls) == 3


async def test_checked_read_refuses_a_directory_that_keeps_changing() -> None:
    calls: list[int] = []

    async def once() -> str | None:
        calls.append(1)
        return None

    with pytest.raises(StoreError, match="kept changing"):
        await checked(once)
    assert len(calls) == SNAPSHOT_TRIES
