"""A directory batch of 100,000 persons does not hold the event loop: /healthz answers
while it is validated and applied (the real server, a raw socket for the batch)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.models import DirectoryBatch
from gateway.settings import Settings
from tests.harness import Gateway, new_tenant, running

pytestmark = pytest.mark.slow

PERSONS = 100_000


def big_batch(*, last_phone: str) -> bytes:
    persons: list[dict[str, Any]] = []
    relations = []
    for i in range(PERSONS // 2):
        persons.append(
            {"id": f"c{i}", "role": "child", "given_name": "Kari", "birth_date": "2015-03-01",
             "unit_ids": ["u1"], "group_ids": [f"g{i % 100}"]}
        )  # fmt: skip
        persons.append({"id": f"p{i}", "role": "guardian", "given_name": "Ola"})
        relations.append({"child_id": f"c{i}", "guardian_id": f"p{i}"})
    persons[-1]["phone"] = last_phone
    return json.dumps(
        {
            "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
            "groups": [
                {"id": f"g{i}", "unit_id": "u1", "kind": "class", "name": f"{i}A"}
                for i in range(100)
            ],
            "persons": persons,
            "relations": relations,
        }
    ).encode()


async def order_of_answers(gw: Gateway, key: str, body: bytes) -> tuple[list[str], int]:
    """Post ``body`` to /v1/directory; once its last byte is sent, ask /healthz. The order
    in which the two answers arrived, and the batch's status."""
    port = int(gw.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /v1/directory HTTP/1.1\r\nHost: budbringer\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body[:-1])
    await writer.drain()
    await asyncio.sleep(0.5)  # the server has read all but the last byte
    answers: list[str] = []

    async def batch() -> int:
        writer.write(body[-1:])  # now the server parses, validates and applies
        await writer.drain()
        status_line = await reader.readline()
        answers.append("batch")
        return int(status_line.split()[1])

    async def healthz() -> None:
        await asyncio.sleep(0.2)  # the server is busy with the batch by now
        async with gw.session.get(f"{gw.url}/healthz") as resp:
            assert resp.status == 200
        answers.append("healthz")

    status, _ = await asyncio.gather(batch(), healthz())
    writer.close()
    return answers, status


async def test_healthz_answers_while_a_100k_batch_is_validated_and_applied(
    settings: Settings, clock: ManualClock
) -> None:
    async with running(settings, clock) as gw:
        tenant, key = await new_tenant(gw.service, clock, DirectoryBatch())
        # Refused at its very last person after validating the rest: all of it is CPU.
        answers, status = await order_of_answers(gw, key, big_batch(last_phone="not a phone"))
        assert status == 422
        assert answers == ["healthz", "batch"]
        # Valid: validated, checked and written.
        answers, status = await order_of_answers(gw, key, big_batch(last_phone="+4790012345"))
        assert status == 200
        assert answers == ["healthz", "batch"]
        person = await gw.service.store.get_person(tenant.id, f"p{PERSONS // 2 - 1}")
        assert person is not None and person.phone == "+4790012345"
