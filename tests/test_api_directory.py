"""Directory API through the real app and the real SQLite store."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.auth import create_api_key, create_tenant
from gateway.clock import ManualClock
from gateway.models import Audience, RelationFlags, Scope
from gateway.settings import Settings
from gateway.store import Store

# On TODAY "adult" (born 2008-01-15) is 18, "teen" (born 2008-12-24) is 17.
TODAY = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
BATCH: dict[str, Any] = {
    "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
    "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
    "persons": [
        {
            "id": "c1",
            "role": "child",
            "given_name": "Kari",
            "birth_date": "2015-03-01",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        },
        {
            "id": "p1",
            "role": "guardian",
            "given_name": "Ola",
            "family_name": "Nordmann",
            "phone": "900 12 345",
            "email": "ola@example.no",
        },
        {"id": "p2", "role": "guardian", "given_name": "Per"},
        {"id": "s1", "role": "staff", "given_name": "Lærer", "unit_ids": ["u1"]},
        {"id": "l1", "role": "learner", "given_name": "Amir", "birth_date": "1990-05-05"},
        {"id": "adult", "role": "child", "given_name": "Ida", "birth_date": "2008-01-15"},
        {"id": "teen", "role": "child", "given_name": "Ane", "birth_date": "2008-12-24"},
    ],
    "relations": [
        {"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True},
        {"child_id": "c1", "guardian_id": "p2", "parental_responsibility": False},
    ],
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def batch(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(BATCH)
    body.update(changes)
    return body


async def load(app_client: TestClient, api_key: str, body: dict[str, Any] | None = None) -> None:
    resp = await app_client.post("/v1/directory", json=body or BATCH, headers=auth(api_key))
    assert resp.status == 200, await resp.text()


async def flags_of(store: Store, tenant_id: str, child_id: str, guardian_id: str) -> RelationFlags:
    snapshot = await store.load_audience(tenant_id, Audience(children=[child_id]))
    [relation] = [r for r in snapshot.relations if r.guardian_id == guardian_id]
    return relation.flags


async def set_flag(
    app_client: TestClient, api_key: str, flag: str, value: bool, path: str = "c1/p2"
) -> Any:
    return await app_client.put(
        f"/v1/relations/{path}/flags/{flag}",
        json={"value": value, "reason": "court order 2026-114", "actor": "staff:s1"},
        headers=auth(api_key),
    )


# --------------------------------------------------------------------------- import


async def test_batch_is_applied_and_phone_normalised_to_e164(app_client, tenant) -> None:
    resp = await app_client.post("/v1/directory", json=BATCH, headers=auth(tenant.api_key))
    assert resp.status == 200
    applied = (await resp.json())["applied"]
    assert applied["persons"] == 7
    assert applied["relations"] == 2

    resp = await app_client.get("/v1/persons/p1", headers=auth(tenant.api_key))
    assert resp.status == 200
    person = await resp.json()
    assert person["phone"] == "+4790012345"
    assert person["email"] == "ola@example.no"
    assert person["role"] == "guardian"


async def test_one_bad_row_rejects_the_whole_batch(app_client, tenant) -> None:
    persons = copy.deepcopy(BATCH["persons"])
    persons[3]["phone"] = "555 12"
    resp = await app_client.post(
        "/v1/directory", json=batch(persons=persons), headers=auth(tenant.api_key)
    )
    assert resp.status == 422
    body = await resp.json()
    assert body["error"] == "validation_failed"
    [error] = body["errors"]
    assert error["loc"] == ["persons", 3, "phone"]
    assert "not a valid phone number" in error["message"]
    assert "555" not in await resp.text()  # the bad value is not echoed
    for person_id in ("c1", "p1"):
        resp = await app_client.get(f"/v1/persons/{person_id}", headers=auth(tenant.api_key))
        assert resp.status == 404


async def test_invalid_email_is_422_naming_the_row(app_client, tenant) -> None:
    persons = copy.deepcopy(BATCH["persons"])
    persons[2]["email"] = "per@@example"
    resp = await app_client.post(
        "/v1/directory", json=batch(persons=persons), headers=auth(tenant.api_key)
    )
    assert resp.status == 422
    [error] = (await resp.json())["errors"]
    assert error["loc"] == ["persons", 2, "email"]
    assert "per@@" not in await resp.text()


async def test_an_impossible_birth_date_is_422_naming_the_row(app_client, tenant) -> None:
    """A typo in a year is not harmless: 2099 keeps a child a minor for ever, 1815 makes
    them an adult pupil whose guardians are no longer told. Today is fine."""
    persons = copy.deepcopy(BATCH["persons"])
    persons[0]["birth_date"] = "2099-03-01"
    persons[1]["birth_date"] = "1815-03-01"
    resp = await app_client.post(
        "/v1/directory", json=batch(persons=persons), headers=auth(tenant.api_key)
    )
    assert resp.status == 422
    errors = (await resp.json())["errors"]
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["persons", 0, "birth_date"], "implausible_date"),
        (["persons", 1, "birth_date"], "implausible_date"),
    ]
    assert [e["message"] for e in errors] == [
        "the birth date is in the future",
        "the birth date is before 1900",
    ]
    assert "2099" not in await resp.text()
    resp = await app_client.get(f"/v1/persons/{persons[0]['id']}", headers=auth(tenant.api_key))
    assert resp.status == 404
    persons[0]["birth_date"] = "2026-11-27"  # born today (the test clock's day)
    persons[1]["birth_date"] = "1900-01-01"
    resp = await app_client.post(
        "/v1/directory", json=batch(persons=persons), headers=auth(tenant.api_key)
    )
    assert resp.status == 200, await resp.text()


async def test_a_missing_or_empty_field_is_said_in_plain_words(app_client, tenant) -> None:
    """Not pydantic's "Field required" and "String should have at least 1 character"."""
    persons = copy.deepcopy(BATCH["persons"])
    persons[1]["given_name"] = ""
    del persons[2]["role"]
    resp = await app_client.post(
        "/v1/directory", json=batch(persons=persons), headers=auth(tenant.api_key)
    )
    assert resp.status == 422
    errors = {tuple(e["loc"]): e["message"] for e in (await resp.json())["errors"]}
    assert errors == {
        ("persons", 1, "given_name"): "must not be empty",
        ("persons", 2, "role"): "missing",
    }


async def test_referential_error_is_422_and_writes_nothing(app_client, tenant) -> None:
    relations = [*BATCH["relations"], {"child_id": "c1", "guardian_id": "nobody"}]
    resp = await app_client.post(
        "/v1/directory", json=batch(relations=relations), headers=auth(tenant.api_key)
    )
    assert resp.status == 422
    errors = (await resp.json())["errors"]
    assert ["relations", 2, "guardian_id"] in [e["loc"] for e in errors]
    resp = await app_client.get("/v1/persons/p1", headers=auth(tenant.api_key))
    assert resp.status == 404


async def test_malformed_json_and_unknown_fields_are_422(app_client, tenant) -> None:
    resp = await app_client.post("/v1/directory", data=b"{not json", headers=auth(tenant.api_key))
    assert resp.status == 422
    resp = await app_client.post("/v1/directory", json={"pupils": []}, headers=auth(tenant.api_key))
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["pupils"]


async def test_batch_preferences_cannot_switch_emergency_off(app_client, tenant) -> None:
    prefs = {"p1": {"channels": {"emergency": [], "general": []}}}
    resp = await app_client.post(
        "/v1/directory", json=batch(preferences=prefs), headers=auth(tenant.api_key)
    )
    assert resp.status == 422
    [error] = (await resp.json())["errors"]
    assert error["loc"] == ["preferences", "p1", "channels", "emergency"]


async def test_directory_requires_an_api_key(app_client, tenant) -> None:
    resp = await app_client.post("/v1/directory", json=BATCH)
    assert resp.status == 401
    resp = await app_client.post("/v1/directory", json=BATCH, headers=auth("bbk_wrong"))
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"


# --------------------------------------------------------------------------- flags


async def test_reimport_keeps_blocked_and_granted_flags(app_client, tenant, store) -> None:
    await load(app_client, tenant.api_key)
    resp = await set_flag(app_client, tenant.api_key, "blocked", True)
    assert resp.status == 200
    assert (await resp.json())["blocked"] is True
    resp = await set_flag(app_client, tenant.api_key, "information_granted", True)
    assert resp.status == 200
    flags = await resp.json()
    assert flags["information_granted"] is True
    assert flags["information_reason"] == "court order 2026-114"
    assert flags["updated_by"] == "staff:s1"

    # the platform re-imports the relation, even changing it: the flags stay
    relations = copy.deepcopy(BATCH["relations"])
    relations[1]["daily_care"] = True
    await load(app_client, tenant.api_key, batch(relations=relations))
    after = await flags_of(store, tenant.tenant.id, "c1", "p2")
    assert after.blocked is True
    assert after.information_granted is True


async def test_an_upsert_cannot_carry_flags(app_client, tenant, store) -> None:
    await load(app_client, tenant.api_key)
    assert (await set_flag(app_client, tenant.api_key, "blocked", True)).status == 200
    relations = copy.deepcopy(BATCH["relations"])
    relations[1]["blocked"] = False
    resp = await app_client.post(
        "/v1/directory", json=batch(relations=relations), headers=auth(tenant.api_key)
    )
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["relations", 1, "blocked"]
    assert (await flags_of(store, tenant.tenant.id, "c1", "p2")).blocked is True


async def test_flag_change_requires_a_reason(app_client, tenant, store) -> None:
    await load(app_client, tenant.api_key)
    for body in (
        {"value": True, "actor": "staff:s1"},
        {"value": True, "reason": "", "actor": "staff:s1"},
        {"value": False, "reason": "  ", "actor": "staff:s1"},
    ):
        resp = await app_client.put(
            "/v1/relations/c1/p2/flags/blocked", json=body, headers=auth(tenant.api_key)
        )
        assert resp.status == 422
        assert (await resp.json())["errors"][0]["loc"] == ["reason"]
    assert (await flags_of(store, tenant.tenant.id, "c1", "p2")).blocked is False


async def test_flag_can_be_cleared_and_records_when(app_client, tenant, store, clock) -> None:
    await load(app_client, tenant.api_key)
    await set_flag(app_client, tenant.api_key, "information_granted", True)
    clock.advance(60)
    resp = await set_flag(app_client, tenant.api_key, "information_granted", False)
    assert resp.status == 200
    flags = await flags_of(store, tenant.tenant.id, "c1", "p2")
    assert flags.information_granted is False
    assert flags.updated_at == clock.now()


async def test_a_privacy_officer_reads_who_set_a_flag_when_and_why(
    app_client, tenant, store, clock
) -> None:
    """The history was kept but nobody could read it; setting a flag again replaced the
    reason shown, so the court order's was only in a hidden table."""
    await load(app_client, tenant.api_key)
    await set_flag(app_client, tenant.api_key, "blocked", True)
    first = clock.now()
    clock.advance(3600)
    resp = await app_client.put(
        "/v1/relations/c1/p2/flags/blocked",
        json={"value": True, "reason": "recheck", "actor": "staff:s2"},
        headers=auth(tenant.api_key),
    )
    assert resp.status == 200
    resp = await app_client.get("/v1/relations/c1/p2/flags", headers=auth(tenant.api_key))
    assert resp.status == 200
    body = await resp.json()
    assert (body["relation"], body["flags"]["blocked"], body["flags"]["blocked_reason"]) == (
        True,
        True,
        "recheck",
    )
    assert [(h["flag"], h["value"], h["reason"], h["actor"]) for h in body["history"]] == [
        ("blocked", True, "court order 2026-114", "staff:s1"),
        ("blocked", True, "recheck", "staff:s2"),
    ]
    assert body["history"][0]["at"] == first.isoformat()
    # the relation deleted: the flags and their history stay readable
    resp = await app_client.post(
        "/v1/directory/delete",
        json={"relations": [{"child_id": "c1", "guardian_id": "p2"}]},
        headers=auth(tenant.api_key),
    )
    assert resp.status == 200, await resp.text()
    body = await (
        await app_client.get("/v1/relations/c1/p2/flags", headers=auth(tenant.api_key))
    ).json()
    assert (body["relation"], body["flags"], len(body["history"])) == (False, None, 2)
    # the guardian deleted too: they may have been protected, so the history (a court
    # order's reason) is for the protected scope alone now
    resp = await app_client.post(
        "/v1/directory/delete", json={"persons": ["p2"]}, headers=auth(tenant.api_key)
    )
    assert resp.status == 200, await resp.text()
    resp = await app_client.get("/v1/relations/c1/p2/flags", headers=auth(tenant.api_key))
    assert resp.status == 403 and "court order" not in await resp.text()
    _, key = await create_api_key(
        store, tenant.tenant.id, [Scope.directory, Scope.protected], datetime.now(UTC)
    )
    resp = await app_client.get("/v1/relations/c1/p2/flags", headers=auth(key))
    assert resp.status == 200 and len((await resp.json())["history"]) == 2
    # a relation of persons nobody knows, with no flag ever set: 404
    resp = await app_client.get("/v1/relations/c1/nobody/flags", headers=auth(tenant.api_key))
    assert resp.status == 404


async def test_a_flag_history_with_a_protected_person_needs_the_protected_scope(
    app_client, tenant, store
) -> None:
    body = batch()
    body["persons"][2]["protection"] = "confidential"  # p2, the guardian
    await load(app_client, tenant.api_key, body)
    await set_flag(app_client, tenant.api_key, "blocked", True)
    resp = await app_client.get("/v1/relations/c1/p2/flags", headers=auth(tenant.api_key))
    assert resp.status == 403
    assert "court order" not in await resp.text()
    _, key = await create_api_key(
        store, tenant.tenant.id, [Scope.directory, Scope.protected], datetime.now(UTC)
    )
    resp = await app_client.get("/v1/relations/c1/p2/flags", headers=auth(key))
    assert resp.status == 200
    assert (await resp.json())["history"][0]["reason"] == "court order 2026-114"


async def test_a_protected_guardians_app_token_needs_the_protected_scope(
    app_client, tenant, store
) -> None:
    """A key refused the protected guardian's record got their token, and with it their
    inbox (children, schools) and the right to register a device for their pushes."""
    body = batch()
    body["persons"][2]["protection"] = "confidential"  # p2, the guardian
    await load(app_client, tenant.api_key, body)
    resp = await app_client.post("/v1/guardians/p2/tokens", headers=auth(tenant.api_key))
    assert resp.status == 403
    assert "protected scope" in (await resp.json())["message"]
    _, key = await create_api_key(
        store, tenant.tenant.id, [Scope.directory, Scope.protected], datetime.now(UTC)
    )
    resp = await app_client.post("/v1/guardians/p2/tokens", headers=auth(key))
    assert resp.status == 201
    # an unprotected guardian's token needs no more than before
    resp = await app_client.post("/v1/guardians/p1/tokens", headers=auth(tenant.api_key))
    assert resp.status == 201


async def test_unknown_flag_and_unknown_person_are_404(app_client, tenant) -> None:
    await load(app_client, tenant.api_key)
    resp = await set_flag(app_client, tenant.api_key, "protected", True)
    assert resp.status == 404
    assert resp.content_type == "application/json"
    resp = await set_flag(app_client, tenant.api_key, "blocked", True, path="c1/nobody")
    assert resp.status == 404


# --------------------------------------------------------------------------- deletion


async def test_delete_removes_rows_and_unknown_ids_are_422(app_client, tenant) -> None:
    await load(app_client, tenant.api_key)
    resp = await app_client.post(
        "/v1/directory/delete", json={"persons": ["p2", "nobody"]}, headers=auth(tenant.api_key)
    )
    assert resp.status == 422
    resp = await app_client.get("/v1/persons/p2", headers=auth(tenant.api_key))
    assert resp.status == 200  # nothing deleted

    resp = await app_client.post(
        "/v1/directory/delete", json={"persons": ["p2"]}, headers=auth(tenant.api_key)
    )
    assert resp.status == 200
    assert (await resp.json())["deleted"]["persons"] == 1
    resp = await app_client.get("/v1/persons/p2", headers=auth(tenant.api_key))
    assert resp.status == 404


# --------------------------------------------------------------------------- tenants


async def test_other_tenant_cannot_read_or_flag(app_client, tenant, store, clock) -> None:
    await load(app_client, tenant.api_key)
    _, key_b, _ = await create_tenant(store, "Bærum kommune", clock.now())

    resp = await app_client.get("/v1/persons/p1", headers=auth(key_b))
    assert resp.status == 404
    resp = await set_flag(app_client, key_b, "blocked", True)
    assert resp.status == 404
    resp = await app_client.post("/v1/guardians/p1/tokens", headers=auth(key_b))
    assert resp.status == 404
    assert (await flags_of(store, tenant.tenant.id, "c1", "p2")).blocked is False


# --------------------------------------------------------------------------- guardian tokens


@pytest.mark.parametrize("person_id", ["p1", "l1", "adult"])
async def test_token_for_app_users(
    app_client, tenant, clock: ManualClock, settings: Settings, person_id: str
) -> None:
    clock.set(TODAY)
    await load(app_client, tenant.api_key)
    resp = await app_client.post(f"/v1/guardians/{person_id}/tokens", headers=auth(tenant.api_key))
    assert resp.status == 201
    body = await resp.json()
    assert body["token"]
    expected = clock.now() + timedelta(seconds=settings.guardian_token_ttl)
    assert datetime.fromisoformat(body["expires_at"]) == expected


@pytest.mark.parametrize("person_id", ["s1", "c1", "teen"])
async def test_no_token_for_staff_or_minors(
    app_client, tenant, clock: ManualClock, person_id: str
) -> None:
    clock.set(TODAY)
    await load(app_client, tenant.api_key)
    resp = await app_client.post(f"/v1/guardians/{person_id}/tokens", headers=auth(tenant.api_key))
    assert resp.status == 403


async def test_no_token_for_a_guardian_blocked_on_every_relation(app_client, tenant) -> None:
    body = batch()
    body["relations"].append({"child_id": "adult", "guardian_id": "p1"})
    await load(app_client, tenant.api_key, body)
    block = {"value": True, "reason": "Court order 2026-11-01", "actor": "rektor"}
    for child in ("c1", "adult"):
        resp = await app_client.put(
            f"/v1/relations/{child}/p1/flags/blocked", json=block, headers=auth(tenant.api_key)
        )
        assert resp.status == 200
        # One relation still open: the guardian may still be told (named, or about it).
        resp = await app_client.post("/v1/guardians/p1/tokens", headers=auth(tenant.api_key))
        assert resp.status == (201 if child == "c1" else 403)
    body = await resp.json()
    assert body["message"] == (
        "this guardian is blocked on every relation and may not use the parent app"
    )
    # Without parental responsibility but not blocked: may still be named in a message.
    resp = await app_client.post("/v1/guardians/p2/tokens", headers=auth(tenant.api_key))
    assert resp.status == 201


async def test_no_token_for_unknown_person(app_client, tenant) -> None:
    resp = await app_client.post("/v1/guardians/nobody/tokens", headers=auth(tenant.api_key))
    assert resp.status == 404


async def test_guardian_token_is_refused_on_tenant_routes(app_client, tenant) -> None:
    await load(app_client, tenant.api_key)
    resp = await app_client.post("/v1/guardians/p1/tokens", headers=auth(tenant.api_key))
    token = (await resp.json())["token"]
    for method, path in (
        ("GET", "/v1/persons/p1"),
        ("POST", "/v1/directory"),
        ("POST", "/v1/guardians/p1/tokens"),
        ("PUT", "/v1/relations/c1/p1/flags/blocked"),
    ):
        resp = await app_client.request(method, path, json=BATCH, headers=auth(token))
        assert resp.status == 401, path


async def test_a_protected_person_needs_the_protected_scope(app_client, tenant, store) -> None:
    body = batch()
    body["persons"][1]["protection"] = "strictly_confidential"
    resp = await app_client.post("/v1/directory", json=body, headers=auth(tenant.api_key))
    assert resp.status == 200
    resp = await app_client.get("/v1/persons/p1", headers=auth(tenant.api_key))
    assert resp.status == 403
    assert "Ola" not in await resp.text() and "+4790012345" not in await resp.text()
    assert (await app_client.get("/v1/persons/p2", headers=auth(tenant.api_key))).status == 200
    _, key = await create_api_key(
        store, tenant.tenant.id, [Scope.directory, Scope.protected], datetime.now(UTC)
    )
    resp = await app_client.get("/v1/persons/p1", headers=auth(key))
    assert resp.status == 200
    assert (await resp.json())["phone"] == "+4790012345"
