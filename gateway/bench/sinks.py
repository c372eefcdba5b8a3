"""Local provider sinks for the benchmark, each run in a process of its own.

``python -m gateway.bench.sinks fcm|twilio|smtp`` serves on 127.0.0.1 (port 0) and
prints one JSON line with its ports; then it accepts what the gateway (or the
ceiling client) hands over, records the wall-clock time (``time.time()``) of each
hand-over by delivery key, and answers control requests on ``/_bench/...``:

* ``fcm`` — Google's OAuth2 token endpoint (``POST /token``; any JWT-bearer
  assertion gets a token) and FCM v1 ``messages:send``; the key is the message's
  ``data.delivery_id``.
* ``twilio`` — the Messages API (``POST /2010-04-01/Accounts/{sid}/Messages.json``);
  the key is the message SID it answers with (the gateway stores it as the
  delivery's provider id); repeats are recognised by (To, Body).
* ``smtp`` — an aiosmtpd server; the key is the delivery id in the Message-ID
  (``<delivery id@domain>``). It advertises PIPELINING (RFC 2920) as the relays a
  gateway sends through do (Postfix, Exchange, SES). Its control server listens on a
  second port.

Each answers after the time ``--latency`` draws (gateway/bench/latency.py; default 0),
and records the hand-over when it answers.

Control: ``GET /_bench/stats`` (received, distinct, duplicates, CPU seconds),
``GET /_bench/records`` (key -> first hand-over time), ``POST /_bench/reset``.
:class:`SinkProcess` starts a sink and talks to it from the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from gateway.bench.latency import NO_LATENCY, Latency, Sampler
from gateway.bench.latency import argument as latency_argument

KINDS = ("fcm", "twilio", "smtp")
BENCH_TOKEN = "ya29.bench-token"
ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-auth-token-" + "0" * 16
PROJECT_ID = "budbringer-bench"
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^@>\s]+)@", re.IGNORECASE | re.MULTILINE)


def write_service_account(path: Path, token_uri: str, project_id: str = PROJECT_ID) -> Path:
    """A throwaway service-account JSON in Google's format with a fresh RSA key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    email = f"firebase-adminsdk-bench@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**21)).zfill(21),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" + quote(email),
        "universe_domain": "googleapis.com",
    }
    path.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the sink side


@dataclass
class Recorder:
    """First hand-over time per key; repeats (by key, or by ``same`` when given) counted."""

    first: dict[str, float] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    received: int = 0
    duplicates: int = 0
    token_requests: int = 0

    def record(self, key: str, same: str | None = None) -> None:
        self.received += 1
        self.first.setdefault(key, time.time())
        marker = same if same is not None else key
        if marker in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(marker)

    def reset(self) -> None:
        self.first.clear()
        self.seen.clear()
        self.received = self.duplicates = self.token_requests = 0


def control_routes(app: web.Application, recorder: Recorder) -> None:
    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "received": recorder.received,
                "distinct": len(recorder.first),
                "duplicates": recorder.duplicates,
                "token_requests": recorder.token_requests,
                "cpu_s": time.process_time(),
            }
        )

    async def records(request: web.Request) -> web.Response:
        return web.json_response(recorder.first)

    async def reset(request: web.Request) -> web.Response:
        recorder.reset()
        return web.json_response({"ok": True})

    app.router.add_get("/_bench/stats", stats)
    app.router.add_get("/_bench/records", records)
    app.router.add_post("/_bench/reset", reset)


async def answer_after(sampler: Sampler) -> None:
    """Wait as long as the provider takes to answer this request."""
    delay = sampler.draw()
    if delay > 0:
        await asyncio.sleep(delay)


def fcm_app(recorder: Recorder, sampler: Sampler) -> web.Application:
    names = itertools.count(1)

    async def token(request: web.Request) -> web.Response:
        recorder.token_requests += 1
        form = await request.post()
        if not form.get("assertion"):
            return web.json_response({"error": "invalid_request"}, status=400)
        return web.json_response(
            {"access_token": BENCH_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        )

    async def send(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {BENCH_TOKEN}":
            return web.json_response({"error": {"status": "UNAUTHENTICATED"}}, status=401)
        body = await request.json()
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict) or not (message.get("token") or message.get("fid")):
            return web.json_response({"error": {"status": "INVALID_ARGUMENT"}}, status=400)
        await answer_after(sampler)
        data = message.get("data") or {}
        recorder.record(str(data.get("delivery_id") or f"?{next(names)}"))
        project = request.match_info["project"]
        return web.json_response({"name": f"projects/{project}/messages/0:{next(names)}"})

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_post("/v1/projects/{project}/messages:send", send)
    control_routes(app, recorder)
    return app


def twilio_app(recorder: Recorder, sampler: Sampler) -> web.Application:
    sids = itertools.count(1)

    async def create(request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Basic "):
            return web.json_response({"code": 20003, "status": 401}, status=401)
        form = await request.post()
        to, body = str(form.get("To") or ""), str(form.get("Body") or "")
        if not to or not body:
            return web.json_response({"code": 21602, "status": 400}, status=400)
        await answer_after(sampler)
        sid = f"SM{next(sids):032x}"
        same = hashlib.blake2b(f"{to}\x1f{body}".encode(), digest_size=16).hexdigest()
        recorder.record(sid, same)
        account = request.match_info["account"]
        return web.json_response(
            {
                "sid": sid,
                "account_sid": account,
                "to": to,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": body,
                "status": "queued",
                "num_segments": "1",
                "num_media": "0",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
            },
            status=201,
        )

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", create)
    control_routes(app, recorder)
    return app


class SmtpHandler:
    """aiosmtpd handler: accept every message, record it by the delivery id in its Message-ID."""

    def __init__(self, recorder: Recorder, sampler: Sampler) -> None:
        self.recorder = recorder
        self.sampler = sampler
        self.unkeyed = itertools.count(1)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """aiosmtpd's EHLO answer plus PIPELINING: it reads commands line by line from
        its stream, so a group written at once is answered in order."""
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content or b""
        head = content.split(b"\r\n\r\n", 1)[0]
        match = _MESSAGE_ID.search(head)
        key = match.group(1).decode() if match else f"?{next(self.unkeyed)}"
        await answer_after(self.sampler)
        self.recorder.record(key)
        return "250 2.0.0 OK"


async def _serve_http(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def serve(kind: str, latency: Latency = NO_LATENCY) -> None:
    """Run one sink until SIGTERM/SIGINT; print its ports as one JSON line first."""
    recorder = Recorder()
    sampler = latency.sampler(kind)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners: list[web.AppRunner] = []
    server: asyncio.Server | None = None
    if kind == "fcm":
        runner, port = await _serve_http(fcm_app(recorder, sampler))
        runners.append(runner)
        control = port
    elif kind == "twilio":
        runner, port = await _serve_http(twilio_app(recorder, sampler))
        runners.append(runner)
        control = port
    elif kind == "smtp":
        from aiosmtpd.smtp import SMTP

        handler = SmtpHandler(recorder, sampler)
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="bench-sink", ident="bench-sink"), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        control_app = web.Application()
        control_routes(control_app, recorder)
        runner, control = await _serve_http(control_app)
        runners.append(runner)
    else:
        raise SystemExit(f"unknown sink kind {kind!r}")
    print(json.dumps({"kind": kind, "port": port, "control": control}), flush=True)
    await stop.wait()
    if server is not None:
        server.close()
    for runner in runners:
        await runner.cleanup()


# --------------------------------------------------------------------------- the bench side


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(argv: list[str], env: dict[str, str] | None, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start a child in a session (process group) of its own, so it can be killed whole."""
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it does not go in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    if proc.stdout is not None:
        proc.stdout.close()


class SinkProcess:
    """One sink in its own process, started with :meth:`start`, queried over HTTP."""

    def __init__(self, kind: str, log: IO[bytes], latency: Latency = NO_LATENCY) -> None:
        self.kind = kind
        self.latency = latency
        self._log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.control = 0
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 20.0) -> None:
        argv = [sys.executable, "-m", "gateway.bench.sinks", self.kind, "--latency"]
        self.proc = spawn([*argv, str(self.latency)], None, self._log)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line:
            raise RuntimeError(f"the {self.kind} sink did not start (see the bench log)")
        ready = json.loads(line)
        self.port, self.control = int(ready["port"]), int(ready["control"])
        self._http = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{self.control}")

    async def _call(self, method: str, path: str) -> Any:
        assert self._http is not None
        async with self._http.request(method, path) as response:
            response.raise_for_status()
            return await response.json()

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/_bench/stats")
        return result

    async def records(self) -> dict[str, float]:
        result: dict[str, float] = await self._call("GET", "/_bench/records")
        return result

    async def reset(self) -> None:
        await self._call("POST", "/_bench/reset")

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.proc is not None:
            await asyncio.to_thread(kill_group, self.proc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.sinks")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument(
        "--latency", type=latency_argument, default=NO_LATENCY, help="e.g. 80ms or 50ms:300ms"
    )
    args = parser.parse_args(argv)
    asyncio.run(serve(args.kind, args.latency))


if __name__ == "__main__":
    main()
