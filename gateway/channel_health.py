"""Per-channel circuit breaker and the channel state the operator sees.

Every send reports its outcome here. After ``threshold`` consecutive channel-wide
transient failures of one channel (connection refused, SMTP 421, HTTP 5xx, ...) the
channel is ``degraded``: its sends wait while the breaker is open, then a single send
probes the provider; a failing probe doubles the pause (up to ``max_pause``), a working
one closes the breaker. A provider that refuses our credentials (ChannelUnavailable)
makes the channel ``stopped``; it is probed every ``stopped_pause`` seconds.

So a relay answering 421 for 30 s costs a handful of connection attempts, not one per
delivery and retry; the state (with since-when and the last error code) is in
``/readyz``'s body and the ``budbringer_channel_state`` metric; a WARNING goes to the
log when a channel starts failing (at most one per channel per ``warn_every``) and an
INFO when it works again. Log lines carry the channel and error code, never an address.

Each process has its own breaker (workers of one deployment each pause by themselves).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from gateway.clock import Clock
from gateway.errors import (
    ChannelUnavailable,
    LeaseShort,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.metrics import CHANNEL_STATE

log = logging.getLogger(__name__)


REASON_PREFIX = "channel_"  # of ChannelHealth.reason, the job's error while it waits


def state_in_reason(reason: str | None, channel: str) -> str | None:
    """The channel state a job's error says it waits for (:meth:`ChannelHealth.reason`),
    or None when it says something else."""
    if not reason or not reason.startswith(REASON_PREFIX) or not reason.endswith(f":{channel}"):
        return None
    return reason[len(REASON_PREFIX) :].split(":", 1)[0]


class ChannelState(StrEnum):
    ok = "ok"
    degraded = "degraded"  # transient failures: paused, probing with backoff
    stopped = "stopped"  # the provider refuses our credentials: probed rarely


@dataclass
class _Health:
    state: ChannelState
    since: datetime
    last_error: str | None = None
    failures: int = 0  # consecutive channel-wide transient failures
    pause: float = 0.0  # seconds the breaker stays open after the last failed probe
    open_until: datetime | None = None
    probing: bool = False  # a probe is in flight: the other sends keep waiting
    warned_at: datetime | None = None


class ChannelHealth:
    """The breaker of every channel of one process. Times come from ``clock``."""

    def __init__(
        self,
        clock: Clock,
        *,
        threshold: int = 5,
        first_pause: float = 1.0,
        max_pause: float = 60.0,
        stopped_pause: float = 60.0,
        warn_every: float = 60.0,
        follow_max: float = 5.0,
    ) -> None:
        self.clock = clock
        self.threshold = threshold
        self.first_pause = first_pause
        self.max_pause = max_pause
        self.stopped_pause = stopped_pause
        self.warn_every = warn_every
        self.follow_max = follow_max  # longest wait of a send behind a probe in flight
        self._health: dict[str, _Health] = {}

    def watch(self, channels: list[str]) -> None:
        """Start reporting ``channels`` as ok (so /readyz and the metric list them)."""
        for name in channels:
            self._get(name)

    def _get(self, channel: str) -> _Health:
        health = self._health.get(channel)
        if health is None:
            health = self._health[channel] = _Health(ChannelState.ok, self.clock.now())
            self._publish(channel, health)
        return health

    # ------------------------------------------------------------------ before a send

    def paused_until(self, channel: str) -> datetime | None:
        """When a send on ``channel`` may go ahead; None: now (no breaker, or a probe due)."""
        health = self._health.get(channel) or self._get(channel)  # asked twice per send
        if health.state is ChannelState.ok:
            return None
        now = self.clock.now()
        if health.open_until is not None and now < health.open_until:
            return health.open_until
        if health.probing:
            # Soon: if the probe gets through, the waiting sends follow within seconds; not
            # every second either, so a slow probe does not churn the whole queue.
            wait = min(max(self.first_pause, health.pause / 2), self.follow_max)
            return now + timedelta(seconds=wait)
        return None

    def admit(self, channel: str) -> tuple[datetime | None, bool]:
        """Right before a send: (None, probe) to send now, else (when to try, False).

        While the breaker is open every send waits; when it is due, exactly one send
        (the probe: ``probe`` is True) goes ahead and the others wait another pause."""
        health = self._health.get(channel) or self._get(channel)
        if health.state is ChannelState.ok:
            return None, False  # the breaker is closed: every send goes, none probes
        wait = self.paused_until(channel)
        if wait is not None:
            return wait, False
        health.probing = True
        return None, True

    def reason(self, channel: str) -> str:
        """Why a send on ``channel`` waits: ``channel_degraded:email``, ``channel_stopped:sms``."""
        return f"{REASON_PREFIX}{self.state(channel).value}:{channel}"

    # ------------------------------------------------------------------ after a send

    def record(self, channel: str, error: BaseException | None, *, probe: bool) -> None:
        """The outcome of one send (``error`` None: accepted by the provider)."""
        if error is None or isinstance(error, PermanentDeliveryError):
            self.worked(channel)  # the provider answered, if only about this delivery
        elif isinstance(error, TransientDeliveryError) and not isinstance(error, LeaseShort):
            if error.per_recipient:
                self.worked(channel)
            else:
                self.failed(
                    channel, error.code or "transient", probe=probe, retry_after=error.retry_after
                )
        elif isinstance(error, ChannelUnavailable):
            self.refused(channel, error.code or "unavailable", probe=probe)
        elif probe:
            # Cancelled, stopped short of its lease's end, or a bug: nothing learnt about
            # the provider; the next send probes.
            self._get(channel).probing = False

    def worked(self, channel: str) -> None:
        """The provider answered (sent, or refused this one delivery): the channel works."""
        health = self._health.get(channel) or self._get(channel)  # after every send
        health.failures = 0
        if health.state is ChannelState.ok:
            return
        log.info(
            "channel works again",
            extra={"channel": channel, "was": health.state.value, "code": health.last_error},
        )
        self._set(channel, health, ChannelState.ok)
        health.pause, health.open_until, health.probing = 0.0, None, False

    def failed(
        self, channel: str, code: str, *, probe: bool, retry_after: float | None = None
    ) -> None:
        """A channel-wide transient failure (connection, 421, 5xx, timeout) of a send
        (``probe``: the one :meth:`admit` let through while the breaker was open). A
        provider's ``Retry-After`` keeps the breaker open at least that long."""
        health = self._get(channel)
        health.last_error = code
        health.failures += 1
        if health.state is ChannelState.ok:
            if health.failures < self.threshold:
                self._publish(channel, health)
                return
            self._set(channel, health, ChannelState.degraded)
            self._warn(channel, health, "channel failing: sends paused, probing with backoff")
            health.pause = self.first_pause
        elif probe and health.state is ChannelState.stopped:
            # Our credentials pass again; the provider is only busy: back off from the start.
            self._set(channel, health, ChannelState.degraded)
            health.pause = self.first_pause
        elif probe:
            # The probe failed: wait twice as long before the next one.
            health.pause = min(max(health.pause * 2, self.first_pause), self.max_pause)
        else:
            return  # a send that started before the breaker opened: no new information
        self._open(channel, health, max(health.pause, retry_after or 0.0))

    def refused(self, channel: str, code: str, *, probe: bool) -> None:
        """The provider refused our credentials: the channel is stopped."""
        health = self._get(channel)
        health.last_error = code
        if health.state is ChannelState.stopped and not probe:
            return  # a send that started before the channel stopped
        health.pause = self.stopped_pause
        if health.state is not ChannelState.stopped:
            self._set(channel, health, ChannelState.stopped)
            log.error(
                "channel stopped: provider refused our credentials",
                extra={"channel": channel, "code": code},
            )
        self._open(channel, health, self.stopped_pause)

    def _open(self, channel: str, health: _Health, pause: float) -> None:
        health.probing = False
        health.open_until = self.clock.now() + timedelta(seconds=pause)
        self._publish(channel, health)

    def _set(self, channel: str, health: _Health, state: ChannelState) -> None:
        health.state = state
        health.since = self.clock.now()
        self._publish(channel, health)

    def _warn(self, channel: str, health: _Health, text: str) -> None:
        now = self.clock.now()
        if health.warned_at is None or now - health.warned_at >= timedelta(seconds=self.warn_every):
            health.warned_at = now
            log.warning(
                text,
                extra={
                    "channel": channel,
                    "code": health.last_error,
                    "failures": health.failures,
                },
            )

    def _publish(self, channel: str, health: _Health) -> None:
        for state in ChannelState:
            CHANNEL_STATE.labels(channel, state.value).set(int(health.state is state))

    # ------------------------------------------------------------------ reading

    def state(self, channel: str) -> ChannelState:
        health = self._health.get(channel)
        return ChannelState.ok if health is None else health.state

    def unavailable(self) -> dict[str, str]:
        """Channels not ok -> their last error code."""
        return {
            name: health.last_error or health.state.value
            for name, health in self._health.items()
            if health.state is not ChannelState.ok
        }

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """channel -> {"state", "since", "last_error"} for /readyz."""
        return {
            name: {
                "state": health.state.value,
                "since": health.since.isoformat(),
                "last_error": health.last_error,
            }
            for name, health in sorted(self._health.items())
        }
