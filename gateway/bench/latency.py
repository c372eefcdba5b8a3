"""How long the benchmark's provider sinks take to answer (``--latency``).

* ``0`` (the default): at once.
* ``80ms`` or ``0.08s``: always that long.
* ``50ms:300ms``: a long tail like a real provider's: log-normal with a median of 50 ms
  and a 99th percentile of 300 ms, whose slowest answer in a thousand takes
  :data:`STALL_SECONDS` instead (a provider's hiccup).

The gateway and the bare-client ceiling send to the same sinks, so both meet the same
latency. Each sink draws from a generator seeded by its kind: runs are repeatable.
"""

from __future__ import annotations

import argparse
import math
import random
import re
from dataclasses import dataclass

STALL_SECONDS = 2.0
_Z99 = 2.3263478740408408  # the standard normal's 99th percentile
_Z999 = 3.090232306167813  # ... and its 99.9th: the slowest answer in a thousand stalls
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")


def _seconds(text: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (say e.g. 50ms or 0.05s)")
    value = float(match.group(1))
    return value / 1000 if match.group(2) in (None, "ms") else value


@dataclass(frozen=True)
class Latency:
    median: float  # seconds
    p99: float  # seconds; equal to median: a fixed latency

    @classmethod
    def parse(cls, text: str) -> Latency:
        """``0``, ``80ms``, ``0.08s`` or ``MEDIAN:P99`` such as ``50ms:300ms``."""
        median_text, _, p99_text = text.partition(":")
        median = _seconds(median_text)
        p99 = _seconds(p99_text) if p99_text else median
        if p99 < median:
            raise ValueError(f"the p99 of {text!r} is below its median")
        if p99 > median == 0:
            raise ValueError(f"a long tail needs a median above 0: {text!r}")
        return cls(median, p99)

    @property
    def fixed(self) -> bool:
        return self.p99 == self.median

    def __str__(self) -> str:
        ms = f"{self.median * 1000:g}ms"
        return ms if self.fixed else f"{ms}:{self.p99 * 1000:g}ms"

    def sampler(self, seed: str) -> Sampler:
        return Sampler(self, random.Random(seed))


NO_LATENCY = Latency(0.0, 0.0)


def argument(text: str) -> Latency:
    """``--latency``'s type: argparse reports a bad value with the reason."""
    try:
        return Latency.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Sampler:
    """Draws the answer times of one sink."""

    def __init__(self, latency: Latency, rng: random.Random) -> None:
        self.latency = latency
        self._rng = rng
        self._sigma = 0.0 if latency.fixed else math.log(latency.p99 / latency.median) / _Z99

    def draw(self) -> float:
        if self.latency.fixed:
            return self.latency.median
        z = self._rng.gauss(0.0, 1.0)
        if z > _Z999:
            return STALL_SECONDS
        return self.latency.median * math.exp(z * self._sigma)
