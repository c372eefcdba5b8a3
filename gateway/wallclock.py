"""Wall-clock times in a time zone, to UTC instants, safe across daylight-saving changes
(quiet hours and the daily digest use them)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def wall_clock_to_utc(day: date, at: time, zone: ZoneInfo, after: datetime) -> datetime:
    """The first instant after ``after`` at which the clock in ``zone`` reads ``day`` ``at``.

    A time repeated when clocks go back resolves to its next occurrence; a time
    skipped when clocks go forward resolves to the moment of the jump.
    """
    wall = datetime.combine(day, at)
    earlier = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    later = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if earlier.astimezone(zone).replace(tzinfo=None) == wall:
        # The time exists (once, or twice when clocks go back: fold=0 is the first).
        return earlier if earlier > after or later <= earlier else later
    # Skipped: fold=1 reads the wall time with the new offset (before the jump), fold=0
    # with the old one (after it). Search the jump between them to the second.
    low, high = min(earlier, later), max(earlier, later)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)
