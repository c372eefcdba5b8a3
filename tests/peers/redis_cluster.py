"""A real three-node Redis Cluster for tests: three ``redis-server`` processes on free
127.0.0.1 ports (no persistence), joined with ``redis-cli --cluster create``.

    with ClusterPeer(tmp_dir) as cluster:
        store = RedisStore(cluster.url, prefix="...")   # redis://127.0.0.1:p/?cluster=1

``available()`` says whether redis-server and redis-cli are installed; ``stop()``
(and leaving the ``with``) ends the processes it started, and only those.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

NODES = 3
_READY_SECONDS = 20.0


def available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ClusterPeer:
    """Three cluster primaries, no replicas, all 16384 slots covered."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/?cluster=1"

    def start(self) -> None:
        ports = _free_ports(2 * NODES)
        self.ports, bus = ports[:NODES], ports[NODES:]
        try:
            for port, bus_port in zip(self.ports, bus, strict=True):
                options = {
                    "bind": "127.0.0.1",
                    "port": str(port),
                    "cluster-enabled": "yes",
                    "cluster-port": str(bus_port),
                    "cluster-config-file": str(self.directory / f"nodes-{port}.conf"),
                    "dir": str(self.directory),
                    "save": "",
                    "appendonly": "no",
                    "daemonize": "no",
                }
                args = [arg for k, v in options.items() for arg in (f"--{k}", v)]
                self._procs.append(
                    subprocess.Popen(
                        ["redis-server", *args],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            for port in self.ports:
                self._wait(lambda p=port: self._pings(p))
            subprocess.run(
                [
                    *("redis-cli", "--cluster", "create"),
                    *(f"127.0.0.1:{p}" for p in self.ports),
                    *("--cluster-replicas", "0", "--cluster-yes"),
                ],
                check=True,
                capture_output=True,
                timeout=_READY_SECONDS,
            )
            for port in self.ports:
                self._wait(lambda p=port: self._state_ok(p))
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _pings(port: int) -> bool:
        with redis.Redis(port=port) as client:
            return bool(client.ping())

    @staticmethod
    def _state_ok(port: int) -> bool:
        with redis.Redis(port=port, decode_responses=True) as client:
            info = client.execute_command("CLUSTER", "INFO")
        return "cluster_state:ok" in str(info)

    @staticmethod
    def _wait(ready: object) -> None:
        # Polls an external process until it is ready; no test logic depends on timing.
        deadline = time.monotonic() + _READY_SECONDS
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                if ready():  # type: ignore[operator]
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not come up")
            time.sleep(0.05)

    def stop(self) -> None:
        procs, self._procs = self._procs, []
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def forget_keys(self, prefix: str) -> None:
        """Delete every key of a prefix on every node (never FLUSHALL)."""
        for port in self.ports:
            with redis.Redis(port=port) as client:
                batch = list(client.scan_iter(match=f"{prefix}:*", count=1000))
                for key in batch:  # one slot per key: no cross-slot commands
                    client.unlink(key)

    def __enter__(self) -> ClusterPeer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
