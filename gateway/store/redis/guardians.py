"""Guardians' own settings in the Redis backend: preferences, devices, failing contacts.

Under the tenant's hash tag: ``P:{t}:prefs`` (person -> "g" + the guardian's own
preferences, or "i" + imported ones), ``P:{t}:dev:<person>`` (device id -> device),
``P:{t}:tok`` / ``fid`` (a token or FID -> its device; one device each) and
``P:{t}:fail`` ("<person>\\x1f<email|phone>" -> the failing address). A write bumps the
version of its part (``prefv``, ``devv``), which ``load_audience`` checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from gateway.models import Device, Preferences
from gateway.store.audience import CONTACT_KINDS, People
from gateway.store.directory_checks import check_contact_kind
from gateway.store.encoding import dumps, from_us_opt, us, us_opt
from gateway.store.redis import keys as K
from gateway.store.redis import scripts as lua
from gateway.store.redis.base import RedisFeature, opt
from gateway.store.redis.scripts import Lua

_UPSERT_DEVICE = Lua(lua.UPSERT_DEVICE)
# From this many persons in one read, the tenant's device count is asked (two HLEN), and
# with fewer than _INDEX_RATIO devices per person read only their owners' devices are
# read (contacts_from): the indexes' entries are short ("person\x1fdevice"), and two
# HVALS of up to four per person read less than one HGETALL per person does.
_INDEX_FROM = 8
_INDEX_RATIO = 4
_REMOVE_DEVICE = Lua(lua.REMOVE_DEVICE)


def device_doc(d: Device) -> str:
    """A device as stored in ``dev:<person>``."""
    return dumps([d.token, d.fid, d.platform, d.app_version, us_opt(d.last_seen)])


def device_from_doc(device_id: str, doc: str) -> Device:
    f = json.loads(doc)
    return Device.model_construct(
        id=device_id,
        token=f[0],
        fid=f[1],
        platform=f[2],
        app_version=f[3],
        last_seen=from_us_opt(f[4]),
    )


class RedisGuardians(RedisFeature):
    """:class:`gateway.store.ports.GuardianStore` on Redis."""

    SCRIPTS = (_UPSERT_DEVICE, _REMOVE_DEVICE)

    async def set_preferences(self, tenant_id: str, guardian_id: str, prefs: Preferences) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._db.t(tenant_id, K.PREFERENCES), guardian_id, "g" + prefs.model_dump_json()
            )
            pipe.incrby(self._db.t(tenant_id, K.PREFERENCES_VERSION), K.version_step())
            await pipe.execute()

    async def get_preferences(self, tenant_id: str, guardian_id: str) -> Preferences | None:
        doc = await self._redis.hget(self._db.t(tenant_id, K.PREFERENCES), guardian_id)
        return None if doc is None else Preferences.model_validate_json(doc[1:])

    async def upsert_device(self, tenant_id: str, guardian_id: str, device: Device) -> None:
        tp = self._db.tp(tenant_id)
        await self._db.eval(
            self._redis,
            _UPSERT_DEVICE,
            [tp + K.DEVICES_VERSION],
            [
                tp,
                guardian_id,
                device.id,
                device_doc(device),
                opt(device.token),
                opt(device.fid),
                K.version_step(),
            ],
        )

    async def remove_device(self, tenant_id: str, guardian_id: str, device_id: str) -> bool:
        tp = self._db.tp(tenant_id)
        removed = await self._db.eval(
            self._redis,
            _REMOVE_DEVICE,
            [tp + K.DEVICES_VERSION],
            [tp, guardian_id, device_id, K.version_step()],
        )
        return bool(removed)

    async def list_devices(self, tenant_id: str, guardian_id: str) -> list[Device]:
        rows = await self._redis.hgetall(self._db.t(tenant_id, K.DEVICES, guardian_id))
        return [device_from_doc(d, rows[d]) for d in sorted(rows)]

    async def mark_contact_failing(
        self, tenant_id: str, person_id: str, kind: str, address: str, code: str, at: datetime
    ) -> None:
        check_contact_kind(kind)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._db.t(tenant_id, K.FAILING),
                f"{person_id}\x1f{kind}",
                dumps([address, code, us(at)]),
            )
            pipe.incrby(self._db.t(tenant_id, K.DEVICES_VERSION), K.version_step())
            await pipe.execute()


def queue_contacts(read: Any, t: Callable[..., str], ids: Sequence[str]) -> None:
    """Queue on the pipeline ``read`` the first reads :func:`contacts_from` takes apart
    (four replies, two below ``_INDEX_FROM`` persons): these persons' preferences and
    failed addresses, and how many devices the tenant has (``t`` the tenant's key
    names)."""
    read.hmget(t(K.PREFERENCES), ids)
    read.hmget(t(K.FAILING), [f"{p}\x1f{k}" for p in ids for k in CONTACT_KINDS])
    if len(ids) >= _INDEX_FROM:
        read.hlen(t(K.TOKENS))
        read.hlen(t(K.FIDS))


async def contacts_from(
    redis: Any, t: Callable[..., str], ids: Sequence[str], replies: Sequence[Any], into: People
) -> None:
    """The replies of :func:`queue_contacts`, and the devices read after them, for the
    persons found ``into``.

    A person's devices are a hash of their own (one HGETALL each), and most persons in
    a large audience have none (children, guardians without the app). Every device is
    in exactly one of the tenant's indexes ``tok`` and ``fid`` (a device has one of the
    two: ``Device``; upsert_device.lua and the removals keep them with the devices), so
    when the tenant has fewer than four devices per person to read, their owners come
    from those two indexes (HVALS, one command each) and only owners' devices are read.
    The caller checks the devices' version around the whole read (``load_audience``)."""
    prefs, failed, *counts = replies
    wanted = [p for p in ids if p in into.persons]
    if counts and sum(counts) < _INDEX_RATIO * len(wanted):
        async with redis.pipeline(transaction=False) as read:
            read.hvals(t(K.TOKENS))
            read.hvals(t(K.FIDS))
            indexed = await read.execute()
        owners = {ref.split("\x1f", 1)[0] for refs in indexed for ref in refs}
        wanted = [p for p in wanted if p in owners]
    devices: dict[str, dict[str, str]] = {}
    if wanted:
        async with redis.pipeline(transaction=False) as read:
            for p in wanted:
                read.hgetall(t(K.DEVICES, p))
            devices = dict(zip(wanted, await read.execute(), strict=True))
    for i, p in enumerate(ids):
        if p not in into.persons:
            continue
        if prefs[i] is not None:
            into.preferences[p] = Preferences.model_validate_json(prefs[i][1:])
        for j, kind in enumerate(CONTACT_KINDS):
            doc = failed[len(CONTACT_KINDS) * i + j]
            if doc is not None:
                into.failed.setdefault(p, {})[kind] = json.loads(doc)[0]
        if rows := devices.get(p):
            into.devices[p] = [device_from_doc(d, rows[d]) for d in sorted(rows)]


# In-transaction helpers for the directory (redis/directory.py), which removes a person
# with their contacts and imports preferences in its own WATCHed transactions.


def read_preferences(read: Any, t: Callable[..., str], ids: Sequence[str]) -> None:
    """Queue the read of these persons' stored preferences (for :func:`import_preferences`)."""
    read.hmget(t(K.PREFERENCES), list(ids) or ["-"])


def import_preferences(
    pipe: Any, t: Callable[..., str], imported: dict[str, Preferences], stored: Sequence[Any]
) -> int:
    """Queue imported preferences, except over a guardian's own ("g"); how many."""
    applied = 0
    for (person_id, prefs), cur in zip(imported.items(), stored, strict=False):
        if cur is None or cur.startswith("i"):  # "g": the guardian's own, kept
            pipe.hset(t(K.PREFERENCES), person_id, "i" + prefs.model_dump_json())
            applied += 1
    return applied


def read_devices(read: Any, t: Callable[..., str], person_id: str) -> None:
    """Queue the read of a person's devices (for :func:`forget_contacts`)."""
    read.hgetall(t(K.DEVICES, person_id))


def forget_contacts(
    pipe: Any, t: Callable[..., str], person_id: str, devices: dict[str, str]
) -> None:
    """Queue the removal of a person's devices (with their token and FID index),
    preferences and failed addresses."""
    for device_id, doc in devices.items():
        device = device_from_doc(device_id, doc)
        if device.token is not None:
            pipe.hdel(t(K.TOKENS), device.token)
        if device.fid is not None:
            pipe.hdel(t(K.FIDS), device.fid)
    pipe.delete(t(K.DEVICES, person_id))
    pipe.hdel(t(K.PREFERENCES), person_id)
    pipe.hdel(t(K.FAILING), *(f"{person_id}\x1f{kind}" for kind in CONTACT_KINDS))
