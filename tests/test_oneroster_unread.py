"""OneRoster: what the import does not read is reported, never ignored in silence
(issue 10), and OneRoster 1.0's ``agents`` column carries the relations."""

from __future__ import annotations

import shutil
from pathlib import Path

from aiohttp.test_utils import TestClient

from gateway.models import Audience
from gateway.store import Store
from tests.conftest import TenantCreds
from tests.test_oneroster import ENDPOINT, NORDBY, zip_headers, zipped


def export(tmp_path: Path) -> Path:
    """Nordby as a vendor sends it: 1.0's "agents", an ext_ column, a relationships.csv
    of its own, and a demographics.csv with only its header."""
    target = tmp_path / "nordby"
    shutil.copytree(NORDBY, target)
    users = (target / "users.csv").read_text(encoding="utf-8-sig").splitlines()
    users[0] = users[0].replace("agentSourcedIds", "agents") + ",ext_nordby_basisgruppe"
    users[1:] = [line + ",B1" for line in users[1:]]
    (target / "users.csv").write_text("\n".join(users) + "\n", encoding="utf-8")
    demographics = (target / "demographics.csv").read_text(encoding="utf-8-sig")
    (target / "demographics.csv").write_text(demographics.splitlines()[0] + "\n", "utf-8")
    (target / "relationships.csv").write_text(
        "sourcedId,userSourcedId,agentSourcedId,relationship\nr1,usr-kari,usr-ola,father\n",
        encoding="utf-8",
    )
    return target


async def test_unread_files_and_columns_are_warnings_and_agents_is_read(
    app_client: TestClient, store: Store, tenant: TenantCreds, tmp_path: Path
) -> None:
    resp = await app_client.post(
        ENDPOINT,
        data=zipped(export(tmp_path)),
        params={"assume_minor": "true"},
        headers=zip_headers(tenant.api_key),
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    warnings = body["warnings"]
    assert "relationships.csv: not read by the import" in warnings
    assert "users.csv column ext_nordby_basisgruppe: not read by the import" in warnings
    assert any(w.startswith("demographics.csv: has no rows") for w in warnings)
    # No value and no name is in a warning.
    assert not any("B1" in w or "Kari" in w for w in warnings)
    # The 1.0 column "agents" made the relations.
    assert body["applied"]["relations"] > 0
    snapshot = await store.load_audience(tenant.tenant.id, Audience(children=["usr-kari"]))
    assert "usr-ola" in {r.guardian_id for r in snapshot.relations}


async def test_both_agent_columns_read_the_newer_and_warn_about_the_other(
    app_client: TestClient, tenant: TenantCreds, tmp_path: Path
) -> None:
    target = tmp_path / "both"
    shutil.copytree(NORDBY, target)
    users = (target / "users.csv").read_text(encoding="utf-8-sig").splitlines()
    users[0] += ",agents"
    users[1:] = [line + "," for line in users[1:]]
    (target / "users.csv").write_text("\n".join(users) + "\n", encoding="utf-8")
    resp = await app_client.post(ENDPOINT, data=zipped(target), headers=zip_headers(tenant.api_key))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert any(w.startswith("users.csv column agents: not read") for w in body["warnings"])
    assert body["applied"]["relations"] > 0
