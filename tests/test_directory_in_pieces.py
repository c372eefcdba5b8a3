"""A big directory body is parsed and validated in pieces, and a batch is written in
chunks that let other work in (gateway/api/body_slices.py, store/directory_apply.py).

The body tests post bodies over the size from which they are taken in pieces
(``PIECES_FROM_BYTES``), so the errors come from the sliced path; they must name the
same rows as one validation of the whole body. The chunk test posts a real event
through the running gateway at a chunk boundary of a batch being written.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.api.body_slices import PIECES_FROM_BYTES, SLICE
from gateway.clock import ManualClock
from gateway.models import Audience, DirectoryBatch
from gateway.settings import Settings
from tests.harness import new_tenant, running

SEED = {
    "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
    "persons": [
        {"id": "seed-c", "role": "child", "given_name": "Kari", "birth_date": "2015-03-01",
         "unit_ids": ["u1"]},
        {"id": "seed-p", "role": "guardian", "given_name": "Ola", "email": "ola@example.org"},
    ],
    "relations": [{"child_id": "seed-c", "guardian_id": "seed-p"}],
}  # fmt: skip


def families(count: int) -> dict[str, Any]:
    persons: list[dict[str, Any]] = []
    relations = []
    for i in range(count):
        persons.append(
            {"id": f"c{i}", "role": "child", "given_name": "Kari", "birth_date": "2015-03-01",
             "unit_ids": ["u1"]}
        )  # fmt: skip
        persons.append({"id": f"p{i}", "role": "guardian", "given_name": "Ola",
                        "phone": f"+4790{i:06d}"})  # fmt: skip
        relations.append({"child_id": f"c{i}", "guardian_id": f"p{i}"})
    return {"persons": persons, "relations": relations}


def big(body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    assert len(raw) > PIECES_FROM_BYTES  # taken in pieces
    return raw


def event(number: int) -> dict[str, Any]:
    return {
        "id": f"during-{number}",
        "type": "message.created",
        "data": {
            "audience": {"children": ["seed-c"]},
            "category": "general",
            "subject": "Foreldremøte",
            "body": "Torsdag kl. 18.",
        },
    }


async def test_sliced_validation_names_the_rows_of_the_whole_body(
    settings: Settings, clock: ManualClock
) -> None:
    body = families(2_000)
    persons, relations = body["persons"], body["relations"]
    persons[3]["phone"] = "555 12"  # first slice
    persons[SLICE * 7 + 1]["email"] = "per@@example"  # a later slice, at its start + 1
    persons[-1]["shoe_size"] = 44  # the last row of the last slice
    relations[SLICE - 1]["parental_responsibility"] = "yes"  # a slice's last row
    body["preferences"] = {"p9": {"channels": {"general": ["pigeon"]}}}
    body["colour"] = "blue"  # not a field
    async with running(settings, clock) as gw:
        _, key = await new_tenant(gw.service, clock, DirectoryBatch())
        async with gw.session.post(
            f"{gw.url}/v1/directory", data=big(body), headers=_auth(key)
        ) as resp:
            assert resp.status == 422
            text = await resp.text()
    errors = json.loads(text)["errors"]
    assert [e["loc"] for e in errors] == [
        ["persons", 3, "phone"],
        ["persons", SLICE * 7 + 1, "email"],
        ["persons", len(persons) - 1, "shoe_size"],
        ["relations", SLICE - 1, "parental_responsibility"],
        ["preferences", "p9", "channels", "general", 0],
        ["colour"],
    ]
    assert "555" not in text and "per@@" not in text  # values are never echoed


async def test_a_big_body_that_is_not_json_or_too_deep_is_refused_with_where(
    settings: Settings, clock: ManualClock
) -> None:
    good = json.dumps(families(1_500))
    cut = good[:-40]  # ends inside the relations
    deep = good[:-2] + ", " + "[" * 40 + "]" * 40 + "]}"  # one relation nested 42 deep
    async with running(settings, clock) as gw:
        _, key = await new_tenant(gw.service, clock, DirectoryBatch())
        answers = []
        for raw in (cut, deep):
            async with gw.session.post(
                f"{gw.url}/v1/directory", data=raw.encode(), headers=_auth(key)
            ) as resp:
                answers.append((resp.status, (await resp.json())["errors"][0]["type"]))
    assert answers == [(422, "json_invalid"), (400, "json_too_deep")]


async def test_a_big_body_with_a_key_twice_or_a_control_character_is_400(
    settings: Settings, clock: ManualClock
) -> None:
    """The sliced path keeps the whole body's rules: a top-level key twice (the second
    "persons" would replace the first), a key twice within a row, a NUL in a name."""
    good = json.dumps(families(1_500))
    twice_top = good[:-1] + ', "persons": []}'
    twice_row = good.replace('"given_name": "Ola"', '"given_name": "Ola", "given_name": "Per"', 1)
    control = good.replace('"given_name": "Ola"', '"given_name": "Ola\\u0000"', 1)
    async with running(settings, clock) as gw:
        tenant, key = await new_tenant(gw.service, clock, DirectoryBatch())
        answers = []
        for raw in (twice_top, twice_row, control):
            assert len(raw) > PIECES_FROM_BYTES
            async with gw.session.post(
                f"{gw.url}/v1/directory", data=raw.encode(), headers=_auth(key)
            ) as resp:
                answers.append((resp.status, (await resp.json())["errors"][0]["type"]))
        snapshot = await gw.service.store.load_audience(tenant.id, Audience(units=["u1"]))
    assert answers == [(400, "duplicate_key"), (400, "duplicate_key"), (400, "control_character")]
    assert snapshot.audience_children == []  # nothing of them was applied


async def test_an_event_is_accepted_between_two_chunks_of_a_batch(
    settings: Settings, clock: ManualClock
) -> None:
    async with running(settings, clock) as gw:
        tenant, key = await new_tenant(gw.service, clock, DirectoryBatch.model_validate(SEED))
        batch = DirectoryBatch.model_validate(families(300))
        answers: list[int] = []
        messages: list[str] = []

        async def post_event() -> None:
            number = len(answers)
            async with gw.session.post(
                f"{gw.url}/v1/events", json=event(number), headers=_auth(key)
            ) as resp:
                accepted = await resp.json()
                answers.append(resp.status)
                messages.append(accepted["message_id"])

        # At every chunk boundary a real event goes through the gateway and is answered
        # before the next chunk is written. With the writer held across the whole batch
        # (one transaction) it could not be: the wait would time out.
        async def boundary() -> None:
            await asyncio.wait_for(post_event(), timeout=30)

        counts = await gw.service.store.apply_directory(
            tenant.id, batch, chunk_rows=100, on_chunk=boundary
        )
        assert counts["persons"] == 600
        assert answers == [202] * 9  # 6 chunks of persons, 3 of relations
        # The batch is there in full, and so is every message.
        snapshot = await gw.service.store.load_audience(tenant.id, Audience(units=["u1"]))
        assert len(snapshot.audience_children) == 301
        for message_id in messages:
            assert await gw.service.store.get_message(tenant.id, message_id) is not None


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
