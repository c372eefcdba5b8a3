"""The Redis backend on a real three-node Redis Cluster: a whole delivery flow with its
webhook change feed across tenants on different nodes, scripts lost by the nodes,
and a change stranded by a crash between the change and its pending mark.

(The whole store contract suite also runs on a cluster: the ``redis-cluster`` backend
in tests/contract/conftest.py.)"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from redis.crc import key_slot

from gateway.models import (
    Audience,
    Category,
    Delivery,
    DeliveryStatus,
    DirectoryBatch,
    Job,
    Message,
    Reply,
    Role,
    Tenant,
    WebhookEndpoint,
    derive_id,
)
from gateway.store import SendOutcome
from gateway.store.backends import open_store
from gateway.store.redis import RedisStore
from gateway.store.redis import scripts as lua
from tests.conftest import DIRECTORY
from tests.peers import redis_cluster as cluster_peer
from tests.peers.redis_cluster import ClusterPeer

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
# Hash tags in different thirds of the slots, so on different nodes: drammen 3924 (node
# 1), oslo 8042 (node 2), the queue {q} 11958 (node 3).
DRAMMEN, OSLO = "drammen", "oslo"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPeer]:
    if not cluster_peer.available():
        reason = "redis-server is not installed: no Redis Cluster"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with ClusterPeer(tmp_path_factory.mktemp("cluster")) as peer:
        yield peer


@pytest.fixture
def prefix(cluster: ClusterPeer) -> Iterator[str]:
    name = f"bbtest-{secrets.token_hex(6)}"
    yield name
    cluster.forget_keys(name)


@pytest.fixture
async def store(cluster: ClusterPeer, prefix: str) -> AsyncIterator[RedisStore]:
    opened = open_store(f"{cluster.url}&prefix={prefix}")
    assert isinstance(opened, RedisStore)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def tenant(tenant_id: str) -> Tenant:
    return Tenant(
        id=tenant_id,
        name=tenant_id.title(),
        api_key_hash=derive_id("key", tenant_id),
        webhook_secret="whsec_" + "A" * 32,
        created_at=T0,
    )


def endpoint(tenant_id: str) -> WebhookEndpoint:
    return WebhookEndpoint(
        id="ep1",
        tenant_id=tenant_id,
        url="https://platform.example/hook",
        event_types=["delivery.updated", "message.read", "reply.received"],
        secret="whsec_" + "B" * 32,
        created_at=T0,
        updated_at=T0,
    )


def message(tenant_id: str) -> Message:
    return Message(
        id=derive_id(tenant_id, "ev1"),
        tenant_id=tenant_id,
        event_id="ev1",
        event_type="message.created",
        body_hash="h",
        category=Category.general,
        subject="Turdag",
        body="Husk matpakke.",
        audience=Audience(groups=["g1"]),
        created_at=T0,
    )


def delivery(msg: Message, channel: str) -> Delivery:
    return Delivery(
        id=Delivery.make_id(msg.tenant_id, msg.event_id, "p1", channel),
        tenant_id=msg.tenant_id,
        message_id=msg.id,
        recipient_id="p1",
        recipient_role=Role.guardian,
        channel=channel,
        address="+4790012345" if channel == "sms" else None,
        language="nb",
        created_at=T0,
        updated_at=T0,
    )


def nodes_holding(cluster: ClusterPeer, prefix: str) -> dict[int, set[int]]:
    """Port -> the slots of the prefix's keys on that node."""
    found: dict[int, set[int]] = {}
    for port in cluster.ports:
        with redis.Redis(port=port) as client:
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                found.setdefault(port, set()).add(key_slot(key))
    return found


async def run_flow(store: RedisStore, tenant_id: str) -> tuple[str, str]:
    """A message to p1 in-app and by SMS through the whole store; (sms id, in-app id)."""
    batch = DirectoryBatch.model_validate(DIRECTORY)
    assert (await store.apply_directory(tenant_id, batch))["persons"] == 2
    snapshot = await store.load_audience(tenant_id, Audience(groups=["g1"]))
    assert [r.guardian_id for r in snapshot.relations] == ["p1"]

    msg = message(tenant_id)
    plan = Job(id=f"plan:{msg.id}", tenant_id=tenant_id, kind="plan", ref=msg.id, due_at=T0)
    assert (await store.accept_message(msg, plan)).id == msg.id
    sms, inapp = delivery(msg, "sms"), delivery(msg, "inapp")
    sends = [
        Job(id=f"send:{d.id}", tenant_id=tenant_id, kind="send", ref=d.id, due_at=T0)
        for d in (sms, inapp)
    ]
    assert await store.add_deliveries([sms, inapp], sends) == 2
    return sms.id, inapp.id


async def test_a_delivery_flow_with_webhooks_across_nodes(
    store: RedisStore, cluster: ClusterPeer, prefix: str
) -> None:
    ids: dict[str, tuple[str, str]] = {}
    for tenant_id in (DRAMMEN, OSLO):
        await store.create_tenant(tenant(tenant_id))
        await store.create_webhook_endpoint(endpoint(tenant_id))
        ids[tenant_id] = await run_flow(store, tenant_id)
    assert {t.id for t in await store.list_tenants()} == {DRAMMEN, OSLO}

    # The workers: claim (moves due jobs into the stream, XREADGROUP), send, finish.
    claimed = await store.claim_jobs(["send"], 10, at(1), 60)
    assert sorted(j.ref for j in claimed) == sorted(i for pair in ids.values() for i in pair)
    outcomes = [
        SendOutcome(
            job_id=j.id,
            delivery_id=j.ref,
            status=DeliveryStatus.sent,
            at=at(2),
            provider_id=f"SM{j.ref[:8]}",
        )
        for j in claimed
    ]
    assert await store.finish_sends(outcomes) == 4
    assert await store.claim_jobs(["send"], 10, at(3), 60) == []
    # A worker that died holding a job: XAUTOCLAIM hands it over after the lease.
    await store.add_deliveries(
        [], [Job(id="send:extra", tenant_id=OSLO, kind="send", ref="x", due_at=at(3))]
    )
    [held] = await store.claim_jobs(["send"], 10, at(3), 60)
    assert await store.claim_jobs(["send"], 10, at(30), 60) == []
    [again] = await store.claim_jobs(["send"], 10, at(64), 60)
    assert (again.id, again.attempts) == (held.id, 2)
    await store.finish_job(again.id)

    sms_drammen, _ = ids[DRAMMEN]
    found = await store.delivery_by_provider_id("sms", f"SM{sms_drammen[:8]}")
    assert found is not None and found.tenant_id == DRAMMEN
    msg = message(DRAMMEN)
    assert await store.mark_read(DRAMMEN, "p1", msg.id, at(4), "inapp")
    reply = Reply(
        id="r1",
        tenant_id=DRAMMEN,
        channel="sms",
        message_id=msg.id,
        person_id="p1",
        body="Takk!",
        received_at=at(5),
    )
    assert await store.add_reply(reply)
    assert [r.id for r in await store.list_replies(DRAMMEN, msg.id)] == ["r1"]
    counts = await store.count_by_status(DRAMMEN, msg.id)
    assert counts.get("sent") == 1 and counts.get("read") == 1

    # The fan-out job exists, and the feed merges both tenants' feeds in each one's
    # commit order.
    assert [j.id for j in await store.claim_jobs(["webhook_fanout"], 1, at(6), 60)] == [
        "webhook_fanout"
    ]
    changes, cursor = await store.changes_since(0, 100)
    by_tenant = {
        t: [(c.type, c.data.get("status")) for c in changes if c.tenant_id == t]
        for t in (DRAMMEN, OSLO)
    }
    assert by_tenant[DRAMMEN] == [
        ("delivery.updated", "sent"),
        ("delivery.updated", "sent"),
        ("message.read", None),
        ("delivery.updated", "read"),
        ("reply.received", None),
    ]
    assert by_tenant[OSLO] == [("delivery.updated", "sent"), ("delivery.updated", "sent")]
    assert [c.seq for c in changes] == sorted({c.seq for c in changes})
    assert await store.enqueue_webhooks(0, cursor, [], [], "webhook_fanout") is False
    assert await store.changes_since(cursor, 100) == ([], cursor)

    # Every node holds part of it, and each tenant's keys sit in its tag's one slot.
    slots = nodes_holding(cluster, prefix)
    assert len(slots) == 3
    every = set().union(*slots.values())
    for tag in (DRAMMEN, OSLO, "q", "tenants"):
        assert key_slot(f"{prefix}:{{{tag}}}:x".encode()) in every


async def test_scripts_lost_by_the_nodes_are_loaded_again(
    store: RedisStore, cluster: ClusterPeer
) -> None:
    await store.create_tenant(tenant(OSLO))
    for port in cluster.ports:  # a restart or failover without the script cache
        with redis.Redis(port=port) as client:
            client.script_flush()
    # A pipelined script (deliveries and jobs on two nodes) and a single one.
    sms_id, _ = await run_flow(store, OSLO)
    assert await store.transition(sms_id, DeliveryStatus.sending, at(1))
    for port in cluster.ports:
        with redis.Redis(port=port) as client:
            client.script_flush()
    [job, _] = sorted(await store.claim_jobs(["send"], 10, at(2), 60), key=lambda j: j.id)
    assert job.tenant_id == OSLO


async def test_a_change_stranded_by_a_crash_is_relayed_when_a_store_opens(
    store: RedisStore, cluster: ClusterPeer, prefix: str
) -> None:
    await store.create_webhook_endpoint(endpoint(OSLO))
    # A process commits a change (the tenant script) and dies before marking the tenant
    # pending: run the script directly, without the store's second step.
    tp = f"{prefix}:{{{OSLO}}}:"
    with redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0]) as client:
        source = lua.Lua(lua.APPEND_CHANGE).source  # with the key names
        client.script_load(source)
        client.eval(source, 1, tp + "wh:on", tp, "message.reached", "{}", 1)
    assert await store.claim_jobs(["webhook_fanout"], 1, at(1), 60) == []
    assert await store.changes_since(0, 10) == ([], 0)

    restarted = RedisStore(cluster.url, prefix=prefix)
    await restarted.open()  # sweeps the tenants' feeds
    try:
        [fanout] = await restarted.claim_jobs(["webhook_fanout"], 1, at(1), 60)
        changes, cursor = await restarted.changes_since(0, 10)
        assert [(c.tenant_id, c.type) for c in changes] == [(OSLO, "message.reached")]
        assert await restarted.enqueue_webhooks(0, cursor, [], [], fanout.id) is False
    finally:
        await restarted.close()


def test_the_url_option_selects_the_cluster_client(cluster: ClusterPeer) -> None:
    store = RedisStore(f"{cluster.url}&prefix=p&socket_timeout=5")
    assert (
        store._cluster and store._url == f"redis://127.0.0.1:{cluster.ports[0]}/?socket_timeout=5"
    )
    plain = RedisStore("redis://127.0.0.1:6379/0?prefix=p")
    assert not plain._cluster and plain._url == "redis://127.0.0.1:6379/0"
