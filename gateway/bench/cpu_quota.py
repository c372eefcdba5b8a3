"""A fixed CPU budget for each gateway process of ``budbringer bench --worker-cpu``.

On a small machine the benchmark's sinks, its redis-server and the bench process (the
ceiling client) share cores with the gateway, so a second worker process mostly takes
CPU from them instead of adding its own: worker scaling cannot show. A CFS quota per
gateway process, in a cgroup of its own (``cpu.cfs_quota_us`` on cgroup v1, ``cpu.max``
on v2), gives each one the same budget, which nothing else can take and which it cannot
exceed (a high weight makes it a reservation as well as a cap, whatever else runs on
the machine); the rest is left to the sinks, Redis and the bench process.

It needs a writable cpu controller (root, or a delegated cgroup); without one
:class:`CpuQuotaError` says what was missing. :meth:`CpuQuotas.remove` takes the groups
away again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # the kernel's smallest CFS quota
# A hundred times the default weight (v1 cpu.shares 1024, v2 cpu.weight 100): under
# contention a confined process gets its budget before anything else runs, so the
# quota is a reservation as well as a cap (its sum stays below the machine's cores).
WEIGHT = {1: ("cpu.shares", "102400"), 2: ("cpu.weight", "10000")}
MOUNTS = Path("/proc/self/mounts")
TOP_PREFIX = "budbringer-bench-"  # then the bench's pid, "-" and a random part


class CpuQuotaError(Exception):
    """No CPU budget can be set: the fraction is out of range or no cgroup is writable."""


def check_fraction(fraction: float) -> None:
    """A budget between the kernel's smallest quota and the whole machine."""
    cores = os.cpu_count() or 1
    if not MIN_QUOTA_US / PERIOD_US <= fraction <= cores:
        raise CpuQuotaError(
            f"--worker-cpu is a fraction of one core between {MIN_QUOTA_US / PERIOD_US:g} "
            f"and {cores} (the cores of this machine), not {fraction:g}"
        )


@dataclass(frozen=True)
class Hierarchy:
    """A mounted cgroup hierarchy that may carry the cpu controller."""

    root: Path
    version: int  # 1: a "cgroup" mount with the cpu option; 2: the unified "cgroup2"


def hierarchies(mounts: Path = MOUNTS) -> list[Hierarchy]:
    """The cgroup v1 cpu mounts and the cgroup v2 mounts, in the order of ``mounts``."""
    out = []
    for line in mounts.read_text(encoding="utf-8").splitlines():
        _, where, kind, options, *_ = line.split()
        if kind == "cgroup" and "cpu" in options.split(","):
            out.append(Hierarchy(Path(where), 1))
        elif kind == "cgroup2":
            out.append(Hierarchy(Path(where), 2))
    return out


@dataclass
class CpuQuotas:
    """Cgroups under one parent of this benchmark's, one per confined process."""

    fraction: float
    hierarchy: Hierarchy
    top: Path
    groups: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, fraction: float, mounts: Path = MOUNTS) -> CpuQuotas:
        """The parent group in the first writable hierarchy; :class:`CpuQuotaError`
        naming every hierarchy tried (and why it failed) when there is none."""
        check_fraction(fraction)
        reasons = []
        for hierarchy in hierarchies(mounts):
            try:
                return cls._create_in(fraction, hierarchy)
            except (OSError, CpuQuotaError) as exc:
                reasons.append(f"{hierarchy.root} (cgroup v{hierarchy.version}): {exc}")
        if not reasons:
            reasons.append(f"no cgroup hierarchy with the cpu controller in {mounts}")
        raise CpuQuotaError(
            "--worker-cpu needs a writable cgroup cpu controller (run as root, or in a "
            "delegated cgroup): " + "; ".join(reasons)
        )

    @classmethod
    def _create_in(cls, fraction: float, hierarchy: Hierarchy) -> CpuQuotas:
        root = hierarchy.root
        if hierarchy.version == 2:
            controllers = (root / "cgroup.controllers").read_text(encoding="ascii").split()
            if "cpu" not in controllers:
                raise CpuQuotaError(f"no cpu controller (cgroup.controllers: {controllers})")
        _sweep(hierarchy)
        top = root / f"{TOP_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        top.mkdir()
        try:
            if hierarchy.version == 2:  # children of top may then set cpu.max
                for group in (root, top):
                    (group / "cgroup.subtree_control").write_text("+cpu", encoding="ascii")
            _write(top, *WEIGHT[hierarchy.version])
        except OSError:
            top.rmdir()
            raise
        return cls(fraction, hierarchy, top)

    @property
    def quota_us(self) -> int:
        return max(MIN_QUOTA_US, round(self.fraction * PERIOD_US))

    def confine(self, pid: int, name: str) -> Path:
        """Give process ``pid`` (all its threads) a group of its own; its budget applies
        from :meth:`limit` on (so that setting up the benchmark is not slowed down)."""
        group = self.top / name
        with _failing(f"placing a gateway process in {group}"):
            group.mkdir()
            self.groups.append(group)
            _write(group, *WEIGHT[self.hierarchy.version])
            _write(group, "cgroup.procs", str(pid))
        return group

    def limit(self) -> None:
        """From now on each confined process runs at most its budget."""
        with _failing("setting the CPU budget"):
            self._limit()

    def _limit(self) -> None:
        for group in self.groups:
            if self.hierarchy.version == 1:
                _write(group, "cpu.cfs_period_us", str(PERIOD_US))
                _write(group, "cpu.cfs_quota_us", str(self.quota_us))
            else:
                _write(group, "cpu.max", f"{self.quota_us} {PERIOD_US}")

    def periods(self) -> tuple[int, int]:
        """CFS periods so far, summed over the groups: all of them, and those in which a
        confined process used up its budget (it would have run more)."""
        periods = throttled = 0
        for group in self.groups:
            with _failing(f"reading {group / 'cpu.stat'}"):
                lines = (group / "cpu.stat").read_text("ascii").splitlines()
            stat = dict(line.split() for line in lines)
            periods += int(stat.get("nr_periods", 0))
            throttled += int(stat.get("nr_throttled", 0))
        return periods, throttled

    def remove(self) -> list[Path]:
        """Remove every group (a process still in one moves to the hierarchy's root
        first); returns the groups that could not be removed."""
        left = []
        for group in [*reversed(self.groups), self.top]:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text("ascii").split():
                    with contextlib.suppress(OSError):  # it may have exited meanwhile
                        (self.hierarchy.root / "cgroup.procs").write_text(pid, "ascii")
            try:
                group.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(group)
        self.groups = []
        return left


def _sweep(hierarchy: Hierarchy) -> None:
    """Remove the groups of earlier benchmarks whose process is gone (one killed before
    it could remove its own), so their processes' high weight does not outlive them."""
    for top in hierarchy.root.glob(f"{TOP_PREFIX}*-*"):
        pid = top.name.removeprefix(TOP_PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            groups = [g for g in top.iterdir() if g.is_dir()]
            CpuQuotas(0.0, hierarchy, top, groups).remove()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _failing(doing: str) -> Iterator[None]:
    """An OSError while ``doing`` as a :class:`CpuQuotaError` that says what failed."""
    try:
        yield
    except OSError as exc:
        raise CpuQuotaError(f"{doing} failed: {exc.strerror or exc}") from exc


def _write(group: Path, name: str, value: str) -> None:
    (group / name).write_text(value, encoding="ascii")
