"""Clocks for the scheduler: the system clock, and a manual one for tests."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Protocol, final, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]

MAX_SLEEP_S = 60.0
"""The longest single sleep of :class:`SystemClock`, so that a wall-clock jump (NTP
step, suspended laptop) delays a tick by at most this much."""


@runtime_checkable
class Clock(Protocol):
    """The scheduler's source of time: the current time, and sleeping until a tick."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware, in UTC."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return at or after ``when``; cancellable."""
        ...


@final
class SystemClock:
    """The real wall clock, re-read at least every ``MAX_SLEEP_S`` while sleeping."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        while True:
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, MAX_SLEEP_S))


@final
class ManualClock:
    """A clock that moves only when a test calls :meth:`advance`.

    Example::

        clock = ManualClock(datetime(2026, 3, 8, 6, 0, tzinfo=UTC))
        engine = Engine(state, clock=clock)
        await clock.advance(timedelta(hours=1))  # wakes every sleeper that fell due
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"start must be timezone-aware, got naive {start.isoformat()}")
        self._now = start.astimezone(UTC)
        self._order = itertools.count()
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._order), future))
        await future

    async def advance(self, delta: timedelta | float, *, settle_rounds: int = 20) -> None:
        """Move the time forward and let woken tasks run until they wait again.

        ``settle_rounds`` is how many event-loop turns to yield after each wake-up, so
        that the scheduler's enqueue and the worker's claim complete before returning.
        """
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError(f"delta must not be negative, got {step}")
        target = self._now + step
        # Let tasks started just before this call reach their first sleep, so that a
        # scheduler started a moment ago sees the time move.
        await _settle(settle_rounds)
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not future.done():
                future.set_result(None)
            await _settle(settle_rounds)
        self._now = target
        await _settle(settle_rounds)


async def _settle(rounds: int) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)
