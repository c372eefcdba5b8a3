"""The dispatcher's ready buffer: a send of a full channel is set aside, the jobs behind
it start, and it starts first (in claim order) once its channel has room again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.ready_buffer import Ready, ReadyBuffer

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def buffer(*entries: tuple[str, str | None]) -> ReadyBuffer[str]:
    ready: ReadyBuffer[str] = ReadyBuffer()
    for n, (job, channel) in enumerate(entries):
        ready.append(Ready(job, T0 + timedelta(seconds=n), channel))
    return ready


def taken(ready: ReadyBuffer[str], fits: Callable[[str], bool]) -> str | None:
    """The job ``take`` gives (it comes with its channel), or None."""
    entry = ready.take(fits)
    return None if entry is None else entry.job


def test_a_send_of_a_full_channel_is_set_aside_and_the_jobs_behind_it_start() -> None:
    ready = buffer(("sms1", "sms"), ("email1", "email"), ("sms2", "sms"), ("plan", None))
    full = {"sms"}
    fits = lambda channel: channel not in full  # noqa: E731
    assert [taken(ready, fits), taken(ready, fits)] == ["email1", "plan"]
    assert taken(ready, fits) is None
    assert (len(ready), ready.held("sms")) == (2, 2)
    assert not ready.startable(fits)
    full.clear()  # the channel has room again: its sends go in claim order
    assert ready.startable(fits)
    assert [taken(ready, fits), taken(ready, fits), taken(ready, fits)] == ["sms1", "sms2", None]
    assert len(ready) == 0 and not ready


def test_set_aside_sends_are_given_back_by_age_and_on_shutdown() -> None:
    ready = buffer(("sms1", "sms"), ("email1", "email"), ("sms2", "sms"), ("email2", "email"))
    assert taken(ready, lambda channel: channel == "email") == "email1"
    assert ready.held("sms") == 1
    # claimed at T0+0 (sms1, set aside) and T0+2 (sms2, not looked at yet)
    assert list(ready.take_older(T0 + timedelta(seconds=2))) == ["sms2", "sms1"]
    assert (len(ready), ready.held("sms")) == (1, 0)
    assert list(ready.take_all()) == ["email2"]
    assert len(ready) == 0
