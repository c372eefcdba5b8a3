"""Every JSON answer of the main routes, from a whole running gateway, is valid against
the operation's response schema in gateway/openapi.json: the response models (which
write the answers) and the document (made from them) cannot drift apart.

Each call names its documented path template; the answer's status must be documented
for that operation, and its body must match that status's schema (JSON Schema 2020-12,
formats checked, no field the document does not name). Errors are checked the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from gateway.clock import ManualClock
from gateway.models import DirectoryBatch
from gateway.settings import Settings
from tests.harness import Gateway, new_tenant, running
from tests.test_attachments import minimal_pdf

SPEC: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "gateway" / "openapi.json").read_text("utf-8")
)


def closed(schema: Any) -> Any:
    """The schema with every object closed: a field the document does not name fails too."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    found = {key: closed(value) for key, value in schema.items()}
    if "properties" in found and "additionalProperties" not in found:
        found["additionalProperties"] = False
    return found


COMPONENTS = closed(SPEC["components"])
DIRECTORY: dict[str, Any] = {
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
        {"id": "p1", "role": "guardian", "given_name": "Ola", "email": "ola@example.no"},
        {
            "id": "t1",
            "role": "staff",
            "given_name": "Tone",
            "email": "t1@example.no",
            "unit_ids": ["u1"],
            "group_ids": ["g1"],
        },
    ],
    "relations": [{"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True}],
}


def schema_of(method: str, template: str, status: int) -> dict[str, Any] | None:
    """The documented JSON schema of this answer; None for a documented bodiless one."""
    responses = SPEC["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template}: {status} is not documented"
    content = responses[str(status)].get("content")
    if content is None:
        return None
    assert "application/json" in content, f"{method} {template} {status}: not JSON"
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


class Api:
    """Calls that check each answer against the document."""

    def __init__(self, gw: Gateway, key: str) -> None:
        self.gw, self.key = gw, key
        self.checked: set[tuple[str, str, int]] = set()

    async def call(
        self,
        method: str,
        template: str,
        status: int,
        *,
        path: dict[str, str] | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> Any:
        url = self.gw.url + template.format(**(path or {}))
        headers = {"Authorization": f"Bearer {token or self.key}"}
        async with self.gw.session.request(method, url, headers=headers, **kwargs) as resp:
            raw = await resp.read()
            assert resp.status == status, raw.decode()
            content_type = resp.content_type
        schema = schema_of(method, template, status)
        self.checked.add((method, template, status))
        if schema is None:
            assert raw == b"", f"{method} {template} {status}: a body where none is documented"
            return None
        assert content_type == "application/json"
        body = json.loads(raw)
        validator = Draft202012Validator(
            {**closed(schema), "components": COMPONENTS}, format_checker=FormatChecker()
        )
        problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
        assert problems == [], f"{method} {template} {status} drifts from the document"
        return body


@pytest.fixture
async def api(settings: Settings, clock: ManualClock, tmp_path: Path) -> AsyncIterator[Api]:
    files = settings.attachments.model_copy(update={"folder": tmp_path / "files"})
    async with running(settings.model_copy(update={"attachments": files}), clock) as gw:
        _, key = await new_tenant(gw.service, clock, DirectoryBatch.model_validate(DIRECTORY))
        yield Api(gw, key)


async def test_operations_and_tenant_routes_answer_as_documented(api: Api) -> None:
    await api.call("GET", "/healthz", 200)
    await api.call("GET", "/readyz", 200)
    # keys
    created = await api.call("POST", "/v1/keys", 201, json={"name": "app", "scopes": ["status"]})
    await api.call("GET", "/v1/keys", 200)
    await api.call("GET", "/v1/keys", 403, token=created["key"])
    await api.call("DELETE", "/v1/keys/{key_id}", 204, path={"key_id": created["id"]})
    await api.call("DELETE", "/v1/keys/{key_id}", 404, path={"key_id": "key_unknown"})
    await api.call("GET", "/v1/keys", 401, token="bbk_not-a-key")
    # settings
    for template in ("/v1/settings/escalation", "/v1/settings/absence"):
        await api.call("GET", template, 200)
        await api.call("PUT", template, 200, json={})
        await api.call("PUT", template, 422, json=[])
    # directory
    extra = {"persons": [{"id": "p9", "role": "guardian", "given_name": "Nina"}]}
    await api.call("POST", "/v1/directory", 200, json=extra)
    await api.call("POST", "/v1/directory", 422, json={"persons": [{"id": "p9"}]})
    await api.call("POST", "/v1/directory/delete", 200, json={"persons": ["p9"]})
    flag = "/v1/relations/{child_id}/{guardian_id}/flags/{flag}"
    ids = {"child_id": "c1", "guardian_id": "p1", "flag": "information_granted"}
    change = {"value": True, "reason": "court order", "actor": "office"}
    await api.call("PUT", flag, 200, path=ids, json=change)
    await api.call("GET", "/v1/persons/{person_id}", 200, path={"person_id": "p1"})
    await api.call("GET", "/v1/persons/{person_id}", 404, path={"person_id": "nobody"})
    protection = "/v1/persons/{person_id}/protection"
    await api.call("GET", protection, 200, path={"person_id": "p1"})
    lowered = {"level": "none", "reason": "checked", "actor": "office"}
    await api.call("PUT", protection, 200, path={"person_id": "p1"}, json=lowered)
    await api.call("POST", "/v1/guardians/{guardian_id}/tokens", 201, path={"guardian_id": "p1"})
    await api.call("POST", "/v1/staff/{staff_id}/tokens", 201, path={"staff_id": "t1"})


async def test_events_status_parent_app_and_webhooks_answer_as_documented(api: Api) -> None:
    endpoint = await api.call(
        "POST", "/v1/webhooks/endpoints", 201, json={"url": "http://127.0.0.1:9/hook"}
    )
    one = {"id": endpoint["id"]}
    await api.call("GET", "/v1/webhooks/endpoints", 200)
    await api.call("GET", "/v1/webhooks/endpoints/{id}", 200, path=one)
    await api.call("PATCH", "/v1/webhooks/endpoints/{id}", 200, path=one, json={"enabled": True})
    await api.call("POST", "/v1/webhooks/endpoints/{id}/rotate-secret", 200, path=one)
    params = {"name": "plan.pdf"}
    pdf = await api.call("POST", "/v1/attachments", 201, params=params, data=minimal_pdf())
    assert "url" not in pdf  # only the parent app's copy says where to download it
    event = {
        "id": "evt-1",
        "type": "message.created",
        "data": {
            "audience": {"groups": ["g1"]},
            "subject": "Tur",
            "body": "Vi går på tur.",
            "attachments": [pdf["id"]],
        },
    }
    accepted = await api.call("POST", "/v1/events", 202, json=event)
    assert {"recipients", "suppressed"} <= accepted.keys()
    assert "deduplicated_into" not in accepted  # absent, never null
    await api.call("POST", "/v1/events", 202, json=event)
    changed = {**event, "data": {**event["data"], "body": "Vi går ikke."}}
    await api.call("POST", "/v1/events", 409, json=changed)
    await api.call("POST", "/v1/events", 422, json={**event, "type": "nope"})
    absence = {
        "id": "evt-abs-1",
        "type": "absence.recorded",
        "data": {
            "child_id": "c1",
            "date": "2026-11-27",
            "lesson": {"number": 2, "from": "08:15", "to": "09:00"},
            "recorded_by": "t1",
        },
    }
    alert = await api.call("POST", "/v1/events", 202, json=absence)
    await api.gw.run()
    message = "/v1/messages/{id}"
    status = await api.call("GET", message, 200, path={"id": accepted["message_id"]})
    assert status["deliveries"], "the message was planned"
    await api.call("GET", message, 404, path={"id": "no-such-message"})
    # the parent app
    tokens = "/v1/guardians/{guardian_id}/tokens"
    token = (await api.call("POST", tokens, 201, path={"guardian_id": "p1"}))["token"]
    page = await api.call("GET", "/v1/me/inbox", 200, token=token, params={"limit": "1"})
    assert page["items"] and page["next_before"] is not None
    await api.call("GET", "/v1/me/inbox", 422, token=token, params={"limit": "0"})
    await api.call("GET", "/v1/me/inbox", 401, token="garbage")
    item = {"message_id": accepted["message_id"]}
    shown = await api.call("GET", "/v1/me/inbox/{message_id}", 200, path=item, token=token)
    assert [a["url"] for a in shown["attachments"]] == [
        f"/v1/me/inbox/{item['message_id']}/files/{pdf['id']}"
    ]
    await api.call("POST", "/v1/me/inbox/{message_id}/read", 200, path=item, token=token)
    reply = "/v1/me/inbox/{message_id}/absence-reply"
    answer = {"kind": "sick", "text": "Feber"}
    await api.call(
        "POST", reply, 200, path={"message_id": alert["message_id"]}, token=token, json=answer
    )
    report = {"child_id": "c1", "date": "2026-11-28", "kind": "sick"}
    await api.call("POST", "/v1/me/absences", 202, token=token, json=report)
    await api.call("GET", "/v1/me/preferences", 200, token=token)
    await api.call("PUT", "/v1/me/preferences", 200, token=token, json={"language": "en"})
    device = {"device_id": "d1"}
    push = {"platform": "android", "token": "fcm-token-1"}
    await api.call("PUT", "/v1/me/devices/{device_id}", 200, path=device, token=token, json=push)
    await api.call("GET", "/v1/me/devices", 200, token=token)
    await api.call("DELETE", "/v1/me/devices/{device_id}", 204, path=device, token=token)
    await api.gw.run()
    # the absence with its explanation, and the webhook outbox
    await api.call("GET", message, 200, path={"id": alert["message_id"]})
    outbox = await api.call("GET", "/v1/webhooks/messages", 200, params={"limit": "1"})
    assert outbox["messages"] and outbox["next_before"] is not None
    await api.call("GET", "/v1/webhooks/messages", 422, params={"status": "nope"})
    first = {"id": outbox["messages"][0]["id"]}
    await api.call("GET", "/v1/webhooks/messages/{id}", 200, path=first)
    await api.call("DELETE", "/v1/webhooks/endpoints/{id}", 204, path=one)


async def test_aiohttp_errors_leave_as_the_documented_error_shape(api: Api) -> None:
    validator = Draft202012Validator({**closed(SPEC["components"]["schemas"]["Error"])})
    async with api.gw.session.delete(f"{api.gw.url}/healthz") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "GET,HEAD"
        body = await resp.json()
    assert body == {"error": "method_not_allowed", "message": "Method Not Allowed"}
    async with api.gw.session.get(f"{api.gw.url}/v1/nowhere") as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body == {"error": "not_found", "message": "Not Found"}
    assert list(validator.iter_errors(body)) == []
