"""``budbringer bench``: the emergency broadcast, the absence path, and the ceiling.

Everything runs on 127.0.0.1 in processes of its own: three provider sinks, the
gateway (``budbringer serve``, configured through the environment to send to the
sinks) and, afterwards, the ceiling client in this process. Progress goes to
stderr; the table and then one line of JSON go to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import math
import os
import platform
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from gateway.bench import ceiling, redis_server
from gateway.bench.cpu_quota import CpuQuotaError, CpuQuotas, check_fraction
from gateway.bench.latency import NO_LATENCY, Latency
from gateway.bench.redis_server import RedisServer
from gateway.bench.redis_stats import CommandCounts, snapshot
from gateway.bench.sinks import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PROJECT_ID,
    SinkProcess,
    free_port,
    kill_group,
    spawn,
    write_service_account,
)
from gateway.bench.synth import Municipality, generate
from gateway.event_loop import EventLoopKind
from gateway.settings import DispatchSettings, Settings, SmtpSettings

CHANNELS = ("push", "sms", "email")
TWILIO_CONNECTIONS = 100  # aiohttp's default pool, which twilio's async client uses
FCM_CONNECTIONS = 64  # FcmSettings.connections (default)
SMTP_CONNECTIONS: int = SmtpSettings.model_fields["connections"].default  # the gateway's default
JSON_KEYS = (
    "scenario",
    "handover_s",
    "ratio",
    "urgent_p50_ms",
    "urgent_p99_ms",
    "cpu_s_per_1000",
    "ceiling_cpu_s_per_1000",
    "redis_commands_per_delivery",
    "redis_scripts_per_delivery",
    "redis_round_trips_per_delivery",
    "redis_cpu_s_per_1000",
    "backend",
    "children",
    "guardians",
    "deliveries",
    "seconds",
    "deliveries_per_s",
    "push_ratio",
    "sms_ratio",
    "email_ratio",
    "latency",
    "absence_p50_ms",
    "absence_p99_ms",
    "peak_rss_mb",
    "worker_cpu",
    "lost",
    "duplicates",
    "python",
)


# How often call() tries a request the gateway answers 503 (busy) before giving up.
_BUSY_TRIES = 10

SCENARIOS = ("emergency", "mixed", "urgent")
# Urgent work posted during a broadcast (gateway/bench/mixed.py): a general one, or an
# emergency to every unit (fairness inside the urgent lane, gateway/store/lanes.py).
DURING_A_BROADCAST = ("mixed", "urgent")


@dataclass(frozen=True)
class Meters:
    """What the gateway used so far: CPU seconds of its processes, Redis commands, and
    with ``--worker-cpu`` its CFS periods (all, and those its budget ran out in)."""

    cpu_s: float = 0.0
    redis: CommandCounts | None = None
    periods: tuple[int, int] = (0, 0)
    loop_cpu_s: float = 0.0  # of that, their main threads' (each runs the event loop)
    # seconds those main threads were ready to run but waited for a core (None: the
    # kernel keeps no schedstat)
    loop_wait_s: float | None = 0.0

    def __sub__(self, other: Meters) -> Meters:
        redis = None
        if self.redis is not None and other.redis is not None:
            redis = self.redis - other.redis
        periods = (self.periods[0] - other.periods[0], self.periods[1] - other.periods[1])
        loop = self.loop_cpu_s - other.loop_cpu_s
        wait = None
        if self.loop_wait_s is not None and other.loop_wait_s is not None:
            wait = self.loop_wait_s - other.loop_wait_s
        return Meters(self.cpu_s - other.cpu_s, redis, periods, loop, wait)

    @property
    def throttled(self) -> float | None:
        """The share of CFS periods in which a gateway process had used up its budget."""
        return round(self.periods[1] / self.periods[0], 3) if self.periods[0] else None


class BenchError(Exception):
    """The benchmark cannot run as asked (bad options, a missing backend, a stuck stage)."""


@dataclass
class Options:
    children: int = 12_000
    seed: int = 1
    backend: str = "sqlite"
    workers: int = 1
    concurrency: int = DispatchSettings().concurrency  # sends in flight (gateway and ceiling)
    smtp_connections: int = SMTP_CONNECTIONS  # the gateway's SMTP pool and the ceiling's
    absence_events: int = 300
    absence_rate: float = 20.0  # events per second
    redis_url: str = ""  # empty: a redis-server of the benchmark's own (redis_server.py)
    timeout: float = 240.0  # for each waiting stage
    keep: bool = False  # keep the work directory (database, logs)
    profile: Path | None = None  # py-spy collapsed stacks of the gateway during the emergency
    latency: Latency = NO_LATENCY  # how long the sinks take to answer (gateway and ceiling)
    scenario: str = "emergency"  # or "mixed"/"urgent": urgent work during a broadcast
    urgent_handoff: int | None = None  # DISPATCH__URGENT_HANDOFF of the gateway (None: its default)
    # A CFS quota (share of one core) for each gateway process, in a cgroup of its own
    # (gateway/bench/cpu_quota.py); None: no quota.
    worker_cpu: float | None = None
    # The gateway's event loop and this process's (so the ceiling runs on the same kind).
    event_loop: EventLoopKind = Settings.model_fields["event_loop"].default
    log: IO[str] = field(default_factory=lambda: sys.stderr)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (kB) of a process, from /proc (no psutil)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int, *, main_thread: bool = False) -> float:
    """User + system CPU seconds of a process so far, or of its main thread alone."""
    path = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
    try:
        with open(path, encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_seconds(pid: int) -> float | None:
    """Seconds the main thread of process ``pid`` was ready to run but waited for a core
    (the second field of ``/proc/<pid>/task/<pid>/schedstat``); None where the kernel
    keeps no schedstat (or the process is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat", encoding="ascii") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


Scenario = Callable[["Bench"], Awaitable[dict[str, Any]]]


class Bench:
    """One run. :meth:`run` returns the result dict; :meth:`cleanup` always follows."""

    def __init__(self, options: Options, mixed: Scenario | None = None) -> None:
        self.o = options
        # The mixed scenario (gateway/bench/mixed.py), given by gateway/bench/main.py so
        # that this module does not import the scenario that imports it.
        self.mixed = mixed
        self.work = Path(tempfile.mkdtemp(prefix="budbringer-bench-"))
        self.log_file = (self.work / "processes.log").open("ab")
        self.sinks = {
            kind: SinkProcess(kind, self.log_file, options.latency)
            for kind in ("fcm", "twilio", "smtp")
        }
        self.gateways: list[Any] = []  # subprocess.Popen of serve/worker processes
        self.port = 0
        self.http: aiohttp.ClientSession | None = None
        self.api_key = ""
        self.tenant_id = ""
        self.town: Municipality | None = None
        self.result: dict[str, Any] = {}
        self.probe_id = ""  # the message of the absence.recorded probe, if there was one
        # A keyspace of its own on a shared Redis, removed again in cleanup().
        self.redis_prefix = f"bench{secrets.token_hex(4)}"
        self.redis_url = options.redis_url
        self.redis_server: RedisServer | None = None
        self.quotas: CpuQuotas | None = None

    # ------------------------------------------------------------------ helpers

    def say(self, text: str) -> None:
        print(f"[bench] {text}", file=self.o.log, flush=True)

    @property
    def store_url(self) -> str:
        if self.o.backend == "sqlite":
            return f"sqlite:///{self.work / 'bench.db'}"
        joint = "&" if "?" in self.redis_url else "?"
        return f"{self.redis_url}{joint}prefix={self.redis_prefix}"

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """One API call as a well-behaved client makes it: a 503 (the store busy, e.g. a
        Redis snapshot torn by concurrent writes) is tried again after its Retry-After."""
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token or self.api_key}"}
        url = f"http://127.0.0.1:{self.port}{path}"
        for attempt in range(_BUSY_TRIES):
            async with self.http.request(method, url, json=body, headers=headers) as response:
                json_body = response.content_type == "application/json"
                data = await response.json() if json_body else None
                if response.status == 503 and attempt + 1 < _BUSY_TRIES:
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                if response.status >= 400:
                    raise BenchError(f"{method} {path} -> {response.status}: {str(data)[:300]}")
                return data
        raise AssertionError("unreachable")

    def _check_options(self) -> None:
        o = self.o
        if o.backend not in ("sqlite", "redis"):
            raise BenchError("--backend must be sqlite or redis")
        if o.workers < 1:
            raise BenchError("--workers must be at least 1")
        if o.backend == "sqlite" and o.workers != 1:
            raise BenchError(
                "with the embedded SQLite store only one gateway process makes sense (one "
                "writer); use --backend redis for --workers > 1"
            )
        if o.backend == "redis" and importlib.util.find_spec("gateway.store.redis") is None:
            raise BenchError(
                "the redis backend is not available yet (gateway/store/redis/ is missing); "
                "run with --backend sqlite"
            )
        if o.children < 10:
            raise BenchError("--children must be at least 10")
        if o.scenario not in SCENARIOS:
            raise BenchError(f"--scenario must be one of {', '.join(SCENARIOS)}")
        if o.worker_cpu is not None:
            try:
                check_fraction(o.worker_cpu)
            except CpuQuotaError as exc:
                raise BenchError(str(exc)) from exc

    def gateway_env(self, service_account: Path) -> dict[str, str]:
        fcm, twilio, smtp = self.sinks["fcm"], self.sinks["twilio"], self.sinks["smtp"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUDBRINGER_")}
        env.update(
            {
                "BUDBRINGER_STORE_URL": self.store_url,
                "BUDBRINGER_HOST": "127.0.0.1",
                "BUDBRINGER_PORT": str(self.port),
                "BUDBRINGER_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
                "BUDBRINGER_SECRET_KEY": secrets.token_urlsafe(48),
                "BUDBRINGER_LOG_LEVEL": "WARNING",
                "BUDBRINGER_OUTBOX_DIR": str(self.work / "outbox"),
                "BUDBRINGER_SMTP__HOST": "127.0.0.1",
                "BUDBRINGER_SMTP__PORT": str(smtp.port),
                "BUDBRINGER_SMTP__TLS": "none",
                "BUDBRINGER_SMTP__SENDER": "Bench kommune <varsel@bench.invalid>",
                "BUDBRINGER_SMTP__CONNECTIONS": str(self.o.smtp_connections),
                "BUDBRINGER_TWILIO__ACCOUNT_SID": ACCOUNT_SID,
                "BUDBRINGER_TWILIO__AUTH_TOKEN": AUTH_TOKEN,
                "BUDBRINGER_TWILIO__BASE_URL": twilio.url,
                "BUDBRINGER_TWILIO__DEFAULT_SENDER": "Budbringer",
                "BUDBRINGER_FCM__SERVICE_ACCOUNT_FILE": str(service_account),
                "BUDBRINGER_FCM__BASE_URL": fcm.url,
                "BUDBRINGER_FCM__TOKEN_URL": f"{fcm.url}/token",
                "BUDBRINGER_DISPATCH__CONCURRENCY": str(self.o.concurrency),
                "BUDBRINGER_EVENT_LOOP": self.o.event_loop,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.o.urgent_handoff is not None:
            env["BUDBRINGER_DISPATCH__URGENT_HANDOFF"] = str(self.o.urgent_handoff)
        return env

    # ------------------------------------------------------------------ stages

    async def start(self) -> None:
        self._check_options()
        self.say(f"work directory {self.work}")
        await asyncio.gather(*(sink.start() for sink in self.sinks.values()))
        await self._start_redis()
        service_account = write_service_account(
            self.work / "service-account.json", f"{self.sinks['fcm'].url}/token"
        )
        await self._create_tenant()
        self.port = free_port()
        env = self.gateway_env(service_account)
        cli = [sys.executable, "-m", "gateway.cli"]
        self._open_quotas()
        for n, command in enumerate(["serve"] + ["worker"] * (self.o.workers - 1)):
            self.gateways.append(spawn([*cli, command], env, self.log_file))
            if self.quotas is not None:  # placed while it still imports, before it forks
                self.quotas.confine(self.gateways[-1].pid, f"{command}-{n}")
        # A pooled connection is dropped well before the gateway's keep-alive (its
        # HTTP__HEADER_TIMEOUT, 15 s) ends it: at equal times a post after an idle spell
        # could meet a connection the gateway was closing ("Cannot write to closing transport").
        connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=5.0)
        self.http = aiohttp.ClientSession(connector=connector)
        deadline = time.monotonic() + 30
        while True:
            for proc in self.gateways:
                if proc.poll() is not None:
                    raise BenchError(f"the gateway exited ({proc.returncode}); see {self.work}")
            with contextlib.suppress(aiohttp.ClientError, BenchError):
                if (await self.call("GET", "/readyz"))["status"] == "ready":
                    break
            if time.monotonic() > deadline:
                raise BenchError("the gateway did not become ready in 30 s")
            await asyncio.sleep(0.1)
        self.say(f"gateway ready on port {self.port} ({self.o.backend}, {self.o.workers} process)")

    def _open_quotas(self) -> None:
        if self.o.worker_cpu is None:
            return
        try:
            self.quotas = CpuQuotas.create(self.o.worker_cpu)
        except CpuQuotaError as exc:
            raise BenchError(str(exc)) from exc
        where = f"cgroup v{self.quotas.hierarchy.version} {self.quotas.top}"
        budget = f"{self.o.worker_cpu:g} of a core"
        self.say(f"each gateway process gets {budget} once set up ({where})")

    async def _start_redis(self) -> None:
        """With ``--backend redis`` and no ``--redis-url``: a private redis-server, so
        the command counts are the gateway's alone (the shared one otherwise)."""
        if self.o.backend != "redis" or self.redis_url:
            return
        if not redis_server.available():
            self.redis_url = _SHARED_REDIS
            self.say(f"no redis-server on the PATH: using {_SHARED_REDIS} (counts whole server)")
            return
        self.redis_server = RedisServer(self.work, self.log_file)
        self.redis_url = await self.redis_server.start()
        self.say(f"a redis-server of its own: {self.redis_url}")

    async def _create_tenant(self) -> None:
        from gateway.auth import create_tenant
        from gateway.clock import SystemClock
        from gateway.store.backends import open_store

        store = open_store(self.store_url)
        await store.open()
        try:
            tenant, api_key, _ = await create_tenant(store, "Bench kommune", SystemClock().now())
        finally:
            await store.close()
        self.tenant_id, self.api_key = tenant.id, api_key

    async def seed(self) -> float:
        """The municipality through the directory API, devices through the parent-app API."""
        started = time.monotonic()
        town = self.town = generate(self.o.children, self.o.seed)
        await self.call("POST", "/v1/directory", {"units": town.units, "groups": town.groups})
        guardians = list(town.guardian_rows())
        for rows in _chunks(town.children + guardians, 2000):
            await self.call("POST", "/v1/directory", {"persons": rows})
        for rows in _chunks(town.relations, 5000):
            await self.call("POST", "/v1/directory", {"relations": rows})
        self.say(
            f"directory: {len(town.children)} children, {len(guardians)} guardians, "
            f"{len(town.relations)} relations in {time.monotonic() - started:.1f} s"
        )
        with_app = [g for g in town.guardians if g.device_token]
        devices_started = time.monotonic()

        async def register(guardian_id: str, device_token: str) -> None:
            token = (await self.call("POST", f"/v1/guardians/{guardian_id}/tokens"))["token"]
            body = {"token": device_token, "platform": "android", "app_version": "bench"}
            await self.call("PUT", "/v1/me/devices/d1", body, token=token)

        # The parent-app API, 32 registrations at a time (an app launch each, in reality).
        queue = iter(with_app)

        async def worker() -> None:
            for guardian in queue:
                assert guardian.device_token is not None
                await register(guardian.id, guardian.device_token)

        await asyncio.gather(*(worker() for _ in range(32)))
        self.say(
            f"devices: {len(with_app)} registered through the API in "
            f"{time.monotonic() - devices_started:.1f} s"
        )
        return time.monotonic() - started

    async def wait_idle(self) -> None:
        """Until no plan or send job waits in the gateway's queue (metrics scrape)."""
        assert self.http is not None
        deadline = time.monotonic() + self.o.timeout
        while time.monotonic() < deadline:
            async with self.http.get(f"http://127.0.0.1:{self.port}/metrics") as response:
                text = await response.text()
            waiting = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                # Only planning and sending: other kinds (escalation, ...) are due later.
                if line.startswith(_BUSY_QUEUES)
            )
            if waiting == 0:
                return
            await asyncio.sleep(0.2)
        raise BenchError("the gateway's queue did not drain in time")

    async def post_event(self, event: dict[str, Any]) -> tuple[str, float]:
        data = await self.call("POST", "/v1/events", event)
        return str(data["message_id"]), time.time()

    async def wait_for(self, targets: dict[str, int], what: str) -> None:
        """Until each sink has at least ``targets[channel]`` distinct hand-overs."""
        deadline = time.monotonic() + self.o.timeout
        report = time.monotonic() + 5
        while True:
            stats = {c: await self.sinks[_SINK_OF[c]].stats() for c in targets}
            if all(stats[c]["distinct"] >= n for c, n in targets.items()):
                return
            if time.monotonic() > report:
                report += 5
                self.say(f"{what}: " + ", ".join(f"{c} {stats[c]['distinct']}" for c in targets))
            for proc in self.gateways:
                if proc.poll() is not None:
                    raise BenchError(f"the gateway exited during {what}; see {self.work}")
            if time.monotonic() > deadline:
                got = {c: stats[c]["distinct"] for c in targets}
                raise BenchError(f"{what}: not all deliveries handed over ({got} of {targets})")
            await asyncio.sleep(0.1)

    async def emergency(self) -> dict[str, Any]:
        """Scenario 1: one emergency message to every unit, on every channel."""
        assert self.town is not None
        town = self.town
        expected = town.expected()
        for sink in self.sinks.values():
            await sink.reset()
        rss_before = sum(proc_status(p.pid).get("VmRSS", 0) for p in self.gateways)
        before = await self.meters()
        bench_cpu_before = time.process_time()
        sinks_cpu_before = sum([(await sink.stats())["cpu_s"] for sink in self.sinks.values()])
        event = {
            "id": f"bench-emergency-{self.o.seed}-{secrets.token_hex(4)}",
            "type": "message.created",
            "data": {
                "sender_name": "Kommunedirektøren",
                "audience": {"units": town.unit_ids},
                "category": "emergency",
                "urgency": "high",
                "subject": "Skolen er stengt i dag",
                "body": "Alle skoler og barnehager er stengt i dag på grunn av uvær. "
                "Hold barna hjemme. Mer informasjon kommer.",
            },
        }
        self.say(f"emergency to {len(town.unit_ids)} units; expecting {expected}")
        profiler = self.start_profiler()
        message_id, accepted = await self.post_event(event)
        await self.wait_for({c: expected[c] for c in CHANNELS}, "emergency")
        used = await self.meters() - before
        bench_cpu_s = time.process_time() - bench_cpu_before
        sinks_cpu_s = sum([(await sink.stats())["cpu_s"] for sink in self.sinks.values()])
        sinks_cpu_s -= sinks_cpu_before
        await self.stop_profiler(profiler)
        await self.wait_idle()
        # Work a send leaves for later (outcome commits, status changes) counts too.
        to_idle = await self.meters() - before
        await asyncio.sleep(0.5)  # a late duplicate would show up now
        records = {c: await self.sinks[s].records() for c, s in _SINK_OF.items()}
        stats = {c: await self.sinks[s].stats() for c, s in _SINK_OF.items()}
        deliveries = await self.deliveries([message_id])
        by_delivery = _hand_overs(deliveries, records)
        planned = {c: sum(1 for d in deliveries if d.channel == c) for c in (*CHANNELS, "inapp")}
        inapp_done = sum(
            1 for d in deliveries if d.channel == "inapp" and d.status.value == "delivered"
        )
        lost = sum(planned[c] - len(by_delivery[c]) for c in CHANNELS)
        lost += planned["inapp"] - inapp_done
        duplicates = sum(int(stats[c]["duplicates"]) for c in CHANNELS)
        duplicates += sum(int(stats[c]["distinct"]) - len(by_delivery[c]) for c in CHANNELS)
        latencies = [t - accepted for c in CHANNELS for t in by_delivery[c].values()]
        last = {c: max(by_delivery[c].values(), default=accepted) for c in CHANNELS}
        seconds = max(last.values()) - accepted
        return {
            "message_id": message_id,
            "expected": expected,
            "planned": planned,
            "handed": {c: len(by_delivery[c]) for c in CHANNELS},
            "seconds": seconds,
            "channel_seconds": {c: last[c] - accepted for c in CHANNELS},
            "rates": {c: len(by_delivery[c]) / max(last[c] - accepted, 1e-9) for c in CHANNELS},
            "first_ms": min(latencies, default=0.0) * 1000,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p95_ms": percentile(latencies, 95) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "lost": lost,
            "duplicates": duplicates,
            "gateway_cpu_s": used.cpu_s,
            "gateway_cpu_to_idle_s": to_idle.cpu_s,
            "meters": used,
            "rss_before_mb": rss_before / 1024,
            "sink_cpu_s": {c: round(stats[c]["cpu_s"], 1) for c in CHANNELS},
            "others_cpu_s": bench_cpu_s + sinks_cpu_s,
        }

    async def meters(self) -> Meters:
        cpu = sum(cpu_seconds(p.pid) for p in self.gateways)
        loop = sum(cpu_seconds(p.pid, main_thread=True) for p in self.gateways)
        waits = [run_queue_seconds(p.pid) for p in self.gateways]
        wait = None if None in waits else sum(w for w in waits if w is not None)
        redis = await snapshot(self.redis_url) if self.o.backend == "redis" else None
        periods = self.quotas.periods() if self.quotas is not None else (0, 0)
        return Meters(cpu, redis, periods, loop, wait)

    async def stop_profiler(self, profiler: Any) -> None:
        if profiler is not None:
            os.killpg(profiler.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
            await asyncio.to_thread(profiler.wait, 60)
            self.say(f"profile of the gateway written to {self.o.profile}")

    def start_profiler(self) -> Any:
        """py-spy on the serve process (collapsed stacks, threads and idle included)."""
        if self.o.profile is None:
            return None
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(py_spy).exists():
            raise BenchError("--profile needs py-spy (pip install py-spy)")
        argv = [py_spy, "record", "--pid", str(self.gateways[0].pid), "--format", "raw"]
        argv += ["--rate", "200", "--idle", "--threads", "--output", str(self.o.profile)]
        return spawn(argv, None, self.log_file)

    async def deliveries(self, message_ids: Sequence[str]) -> list[Any]:
        from gateway.store.backends import open_store

        store = open_store(self.store_url)
        await store.open()
        try:
            out: list[Any] = []
            for message_id in message_ids:
                out.extend(await store.list_deliveries(self.tenant_id, message_id))
            return out
        finally:
            await store.close()

    def absence_event(self, n: int, child_id: str, real: bool) -> dict[str, Any]:
        if real:
            return {
                "id": f"bench-absence-{self.o.seed}-{n}-{secrets.token_hex(3)}",
                "type": "absence.recorded",
                "data": {"child_id": child_id, "lesson": {"number": 0 if n < 0 else 1}},
            }
        return {
            "id": f"bench-absence-like-{self.o.seed}-{n}-{secrets.token_hex(3)}",
            "type": "message.created",
            "data": {
                "audience": {"children": [child_id]},
                "category": "emergency",
                "urgency": "high",
                "subject": f"Fravær registrert ({n})",
                "body": "Barnet ditt er ikke registrert som til stede. Ta kontakt med skolen.",
            },
        }

    async def absence_is_real(self, child_id: str) -> bool:
        """Whether the gateway takes ``absence.recorded`` (else: single-child emergencies)."""
        from gateway.api.events import EVENT_TYPES

        if "absence.recorded" not in EVENT_TYPES:
            return False
        try:  # a mark for another lesson than the measured ones: never de-duplicated
            probe = await self.call("POST", "/v1/events", self.absence_event(-1, child_id, True))
            self.probe_id = str(probe["message_id"])
        except BenchError as exc:
            self.say(f"absence.recorded refused our event ({exc}); measuring absence-like")
            return False
        return True

    async def absence(self) -> dict[str, Any]:
        """Scenario 2: single-child alerts at a steady rate, each 202 -> SMS and push."""
        assert self.town is not None
        town = self.town
        rng = random.Random(self.o.seed + 1)
        children = town.children_told()
        picked = rng.sample(children, min(self.o.absence_events, len(children)))
        real = await self.absence_is_real(picked[0])
        kind = "absence.recorded" if real else "absence-like (absence.recorded not implemented yet)"
        await self.wait_idle()
        for sink in self.sinks.values():
            await sink.reset()
        self.say(f"{kind}: {len(picked)} events at {self.o.absence_rate:g}/s")
        accepted: dict[str, float] = {}
        interval = 1 / self.o.absence_rate
        start = time.monotonic()
        posts = []
        for n, child_id in enumerate(picked):
            await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
            event = self.absence_event(n, child_id, real)
            posts.append(asyncio.ensure_future(self.post_event(event)))
        for message_id, at in await asyncio.gather(*posts):
            accepted[message_id] = at
        await self.wait_idle()
        # What the gateway planned on SMS and push for these alerts, then their hand-overs.
        deliveries = [
            d for d in await self.deliveries(list(accepted)) if d.channel in ("push", "sms")
        ]
        deadline = time.monotonic() + self.o.timeout
        while True:
            records = {c: await self.sinks[s].records() for c, s in _SINK_OF.items()}
            by_delivery = _hand_overs(deliveries, records)
            if sum(len(v) for v in by_delivery.values()) >= len(deliveries):
                break
            if time.monotonic() > deadline:
                raise BenchError("absence: not every SMS and push was handed over in time")
            await asyncio.sleep(0.2)
            deliveries = [
                d for d in await self.deliveries(list(accepted)) if d.channel in ("push", "sms")
            ]
        latest: dict[str, float] = {}
        for d in deliveries:
            handed = by_delivery[d.channel].get(d.id)
            if handed is not None:
                latest[d.message_id] = max(latest.get(d.message_id, 0.0), handed)
        latencies = [latest[m] - accepted[m] for m in accepted if m in latest]
        await self.wait_idle()
        return {
            "kind": kind,
            "events": len(picked),
            "measured": len(latencies),
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "max_ms": max(latencies, default=0.0) * 1000,
        }

    async def stop_gateway(self) -> float:
        """Peak RSS (MB, summed over gateway processes), then a graceful stop."""
        peak = sum(proc_status(p.pid).get("VmHWM", 0) for p in self.gateways) / 1024
        for proc in self.gateways:
            await asyncio.to_thread(kill_group, proc, 30.0)
        return peak

    async def ceiling(self, counts: dict[str, int]) -> dict[str, Any]:
        for sink in self.sinks.values():
            await sink.reset()
        work = ceiling.Work(
            push=counts["push"],
            sms=counts["sms"],
            email=counts["email"],
            concurrency=self.o.concurrency,
            # the gateway's own per-channel limits (DISPATCH__CHANNEL_CONCURRENCY defaults)
            limits={c: DispatchSettings().in_flight_limit(c) for c in CHANNELS},
            push_connections=FCM_CONNECTIONS,
            sms_connections=TWILIO_CONNECTIONS,
            smtp_connections=self.o.smtp_connections,
            seed=self.o.seed,
        )
        self.say(f"ceiling: {counts} straight to the sinks, {work.concurrency} at a time")
        cpu_before = time.process_time()  # this process runs the ceiling client and only it
        started = await ceiling.run_ceiling(
            work,
            fcm_url=self.sinks["fcm"].url,
            twilio_url=self.sinks["twilio"].url,
            smtp_port=self.sinks["smtp"].port,
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            project_id=PROJECT_ID,
        )
        cpu_s = time.process_time() - cpu_before
        out: dict[str, Any] = {"rates": {}, "seconds": {}}
        out["cpu_s_per_1000"] = cpu_s / max(sum(counts.values()), 1) * 1000
        for channel, kind in _SINK_OF.items():
            times = (await self.sinks[kind].records()).values()
            seconds = max(times, default=started) - started
            out["seconds"][channel] = seconds
            out["rates"][channel] = len(times) / max(seconds, 1e-9)
        return out

    async def run(self) -> dict[str, Any]:
        await self.start()
        setup_s = await self.seed()
        await self.wait_idle()
        if self.quotas is not None:
            self.quotas.limit()
        if self.o.scenario in DURING_A_BROADCAST:
            if self.mixed is None:
                raise BenchError("the mixed scenario was not given to this benchmark")
            mixed = await self.mixed(self)
            peak = await self.stop_gateway()
            ceil = await self.ceiling(mixed["broadcast_counts"])
            return self._mixed_result(setup_s, mixed, ceil, peak)
        emergency = await self.emergency()
        absence = await self.absence()
        peak = await self.stop_gateway()
        ceil = await self.ceiling(emergency["handed"])
        return self._result(setup_s, emergency, absence, ceil, peak)

    def _figures(
        self,
        seconds: float,
        ceil: dict[str, Any],
        deliveries: int,
        urgent: tuple[float, float],
        meters: Meters,
    ) -> dict[str, Any]:
        """The figures every scenario reports (first in the JSON line)."""
        per = max(deliveries, 1)
        redis = meters.redis
        ceiling_seconds = max(ceil["seconds"].values())
        return {
            "scenario": self.o.scenario,
            "handover_s": round(seconds, 3),
            # the ceiling client's time for the same traffic under the same latency
            "ratio": round(ceiling_seconds / seconds, 3) if seconds > 0 else 0.0,
            "urgent_p50_ms": round(urgent[0], 1),
            "urgent_p99_ms": round(urgent[1], 1),
            "cpu_s_per_1000": round(meters.cpu_s / per * 1000, 3),
            # what the bare client itself spends on the same traffic (the bench process)
            "ceiling_cpu_s_per_1000": round(ceil["cpu_s_per_1000"], 3),
            "redis_commands_per_delivery": round(redis.total / per, 1) if redis else None,
            "redis_scripts_per_delivery": round(redis.scripts / per, 2) if redis else None,
            "redis_round_trips_per_delivery": round(redis.reads / per, 2) if redis else None,
            "redis_cpu_s_per_1000": round(redis.cpu_s / per * 1000, 3) if redis else None,
            "redis_top_commands": redis.top(per) if redis else None,
            "worker_cpu": self.o.worker_cpu,
            # with --worker-cpu: was the budget what limited the gateway (near 1) or not
            "worker_throttled": meters.throttled,
        }

    def _mixed_result(
        self, setup_s: float, mixed: dict[str, Any], ceil: dict[str, Any], peak: float
    ) -> dict[str, Any]:
        assert self.town is not None
        counts, b_seconds = mixed["broadcast_counts"], mixed["broadcast_seconds"]
        broadcast = sum(counts.values())
        handover = max(b_seconds.values())
        rates = {c: counts[c] / b_seconds[c] if b_seconds[c] > 0 else 0.0 for c in CHANNELS}
        ratios = {
            c: round(rates[c] / ceil["rates"][c], 3) if counts[c] and ceil["rates"][c] else None
            for c in CHANNELS
        }
        urgent = (mixed["absence_p50_ms"], mixed["absence_p99_ms"])
        figures = self._figures(handover, ceil, mixed["deliveries"], urgent, mixed["meters"])
        return {
            **figures,
            "backend": self.o.backend,
            "workers": self.o.workers,
            "children": len(self.town.children),
            "guardians": len(self.town.guardians),
            "deliveries": mixed["deliveries"],
            "broadcast_deliveries": broadcast,
            "broadcast_inapp": mixed["broadcast_inapp"],
            "seconds": round(mixed["seconds"], 3),
            "deliveries_per_s": round(broadcast / max(handover, 1e-9), 1),
            **{f"{c}_per_s": round(rates[c], 1) for c in CHANNELS},
            **{f"ceiling_{c}_per_s": round(ceil["rates"][c], 1) for c in CHANNELS},
            **{f"{c}_ratio": ratios[c] for c in CHANNELS},
            "emergency_deliveries": mixed["emergency_deliveries"],
            "emergency_s": round(mixed["emergency_s"], 3),
            "absence_kind": mixed["absence_kind"],
            "absence_events": mixed["absence_events"],
            "absence_p50_ms": round(mixed["absence_p50_ms"], 1),
            "absence_p99_ms": round(mixed["absence_p99_ms"], 1),
            "urgent_handoff": self.o.urgent_handoff,
            "peak_rss_mb": round(peak, 1),
            "gateway_cpu_s": round(mixed["meters"].cpu_s, 1),
            "lost": mixed["lost"],
            "duplicates": mixed["duplicates"],
            "concurrency": self.o.concurrency,
            "latency": str(self.o.latency),
            "smtp_connections": self.o.smtp_connections,
            "event_loop": self.o.event_loop,
            "python": platform.python_version(),  # the gateway's, sinks' and ceiling's too
            "setup_s": round(setup_s, 1),
            "channel_seconds": {c: round(v, 3) for c, v in b_seconds.items()},
            "ceiling_seconds": {c: round(v, 3) for c, v in ceil["seconds"].items()},
        }

    def _result(
        self,
        setup_s: float,
        emergency: dict[str, Any],
        absence: dict[str, Any],
        ceil: dict[str, Any],
        peak: float,
    ) -> dict[str, Any]:
        assert self.town is not None
        deliveries = sum(emergency["planned"][c] for c in CHANNELS)
        processes = len(self.gateways)
        ratios = {
            c: emergency["rates"][c] / ceil["rates"][c] if ceil["rates"][c] else 0.0
            for c in CHANNELS
        }
        urgent = (absence["p50_ms"], absence["p99_ms"])
        figures = self._figures(
            emergency["seconds"],
            ceil,
            deliveries,
            urgent,
            emergency["meters"],
        )
        return {
            **figures,
            "backend": self.o.backend,
            "workers": self.o.workers,
            "children": len(self.town.children),
            "guardians": len(self.town.guardians),
            "deliveries": deliveries,
            "inapp": emergency["planned"]["inapp"],
            "seconds": round(emergency["seconds"], 3),
            "deliveries_per_s": round(deliveries / max(emergency["seconds"], 1e-9), 1),
            "push_per_s": round(emergency["rates"]["push"], 1),
            "sms_per_s": round(emergency["rates"]["sms"], 1),
            "email_per_s": round(emergency["rates"]["email"], 1),
            "ceiling_push_per_s": round(ceil["rates"]["push"], 1),
            "ceiling_sms_per_s": round(ceil["rates"]["sms"], 1),
            "ceiling_email_per_s": round(ceil["rates"]["email"], 1),
            "push_ratio": round(ratios["push"], 3),
            "sms_ratio": round(ratios["sms"], 3),
            "email_ratio": round(ratios["email"], 3),
            "first_ms": round(emergency["first_ms"], 1),
            "p50_ms": round(emergency["p50_ms"], 1),
            "p95_ms": round(emergency["p95_ms"], 1),
            "p99_ms": round(emergency["p99_ms"], 1),
            "absence_kind": absence["kind"],
            "absence_events": absence["events"],
            "absence_p50_ms": round(absence["p50_ms"], 1),
            "absence_p99_ms": round(absence["p99_ms"], 1),
            "peak_rss_mb": round(peak, 1),
            "rss_before_mb": round(emergency["rss_before_mb"], 1),
            "gateway_cpu_s": round(emergency["gateway_cpu_s"], 1),
            "gateway_cpu_to_idle_s": round(emergency["gateway_cpu_to_idle_s"], 2),
            "loop_busy": _loop_share(emergency["meters"].loop_cpu_s, emergency, processes),
            "loop_waiting": _loop_share(emergency["meters"].loop_wait_s, emergency, processes),
            "lost": emergency["lost"],
            "duplicates": emergency["duplicates"],
            "concurrency": self.o.concurrency,
            "latency": str(self.o.latency),
            "smtp_connections": self.o.smtp_connections,
            "event_loop": self.o.event_loop,
            "python": platform.python_version(),  # the gateway's, sinks' and ceiling's too
            "setup_s": round(setup_s, 1),
            "channel_seconds": {c: round(v, 3) for c, v in emergency["channel_seconds"].items()},
            "ceiling_seconds": {c: round(v, 3) for c, v in ceil["seconds"].items()},
            "sink_cpu_s": emergency["sink_cpu_s"],
            "others_cores": round(_others_cores(emergency), 2),
        }

    async def cleanup(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None
        for proc in self.gateways:
            await asyncio.to_thread(kill_group, proc)
        await asyncio.gather(*(sink.stop() for sink in self.sinks.values()))
        # A shared Redis (not a server of our own), if the run got as far as choosing it.
        shared = self.redis_server is None and bool(self.redis_url)
        if self.o.backend == "redis" and not self.o.keep and shared:
            await self._drop_redis_keys()

    async def _drop_redis_keys(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.from_url(self.redis_url)
        try:
            batch: list[Any] = []
            async for key in client.scan_iter(match=f"{self.redis_prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.unlink(*batch)
                    batch = []
            if batch:
                await client.unlink(*batch)
        finally:
            await client.aclose()

    def kill_everything(self) -> None:
        """Synchronous last resort (Ctrl-C, errors): no child outlives the benchmark."""
        procs = [*self.gateways, *(s.proc for s in self.sinks.values() if s.proc is not None)]
        for proc in procs:
            kill_group(proc, timeout=3.0)
        if self.redis_server is not None:
            self.redis_server.stop()
        if self.quotas is not None:
            for group in self.quotas.remove():
                self.say(f"could not remove the cgroup {group}; remove it by hand")
            self.quotas = None
        self.log_file.close()
        if not self.o.keep:
            shutil.rmtree(self.work, ignore_errors=True)


_SHARED_REDIS = "redis://127.0.0.1:6379/0"
_SINK_OF = {"push": "fcm", "sms": "twilio", "email": "smtp"}
_BUSY_QUEUES = ('budbringer_queue_depth{kind="plan"', 'budbringer_queue_depth{kind="send"')


def _loop_share(loop_s: float | None, emergency: dict[str, Any], processes: int) -> float | None:
    """Seconds of the gateway processes' event-loop threads as a share of the hand-over,
    per process: on a core (``loop_busy``), or ready to run but waiting for a core
    (``loop_waiting``; None where the kernel keeps no schedstat). What is left of the
    hand-over the loop truly waited: for I/O or for the store's thread."""
    if loop_s is None:
        return None
    seconds = max(float(emergency["seconds"]), 1e-9)
    return round(loop_s / max(processes, 1) / seconds, 2)


def _others_cores(emergency: dict[str, Any]) -> float:
    """Cores the rest of the machine's bench used during the emergency: the sinks, the
    redis-server and this process (what must fit beside the gateway's budgets)."""
    redis = emergency["meters"].redis
    used = emergency["others_cpu_s"] + (redis.cpu_s if redis is not None else 0.0)
    return float(used / max(emergency["seconds"], 1e-9))


def _chunks(rows: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _hand_overs(
    deliveries: Sequence[Any], records: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """channel -> delivery id -> first hand-over time at the sink. Push and email sinks
    key by delivery id; the Twilio sink by the SID the gateway stored as provider id."""
    out: dict[str, dict[str, float]] = {c: {} for c in CHANNELS}
    for d in deliveries:
        if d.channel not in out:
            continue
        key = d.provider_id if d.channel == "sms" else d.id
        at = records[d.channel].get(key) if key else None
        if at is not None:
            out[d.channel][d.id] = at
    return out


def share_text(fraction: float | None) -> str:
    """A share as a percentage; "n/a" when none was counted (no CFS period ended)."""
    return "n/a" if fraction is None else f"{fraction:.0%}"


def _budget(r: dict[str, Any]) -> str:
    if r["worker_cpu"] is None:
        return ""
    throttled = r["worker_throttled"]
    others = f", the rest used {r['others_cores']:.2f} cores" if "others_cores" in r else ""
    return (
        f"; each gateway process limited to {r['worker_cpu']:g} of a core (CFS quota; "
        f"budget used up in {share_text(throttled)} of periods{others})"
    )


def _heading(r: dict[str, Any]) -> list[str]:
    return [
        f"Budbringer benchmark ({r['scenario']}) — {r['backend']} store, {r['workers']} "
        f"gateway process(es), dispatch concurrency {r['concurrency']}, "
        f"{r['smtp_connections']} SMTP connections, Python {r['python']} and the "
        f"{r['event_loop']} loop (gateway and ceiling), sinks answer in {r['latency']}"
        + (" (median:p99, slowest 1 in 1000: 2 s)" if ":" in r["latency"] else "")
        + _budget(r),
        f"municipality: {r['children']} children, {r['guardians']} guardians "
        f"(set-up through the API: {r['setup_s']} s)",
        "",
    ]


def _channel_rows(r: dict[str, Any]) -> list[str]:
    lines = [f"  {'channel':<8}{'gateway/s':>11}{'last at s':>11}{'ceiling/s':>11}{'ratio':>8}"]
    for c in CHANNELS:
        ratio = r[f"{c}_ratio"]
        lines.append(
            f"  {c:<8}{r[f'{c}_per_s']:>11.0f}{r['channel_seconds'][c]:>11.2f}"
            f"{r[f'ceiling_{c}_per_s']:>11.0f}"
            + (f"{ratio:>8.2f}" if ratio is not None else f"{'-':>8}")
        )
    return lines


def _figure_rows(r: dict[str, Any]) -> list[str]:
    redis = (
        f"{r['redis_commands_per_delivery']} Redis commands per delivery (scripts' inner "
        f"calls included), {r['redis_scripts_per_delivery']} script calls and "
        f"{r['redis_round_trips_per_delivery']} round trips (socket reads) per delivery, "
        f"redis-server CPU {r['redis_cpu_s_per_1000']} s per 1,000"
        if r["redis_commands_per_delivery"] is not None
        else "Redis commands: - (SQLite store)"
    )
    return [
        "",
        f"figures: hand-over {r['handover_s']:.2f} s, ratio {r['ratio']:.2f} to the bare "
        f"client under the same latency, urgent p50 {r['urgent_p50_ms']:.0f} ms / p99 "
        f"{r['urgent_p99_ms']:.0f} ms",
        f"  CPU {r['cpu_s_per_1000']:.3f} s per 1,000 deliveries (the bare client: "
        f"{r['ceiling_cpu_s_per_1000']:.3f}); {redis}; "
        f"lost {r['lost']} duplicates {r['duplicates']}",
    ]


def mixed_table(r: dict[str, Any]) -> str:
    what = "Emergency" if r["scenario"] == "urgent" else "General notice"
    lines = [
        *_heading(r),
        f"{what} to every unit: {r['broadcast_deliveries']} provider deliveries "
        f"(+{r['broadcast_inapp']} in-app)",
        f"  all handed over in {r['handover_s']:.2f} s  ({r['deliveries_per_s']:.0f} "
        f"deliveries/s); everything (with the urgent work) in {r['seconds']:.2f} s",
        f"  lost {r['lost']}  duplicates {r['duplicates']}  gateway peak RSS "
        f"{r['peak_rss_mb']:.0f} MB  gateway CPU {r['gateway_cpu_s']:.1f} s",
        "",
        *_channel_rows(r),
        "",
        "Posted during the broadcast:",
        f"  emergency to one unit: {r['emergency_deliveries']} provider deliveries, all "
        f"handed over {r['emergency_s'] * 1000:.0f} ms after its 202",
        f"  {r['absence_kind']}: {r['absence_events']} events, 202 -> SMS and push handed "
        f"over p50 {r['absence_p50_ms']:.1f} ms  p99 {r['absence_p99_ms']:.1f} ms",
    ]
    return "\n".join(lines + _figure_rows(r))


def table(result: dict[str, Any]) -> str:
    """The readable summary printed above the JSON line."""
    r = result
    if r["scenario"] in DURING_A_BROADCAST:
        return mixed_table(r)
    lines = [
        *_heading(r),
        f"Emergency to every unit: {r['deliveries']} provider deliveries (+{r['inapp']} in-app)",
        f"  all handed over in {r['seconds']:.2f} s  ({r['deliveries_per_s']:.0f} deliveries/s)",
        f"  accept -> hand-over  first {r['first_ms']:.0f} ms  p50 {r['p50_ms']:.0f} ms  "
        f"p95 {r['p95_ms']:.0f} ms  "
        f"p99 {r['p99_ms']:.0f} ms",
        f"  lost {r['lost']}  duplicates {r['duplicates']}  "
        f"gateway peak RSS {r['peak_rss_mb']:.0f} MB (before: {r['rss_before_mb']:.0f} MB)  "
        f"gateway CPU {r['gateway_cpu_s']:.1f} s (event-loop thread busy {r['loop_busy']:.0%}"
        + ("" if r.get("loop_waiting") is None else f", waiting for a core {r['loop_waiting']:.0%}")
        + ")",
        "",
        *_channel_rows(r),
    ]
    lines += [
        "",
        f"{r['absence_kind']}: {r['absence_events']} events, 202 -> SMS and push handed over",
        f"  p50 {r['absence_p50_ms']:.1f} ms  p99 {r['absence_p99_ms']:.1f} ms",
    ]
    return "\n".join(lines + _figure_rows(r))
