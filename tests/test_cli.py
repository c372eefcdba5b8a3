"""The ``budbringer`` command as an operator runs it: real subprocesses, settings from
the environment and the example TOML file."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from gateway.auth import hash_api_key
from tests.peers.fcm import write_service_account
from tests.test_crash_restart import ROOT, gateway_env, run_cli, serving

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "config" / "budbringer.example.toml"


def stored_bytes(db: Path) -> bytes:
    """The database with its WAL and shared-memory files, as bytes on disk."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


async def test_tenants_create_prints_keys_once_and_stores_only_the_hash(tmp_path: Path) -> None:
    gw = gateway_env(tmp_path)
    code, out, err = await run_cli(gw, "tenants", "create", "Asker kommune")
    assert code == 0, err
    found = dict(re.findall(r"^(tenant id|api key|signing secret):\s+(\S+)$", out, re.M))
    assert set(found) == {"tenant id", "api key", "signing secret"}
    api_key = found["api key"]
    assert api_key.startswith("bbk_") and found["signing secret"].startswith("whsec_")
    assert "only this once" in out

    on_disk = stored_bytes(gw.db)
    assert api_key.encode() not in on_disk
    assert api_key.split("_", 1)[1].encode() not in on_disk
    assert hash_api_key(api_key).encode() in on_disk

    code, listing, err = await run_cli(gw, "tenants", "list")
    assert code == 0, err
    [line] = listing.splitlines()
    tenant_id, name, _created = line.split("\t")
    assert (tenant_id, name) == (found["tenant id"], "Asker kommune")
    assert api_key not in listing and "whsec_" not in listing  # shown once, never again

    # A second tenant gets its own id and key.
    code, out2, _ = await run_cli(gw, "tenants", "create", "Bærum kommune")
    assert code == 0 and api_key not in out2
    code, listing, _ = await run_cli(gw, "tenants", "list")
    assert len(listing.splitlines()) == 2


async def test_serve_with_the_example_config(tmp_path: Path) -> None:
    # What the example leaves to the environment: secrets, and (here) where to store
    # and listen; the FCM service account is a file the deployment provides.
    account = write_service_account(tmp_path / "sa.json", "http://127.0.0.1:9/token")
    gw = gateway_env(
        tmp_path,
        BUDBRINGER_HOST="127.0.0.1",
        BUDBRINGER_SECRET_KEY="an-example-secret-that-is-long-enough-0123",
        BUDBRINGER_TWILIO__AUTH_TOKEN="example-auth-token",
        BUDBRINGER_FCM__SERVICE_ACCOUNT_FILE=str(account),
        # production: links in emails must be https (the test never follows them)
        BUDBRINGER_PUBLIC_URL="https://varsel.asker.kommune.no",
    )
    async with serving(gw, "--config", str(EXAMPLE)) as proc:
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url + "/healthz") as resp:
                assert (resp.status, await resp.json()) == (200, {"status": "ok"})
            async with http.get(gw.url + "/openapi.json") as resp:
                assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, err.decode()[-2000:]
    assert gw.db.exists()  # the overridden store_url, not /var/lib/budbringer


@pytest.mark.parametrize(
    ("args", "env", "field"),
    [
        ((), {"BUDBRINGER_PORT": "99999"}, "port"),
        ((), {"BUDBRINGER_DISPATCH__CONCURRENCY": "0"}, "dispatch.concurrency"),
        ((), {"BUDBRINGER_STORE_URL": "postgres://db/budbringer"}, "store_url"),
        ((), {"BUDBRINGER_EVENT_LOOP": "uvlop"}, "event_loop"),
        (
            ("--config", str(EXAMPLE)),
            {"BUDBRINGER_SECRET_KEY": "short", "BUDBRINGER_TWILIO__AUTH_TOKEN": "t"},
            "secret_key",
        ),
        (("--config", str(EXAMPLE)), {}, "twilio.auth_token"),
        # an unquoted comma in the display name: two addresses, every email would fail
        (
            (),
            {
                "BUDBRINGER_SMTP__HOST": "127.0.0.1",
                "BUDBRINGER_SMTP__SENDER": "Asker kommune, Oppvekst <varsel@asker.kommune.no>",
            },
            "smtp.sender",
        ),
        (
            (),
            {
                "BUDBRINGER_SMTP__HOST": "127.0.0.1",
                "BUDBRINGER_SMTP__SENDER": "varsel@asker.kommune.no",
                "BUDBRINGER_SMTP__PORT": "99999",
            },
            "smtp.port",
        ),
    ],
    ids=[
        "port",
        "nested",
        "store-url",
        "event-loop",
        "production-secret",
        "toml-missing-secret",
        "smtp-sender",
        "smtp-port",
    ],
)
async def test_invalid_settings_exit_2_naming_the_field(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], field: str
) -> None:
    gw = gateway_env(tmp_path)
    gw.env.update(env)
    if "BUDBRINGER_SECRET_KEY" not in env and args:
        gw.env.pop("BUDBRINGER_SECRET_KEY")
    code, out, err = await run_cli(gw, "serve", *args)
    assert code == 2
    assert err.startswith("budbringer: ")
    assert field in err
    assert "Traceback" not in err and out == ""
    assert "Value error" not in err  # pydantic's words, not ours


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("outbox-under-a-file", "cannot create the outbox folder"),
        ("store-under-a-file", "beside the SQLite store"),
        ("port-taken", "cannot listen on 127.0.0.1:"),
        ("no-such-host", "cannot listen on 999.1.1.1:"),
        ("channels-not-json", 'invalid settings: error parsing value for field "channels"'),
        ("utf16-toml", "is not UTF-8 text (TOML files are UTF-8)"),
    ],
)
async def test_an_unusable_path_or_address_stops_the_start_in_one_line(
    tmp_path: Path, case: str, expected: str
) -> None:
    """Not a traceback: the operator's setting is wrong, and the line says which."""
    gw = gateway_env(tmp_path)
    (tmp_path / "afile").write_text("")
    args: tuple[str, ...] = ()
    taken = None
    if case == "outbox-under-a-file":
        gw.env["BUDBRINGER_OUTBOX_DIR"] = str(tmp_path / "afile" / "outbox")
    elif case == "store-under-a-file":
        gw.env.pop("BUDBRINGER_SECRET_KEY")  # development: the secret goes beside the store
        gw.env["BUDBRINGER_STORE_URL"] = f"sqlite:///{tmp_path / 'afile' / 'b.db'}"
    elif case == "port-taken":
        taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        gw.env["BUDBRINGER_PORT"] = str(taken.sockets[0].getsockname()[1])
    elif case == "no-such-host":
        gw.env["BUDBRINGER_HOST"] = "999.1.1.1"
    elif case == "channels-not-json":
        gw.env["BUDBRINGER_CHANNELS"] = "email,sms"
    else:
        config = tmp_path / "utf16.toml"
        config.write_text("port = 8080\n", encoding="utf-16")
        args = ("--config", str(config))
    try:
        code, out, err = await run_cli(gw, "serve", *args)
    finally:
        if taken is not None:
            taken.close()
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith("budbringer: ") and expected in line, line


async def test_missing_config_file_and_unknown_key(tmp_path: Path) -> None:
    gw = gateway_env(tmp_path)
    code, _, err = await run_cli(gw, "serve", "--config", str(tmp_path / "nope.toml"))
    assert (code, "Traceback" in err) == (2, False)
    assert "config file not found" in err

    config = tmp_path / "bad.toml"
    config.write_text("prot = 8080\n[dispatch]\nconcurency = 4\n", encoding="utf-8")
    code, _, err = await run_cli(gw, "serve", "--config", str(config))
    assert (code, "Traceback" in err) == (2, False)
    assert "prot" in err and "dispatch.concurency" in err


async def test_production_without_providers_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    gw = gateway_env(tmp_path, BUDBRINGER_ENVIRONMENT="production")
    code, out, err = await run_cli(gw, "serve")
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith("budbringer: refusing to start in production: ")
    for piece in ("email channel", "sms channel", "push channel", "BUDBRINGER_PUBLIC_URL"):
        assert piece in line
    assert not gw.db.exists()  # refused before anything was opened


async def test_a_misspelt_variable_is_named_with_the_closest_known_one(tmp_path: Path) -> None:
    gw = gateway_env(tmp_path, BUDBRINGER_SMTP_HOST="relay.asker.kommune.no")
    code, _, err = await run_cli(gw, "serve")
    assert code == 2
    assert err == (
        "budbringer: unknown variable BUDBRINGER_SMTP_HOST (did you mean BUDBRINGER_SMTP__HOST?)\n"
    )


async def test_broken_toml_is_one_line_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bb.toml"
    config.write_text("port = 8080\n[smtp\n", encoding="utf-8")
    gw = gateway_env(tmp_path)
    code, _, err = await run_cli(gw, "serve", "--config", str(config))
    assert code == 2 and "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith(f"budbringer: {config} is not valid TOML: ")
