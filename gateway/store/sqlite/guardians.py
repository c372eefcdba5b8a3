"""What guardians keep themselves in the SQLite backend (the ``GuardianStore`` port):
preferences (imported or their own), push devices, and contact addresses found failing.

The ``load_*`` readers are used inside the caller's transaction by the directory's
audience read (``directory.py``, for ``store/audience.py``) too."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import aiosqlite

from gateway.models import Device, Preferences
from gateway.store.directory_checks import check_contact_kind
from gateway.store.encoding import from_us_opt, us, us_opt
from gateway.store.sqlite.base import IDS, SqliteFeature, id_list


def _device(row: Any) -> Device:
    return Device.model_construct(
        id=row[0],
        token=row[1],
        fid=row[2],
        platform=row[3],
        app_version=row[4],
        last_seen=from_us_opt(row[5]),
    )


class SqliteGuardians(SqliteFeature):
    """Preferences, devices and failing contacts of guardians."""

    SCHEMA: ClassVar[str] = """
CREATE TABLE IF NOT EXISTS preferences (
    tenant_id TEXT NOT NULL, person_id TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('import', 'guardian')),
    data TEXT NOT NULL,
    PRIMARY KEY (tenant_id, person_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS devices (
    tenant_id TEXT NOT NULL, person_id TEXT NOT NULL, id TEXT NOT NULL,
    token TEXT, fid TEXT, platform TEXT NOT NULL, app_version TEXT, last_seen INTEGER,
    PRIMARY KEY (tenant_id, person_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_by_token ON devices (tenant_id, token)
    WHERE token IS NOT NULL;
CREATE INDEX IF NOT EXISTS devices_by_fid ON devices (tenant_id, fid) WHERE fid IS NOT NULL;

CREATE TABLE IF NOT EXISTS contact_failures (
    tenant_id TEXT NOT NULL, person_id TEXT NOT NULL, kind TEXT NOT NULL,
    address TEXT NOT NULL, code TEXT NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, person_id, kind)
) WITHOUT ROWID;
"""

    async def set_preferences(self, tenant_id: str, guardian_id: str, prefs: Preferences) -> None:
        async with self._db.write() as db:
            await db.execute(
                "INSERT INTO preferences (tenant_id, person_id, source, data) "
                "VALUES (?, ?, 'guardian', ?) ON CONFLICT (tenant_id, person_id) "
                "DO UPDATE SET source = 'guardian', data = excluded.data",
                (tenant_id, guardian_id, prefs.model_dump_json()),
            )

    async def get_preferences(self, tenant_id: str, guardian_id: str) -> Preferences | None:
        async with self._db.read() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT data FROM preferences WHERE tenant_id = ? AND person_id = ?",
                    (tenant_id, guardian_id),
                )
            )
        return Preferences.model_validate_json(rows[0][0]) if rows else None

    async def upsert_device(self, tenant_id: str, guardian_id: str, device: Device) -> None:
        async with self._db.write() as db:
            if device.token is not None:
                await db.execute(
                    "DELETE FROM devices WHERE tenant_id = ? AND token = ? "
                    "AND NOT (person_id = ? AND id = ?)",
                    (tenant_id, device.token, guardian_id, device.id),
                )
            if device.fid is not None:
                await db.execute(
                    "DELETE FROM devices WHERE tenant_id = ? AND fid = ? "
                    "AND NOT (person_id = ? AND id = ?)",
                    (tenant_id, device.fid, guardian_id, device.id),
                )
            await db.execute(
                "INSERT OR REPLACE INTO devices (tenant_id, person_id, id, token, fid, platform, "
                "app_version, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tenant_id,
                    guardian_id,
                    device.id,
                    device.token,
                    device.fid,
                    device.platform,
                    device.app_version,
                    us_opt(device.last_seen),
                ),
            )

    async def remove_device(self, tenant_id: str, guardian_id: str, device_id: str) -> bool:
        async with self._db.write() as db:
            cursor = await db.execute(
                "DELETE FROM devices WHERE tenant_id = ? AND person_id = ? AND id = ?",
                (tenant_id, guardian_id, device_id),
            )
            return cursor.rowcount > 0

    async def list_devices(self, tenant_id: str, guardian_id: str) -> list[Device]:
        async with self._db.read() as db:
            devices = await load_devices(db, tenant_id, id_list([guardian_id]))
        return devices.get(guardian_id, [])

    async def mark_contact_failing(
        self, tenant_id: str, person_id: str, kind: str, address: str, code: str, at: datetime
    ) -> None:
        check_contact_kind(kind)
        async with self._db.write() as db:
            await db.execute(
                "INSERT OR REPLACE INTO contact_failures (tenant_id, person_id, kind, address, "
                "code, at) VALUES (?, ?, ?, ?, ?, ?)",
                (tenant_id, person_id, kind, address, code, us(at)),
            )


async def load_preferences(
    db: aiosqlite.Connection, tenant_id: str, ids_json: str
) -> dict[str, Preferences]:
    rows = await db.execute_fetchall(
        f"SELECT person_id, data FROM preferences WHERE tenant_id = ? AND person_id IN {IDS}",
        (tenant_id, ids_json),
    )
    return {row[0]: Preferences.model_validate_json(row[1]) for row in rows}


async def load_devices(
    db: aiosqlite.Connection, tenant_id: str, ids_json: str
) -> dict[str, list[Device]]:
    rows = await db.execute_fetchall(
        "SELECT person_id, id, token, fid, platform, app_version, last_seen FROM devices "
        f"WHERE tenant_id = ? AND person_id IN {IDS} ORDER BY person_id, id",
        (tenant_id, ids_json),
    )
    devices: dict[str, list[Device]] = {}
    for row in rows:
        devices.setdefault(row[0], []).append(_device(row[1:]))
    return devices


async def load_failed(
    db: aiosqlite.Connection, tenant_id: str, ids_json: str
) -> dict[str, dict[str, str]]:
    """Person -> contact kind -> the address found failing (store/audience.py decides
    whether it still counts)."""
    rows = await db.execute_fetchall(
        "SELECT person_id, kind, address FROM contact_failures "
        f"WHERE tenant_id = ? AND person_id IN {IDS}",
        (tenant_id, ids_json),
    )
    failed: dict[str, dict[str, str]] = {}
    for row in rows:
        failed.setdefault(row[0], {})[row[1]] = row[2]
    return failed
