"""Fuzz the running API with schemathesis: no request may get a 5xx.

    .venv/bin/python -m scripts.fuzz                       # make fuzz: >= 30,000 cases
    .venv/bin/python -m scripts.fuzz --max-examples 5      # a quick look
    .venv/bin/python -m scripts.fuzz --max-time 1800       # stop each run after 30 min

Starts the app on 127.0.0.1 (SQLite in a temporary folder, a small directory with a
child and a guardian), then runs ``schemathesis run`` over every operation of
gateway/openapi.json twice, side by side: with a tenant API key and with a guardian
token, in the
examples, coverage, fuzzing and stateful phases, checking only ``not_a_server_error``.
Prints the number of cases and 5xx answers of each run and exits 1 if any answer was
a 5xx (or schemathesis failed otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.api.app import create_app
from gateway.api.context import AppContext
from gateway.auth import create_tenant
from gateway.clock import SystemClock
from gateway.models import DirectoryBatch
from gateway.settings import Settings
from gateway.store.sqlite import SqliteStore
from gateway.tokens import issue_guardian_token

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "fuzz-secret-key-that-is-long-enough-0123456789"
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
    ],
    "relations": [{"child_id": "c1", "guardian_id": "p1", "parental_responsibility": True}],
}


@dataclass
class Live:
    url: str
    api_key: str
    guardian_token: str


@contextmanager
def serving(folder: Path) -> Iterator[Live]:
    """The app on an ephemeral port, in a thread with its own event loop."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        settings = Settings(
            store_url=f"sqlite:///{folder / 'fuzz.db'}",
            outbox_dir=folder / "outbox",
            secret_key=SECRET_KEY,
            guardian_token_ttl=24 * 3600,
        )
        clock = SystemClock()
        store = SqliteStore(str(settings.sqlite_path))
        await store.open()
        tenant, api_key, _ = await create_tenant(store, "Asker kommune", clock.now())
        await store.apply_directory(tenant.id, DirectoryBatch.model_validate(DIRECTORY))
        token, _ = issue_guardian_token(
            SECRET_KEY.encode(), tenant.id, "p1", clock.now(), settings.guardian_token_ttl
        )
        ctx = AppContext(settings=settings, store=store, clock=clock, secret=SECRET_KEY.encode())
        runner = web.AppRunner(create_app(ctx), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        stop = asyncio.Event()
        box.update(live=Live(f"http://{host}:{port}", api_key, token), stop=stop)
        box["loop"] = asyncio.get_running_loop()
        ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await store.close()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(60) or "error" in box:
        raise RuntimeError("the app did not start") from box.get("error")
    try:
        yield box["live"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)


@dataclass
class Tally:
    cases: int = 0
    server_errors: int = 0


def _tally(ndjson: Path) -> Tally:
    """Cases and 5xx answers, from schemathesis's NDJSON event stream."""
    tally = Tally()
    for line in ndjson.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        for step in finished.get("recorder", {}).get("interactions", {}).values():
            response = step.get("response")
            tally.cases += 1
            if response is not None and response.get("status_code", 0) >= 500:
                tally.server_errors += 1
    return tally


def _command(live: Live, credential: str, ndjson: Path, args: argparse.Namespace) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{live.url}/openapi.json",
        "--checks=not_a_server_error",
        f"--max-examples={args.max_examples}",
        f"--seed={args.seed}",
        "--workers=2",
        "--no-shrink",
        "--continue-on-failure",
        "--suppress-health-check=all",
        "--report=ndjson",
        f"--report-ndjson-path={ndjson}",
        "--output-sanitize=true",
        "--warnings=off",
        f"--header=Authorization: Bearer {credential}",
    ]
    if args.max_time:
        command.append(f"--max-time={args.max_time}")
    return command


def fuzz(live: Live, args: argparse.Namespace) -> Tally:
    """One schemathesis run per credential, side by side; their tallies added up."""
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "scripts.fuzz_hooks"}
    total = Tally()
    with tempfile.TemporaryDirectory() as reports:
        runs = []
        for who, credential in (
            ("guardian token", live.guardian_token),
            ("tenant key", live.api_key),
        ):
            ndjson = Path(reports) / f"{who.replace(' ', '-')}.ndjson"
            process = subprocess.Popen(
                _command(live, credential, ndjson, args),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
            runs.append((who, ndjson, process))
        for who, ndjson, process in runs:
            stdout, stderr = process.communicate()
            tally = _tally(ndjson) if ndjson.exists() else Tally()
            summary = stdout.rpartition("SUMMARY")[2].strip()
            print(f"--- {who}\n{summary}")
            print(f"{who}: {tally.cases} cases, {tally.server_errors} answers 5xx")
            if process.returncode != 0:
                print(stdout[-4000:])
                print(stderr[-2000:], file=sys.stderr)
                tally.server_errors = max(tally.server_errors, 1)
            total.cases += tally.cases
            total.server_errors += tally.server_errors
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=500, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--max-time", type=int, default=0, help="seconds per run (0: none)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder, serving(Path(folder)) as live:
        total = fuzz(live, args)
    print(f"total: {total.cases} cases, {total.server_errors} answers 5xx")
    return 1 if total.server_errors else 0


if __name__ == "__main__":
    sys.exit(main())
