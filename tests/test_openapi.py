"""The OpenAPI document: in sync with the routes and models, and true of the running app."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from gateway.api.app import ROUTES, RouteModule, create_app
from gateway.api.context import CTX, AppContext
from gateway.api.spec import Route
from gateway.auth import create_tenant
from gateway.clock import ManualClock
from gateway.models import DirectoryBatch
from gateway.settings import Settings
from scripts import gen_openapi

SPEC_FILE = Path(__file__).resolve().parents[1] / "gateway" / "openapi.json"
SPEC: dict[str, Any] = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
METHODS = {"get", "put", "post", "delete", "patch"}
SECRET_KEY = "live-secret-key-that-is-long-enough-0123456789"
DIRECTORY: dict[str, Any] = {
    "units": [{"id": "u1", "kind": "school", "name": "Solvang skole"}],
    "groups": [{"id": "g1", "unit_id": "u1", "kind": "class", "name": "5A"}],
    "persons": [
        {
            "id": "c1",
            "role": "child",
            "given_name": "Kari",
            "birth_date": "2015-03-01",
            "group_ids": ["g1"],
            "unit_ids": ["u1"],
        },
    ],
}


def test_committed_document_is_what_the_generator_makes() -> None:
    assert SPEC_FILE.read_text(encoding="utf-8") == gen_openapi.render(), (
        "gateway/openapi.json is stale: run .venv/bin/python -m scripts.gen_openapi"
    )


def test_every_route_is_documented_and_every_documented_route_exists(
    settings: Settings, clock: ManualClock
) -> None:
    # The routes only: no store is touched while building the app.
    ctx = AppContext(settings=settings, store=None, clock=clock)  # type: ignore[arg-type]
    app = create_app(ctx)
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method.lower() in METHODS
    }
    documented = {
        (method, path)
        for path, item in SPEC["paths"].items()
        for method in item
        if method in METHODS
    }
    assert routes - documented == set(), "routes missing from openapi.json"
    assert documented - routes == set(), "openapi.json documents routes the app lacks"


def _registered(setup: Callable[[web.Application], None], ctx: AppContext) -> set[Route]:
    app = web.Application()
    app[CTX] = ctx
    setup(app)
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method.lower() in METHODS
    }


@pytest.mark.parametrize("module", ROUTES, ids=lambda module: module.__name__.rsplit(".")[-1])
def test_each_module_describes_exactly_the_routes_it_registers(
    module: RouteModule, settings: Settings, clock: ManualClock
) -> None:
    # The description lives beside the handler: a route registered in one module and
    # described in another (or not at all) fails here, as does a stale description.
    ctx = AppContext(settings=settings, store=None, clock=clock)  # type: ignore[arg-type]
    registered = _registered(module.setup, ctx)
    described = set(module.OPERATIONS)
    assert registered - described == set(), "registered but not in OPERATIONS"
    assert described - registered == set(), "in OPERATIONS but not registered"


def test_document_is_valid_openapi_for_schemathesis() -> None:
    schema = schemathesis.openapi.from_dict(SPEC)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(
        1 for item in SPEC["paths"].values() for method in item if method in METHODS
    )


# --------------------------------------------------------------------------- live app


@dataclass
class Live:
    url: str
    api_key: str
    message_id: str


def _serve(tmp: Path, ready: threading.Event, box: dict[str, Any]) -> None:
    """Run the app with a real SQLite store on 127.0.0.1 in this thread's own loop."""
    from gateway.store.sqlite import SqliteStore

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        settings = Settings(
            store_url=f"sqlite:///{tmp / 'live.db'}",
            outbox_dir=tmp / "outbox",
            secret_key=SECRET_KEY,
        )
        clock = ManualClock()
        store = SqliteStore(str(settings.sqlite_path))
        await store.open()
        tenant, api_key, _ = await create_tenant(store, "Asker kommune", clock.now())
        await store.apply_directory(tenant.id, DirectoryBatch.model_validate(DIRECTORY))
        ctx = AppContext(settings=settings, store=store, clock=clock, secret=SECRET_KEY.encode())
        runner = web.AppRunner(create_app(ctx))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        box["live"] = Live(f"http://{host}:{port}", api_key, "")
        box["stop"] = stop
        box["loop"] = asyncio.get_running_loop()
        ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await store.close()

    try:
        loop.run_until_complete(main())
    except BaseException as exc:
        box["error"] = exc
        ready.set()
    finally:
        loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    import requests

    ready = threading.Event()
    box: dict[str, Any] = {}
    thread = threading.Thread(
        target=_serve, args=(tmp_path_factory.mktemp("live"), ready, box), daemon=True
    )
    thread.start()
    assert ready.wait(30), "the live app did not start"
    if "error" in box:
        raise box["error"]
    live: Live = box["live"]
    event = {
        "id": "evt-live",
        "type": "message.created",
        "data": {"audience": {"groups": ["g1"]}, "subject": "Tur", "body": "Vi går på tur."},
    }
    resp = requests.post(
        f"{live.url}/v1/events",
        json=event,
        headers={"Authorization": f"Bearer {live.api_key}"},
        timeout=10,
    )
    assert resp.status_code == 202, resp.text
    live.message_id = resp.json()["message_id"]
    try:
        yield live
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


FUZZED = schemathesis.openapi.from_dict(SPEC).include(
    tag=["events", "status", "operations", "pages"]
)
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def test_known_message_status_conforms(live: Live) -> None:
    case = FUZZED["/v1/messages/{id}"]["GET"].Case(path_parameters={"id": live.message_id})
    response = case.call_and_validate(
        base_url=live.url, headers={"Authorization": f"Bearer {live.api_key}"}, checks=CHECKS
    )
    assert response.status_code == 200


def test_documented_event_example_is_accepted(live: Live) -> None:
    operation = FUZZED["/v1/events"]["POST"]
    example = SPEC["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    case = operation.Case(body=example["example"], media_type="application/json")
    response = case.call_and_validate(
        base_url=live.url, headers={"Authorization": f"Bearer {live.api_key}"}, checks=CHECKS
    )
    assert response.status_code == 202
    assert response.json()["event_id"] == example["example"]["id"]


def test_fuzzed_requests_never_fail_the_server_or_the_document(live: Live) -> None:
    @given(
        case=st.one_of(
            FUZZED.as_strategy(GenerationMode.POSITIVE),
            FUZZED.as_strategy(GenerationMode.NEGATIVE),
        )
    )
    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        headers = {"Authorization": f"Bearer {live.api_key}"}
        case.call_and_validate(base_url=live.url, headers=headers, checks=CHECKS)

    run()
