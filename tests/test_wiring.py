"""Explicit wiring: one registry of job handlers that refuses a kind handled twice, and
one instance of each flow object, in the app context, wired as the service wires it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway import constants
from gateway.clock import ManualClock
from gateway.dispatcher import Dispatcher
from gateway.errors import ConfigError
from gateway.escalation import Escalator, step_job
from gateway.jobs import registry
from gateway.models import Audience, Category, Job, Message
from gateway.render import Renderer
from gateway.service import TEMPLATES_DIR, Service
from gateway.settings import EscalationSettings, Settings
from gateway.store import Store
from tests.harness import running


async def _one(job: Job) -> None:
    return None


async def _other(job: Job) -> None:
    return None


def test_the_registry_refuses_a_kind_handled_twice() -> None:
    with pytest.raises(ConfigError, match="escalate"):
        registry({constants.JOB_ESCALATE: _one}, {constants.JOB_ESCALATE: _other})


def test_the_registry_joins_distinct_kinds() -> None:
    joined = registry({"a": _one}, {"b": _other})
    assert joined == {"a": _one, "b": _other}


def test_the_dispatcher_refuses_a_feature_taking_its_own_kind(
    store: Store, clock: ManualClock, settings: Settings
) -> None:
    renderer = Renderer(TEMPLATES_DIR, "http://127.0.0.1")
    with pytest.raises(ConfigError, match="send"):
        Dispatcher(store, {}, renderer, clock, settings.dispatch, handlers={"send": _one})


def test_the_service_wires_every_job_kind_once(settings: Settings, clock: ManualClock) -> None:
    service = Service(settings, clock=clock)
    assert sorted(service.dispatcher.kinds) == sorted(
        {
            constants.JOB_PLAN,
            constants.JOB_SEND,
            constants.JOB_CONTACT_FAILING,
            constants.JOB_ESCALATE,
            constants.JOB_DIGEST,
            constants.JOB_ABSENCE_PLAN,
            constants.JOB_ABSENCE_UNREACHED,
            constants.JOB_WEBHOOK_FANOUT,
            constants.JOB_WEBHOOK_SEND,
            constants.JOB_PURGE,
            constants.JOB_SMS_STATUS,
        }
    )
    # The escalate handler is the escalator's own, stopped for cancelled absence alerts.
    assert service.escalator.stop is not None


async def test_the_absence_api_uses_the_apps_flows_and_escalator(
    settings: Settings, clock: ManualClock
) -> None:
    from gateway.api.absence import absences

    async with running(settings, clock) as gw:
        ctx = gw.service.ctx
        assert absences(ctx) is gw.service.absences
        assert absences(ctx).escalator is gw.service.escalator
        assert absences(ctx) is absences(ctx)  # not one per request


async def test_a_stopped_escalation_finishes_its_job_and_plans_nothing(
    store: Store, clock: ManualClock
) -> None:
    message = Message(
        id="m1",
        tenant_id="t1",
        event_id="e1",
        event_type="message.created",
        body_hash="h",
        category=Category.emergency,
        subject="S",
        body="B",
        audience=Audience(children=["c1"]),
        created_at=clock.now(),
    )
    job = step_job(message, 1, clock.now())
    await store.add_deliveries([], [job])
    asked: list[str] = []

    async def stop(seen: Job) -> bool:
        asked.append(seen.id)
        return True

    escalator = Escalator(store, clock, EscalationSettings(), stop=stop)
    (claimed,) = await store.claim_jobs([constants.JOB_ESCALATE], 1, clock.now(), 30)
    await escalator.handlers()[constants.JOB_ESCALATE](claimed)
    assert asked == [job.id]
    assert await store.get_jobs([job.id]) == {}
    assert await store.list_deliveries("t1", "m1") == []
    clock.advance(timedelta(days=1).total_seconds())
    assert await store.claim_jobs([constants.JOB_ESCALATE], 1, clock.now(), 30) == []
