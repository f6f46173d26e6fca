"""Fire times for schedules: the Trigger protocol and fixed intervals.

This module is pure time arithmetic: no asyncio, no engine, no clock. The scheduler calls
``trigger.next_after(t)`` again and again to find fire times, passing the previous fire time
(or the current time) as ``t``. Every trigger takes and returns timezone-aware datetimes, and
every result is in UTC and strictly later than its argument. Cron expressions are in
:mod:`obsjobs.cron`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, Protocol, final, runtime_checkable

from obsjobs.errors import InvalidScheduleError

__all__ = ["IntervalTrigger", "Trigger"]

UNIX_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
"""The default anchor of :class:`IntervalTrigger`."""

MIN_INTERVAL: Final = timedelta(milliseconds=1)
"""The shortest ``every`` that :class:`IntervalTrigger` accepts."""


def as_utc(wall: datetime) -> datetime:
    """Attach UTC to a naive datetime whose value is already a UTC time."""
    return wall.replace(tzinfo=UTC)


def require_aware(value: object, parameter: str) -> datetime:
    """Return ``value`` if it is a timezone-aware datetime, else raise naming ``parameter``."""
    if not isinstance(value, datetime):
        raise TypeError(f"{parameter} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{parameter} must be a timezone-aware datetime, got naive {value.isoformat()}. "
            "Attach a zone, for example with .replace(tzinfo=UTC)"
        )
    return value


@runtime_checkable
class Trigger(Protocol):
    """A schedule that computes its fire times: what the scheduler loop iterates.

    Implementations are pure and deterministic: the same ``after`` always gives the same
    result, so several schedulers agree on every tick.
    """

    description: str
    """A human-readable summary for logs and errors, such as ``cron '*/5 * * * *' in UTC``."""

    def next_after(self, after: datetime) -> datetime:
        """Return the first fire time strictly later than ``after``, as an aware UTC datetime.

        Raises:
            TypeError: ``after`` is not a datetime.
            ValueError: ``after`` is naive.
        """
        ...


def _to_microseconds(delta: timedelta) -> int:
    """Return ``delta`` as an exact integer number of microseconds."""
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@final
class IntervalTrigger:
    """Fire times on a fixed grid ``anchor + k * every`` of elapsed (UTC) time.

    ``next_after(t)`` returns the smallest grid point strictly later than ``t``, so the
    grid never drifts: a job that runs late or long does not move later ticks. The default
    anchor is the Unix epoch in UTC, which keeps the grid the same across restarts and
    processes: ``every=timedelta(minutes=5)`` fires at :00, :05, :10 and so on of each hour.
    The grid counts elapsed time, not wall-clock time, so an hourly grid anchored at a
    local midnight no longer lands on local midnight after a daylight-saving change.
    Arithmetic is on integer microseconds, so the grid does not drift over any span.

    Raises:
        InvalidScheduleError: ``every`` is zero, negative or shorter than 1 ms.
            ``schedule`` is ``name``, or ``every N`` when no name is given.
        TypeError: ``every`` is not a timedelta, or ``anchor`` not a datetime.
        ValueError: ``anchor`` is naive.
    """

    every: timedelta
    """The distance between two grid points."""
    anchor: datetime
    """A grid point, as given (timezone-aware)."""
    description: str
    """A summary such as ``every 0:05:00 from 1970-01-01T00:00:00+00:00``."""

    def __init__(
        self, every: timedelta, *, anchor: datetime | None = None, name: str | None = None
    ) -> None:
        if not isinstance(every, timedelta):
            raise TypeError(f"every must be a datetime.timedelta, got {type(every).__name__}")
        schedule = name or f"every {every}"
        if every <= timedelta(0):
            raise InvalidScheduleError(
                f"every must be a positive timedelta, got {every!r}", schedule=schedule
            )
        if every < MIN_INTERVAL:
            raise InvalidScheduleError(
                f"every must be at least 1 ms, got {every!r}", schedule=schedule
            )
        self.every = every
        self.anchor = UNIX_EPOCH if anchor is None else require_aware(anchor, "anchor")
        self.description = f"every {every} from {self.anchor.isoformat()}"
        # Aware datetimes that share a tzinfo subtract and add as wall-clock times, so
        # all arithmetic happens on UTC values.
        self._anchor_utc = self.anchor.astimezone(UTC)
        self._every_us = _to_microseconds(every)

    def __repr__(self) -> str:
        return f"IntervalTrigger({self.every!r}, anchor={self.anchor!r})"

    def next_after(self, after: datetime) -> datetime:
        """Return the first grid point strictly later than ``after``, in UTC.

        Raises:
            TypeError: ``after`` is not a datetime.
            ValueError: ``after`` is naive.
            OverflowError: the grid point lies past the end of year 9999.
        """
        instant = require_aware(after, "after").astimezone(UTC)
        elapsed_us = _to_microseconds(instant - self._anchor_utc)
        # Floor division rounds toward minus infinity, so this is also correct before the anchor.
        ticks = elapsed_us // self._every_us + 1
        return self._anchor_utc + timedelta(microseconds=ticks * self._every_us)
