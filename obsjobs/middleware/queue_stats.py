"""Scrape-time queue gauges: depth by state, oldest ready job and provider health.

The collector reads each provider's ``stats()`` on the provider's own event loop when
Prometheus scrapes, so the figures are right across many worker processes.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from obsjobs.protocols import QueueProvider, QueueStats

__all__ = ["STATS_FAILURE_LOG_INTERVAL_S", "STATS_TIMEOUT_S", "QueueStatsCollector", "StatsSource"]

STATS_TIMEOUT_S = 2.0
"""The maximum time, in seconds, that a scrape waits for the providers' ``stats()``.

All providers of a registry are read concurrently under this one deadline. A provider
whose ``stats()`` has not returned by then is reported down.
"""

STATS_FAILURE_LOG_INTERVAL_S = 60.0
"""The minimum time, in seconds, between two ``metrics.stats_failed`` logs of one provider."""

_QUEUE_STATES = ("ready", "scheduled", "running", "dead")


_log = structlog.get_logger("obsjobs.metrics")
# Patched by tests to drive the failure-log rate limit without sleeping.
_monotonic: Callable[[], float] = time.monotonic


@dataclass(eq=False)
class StatsSource:
    """The scrape-time collector's view of one wrapped provider.

    ``loop`` is set while the provider is open. ``cached`` and ``up`` keep the last read,
    served when a scrape runs on the loop's own thread.
    """

    provider: QueueProvider
    name: str
    loop: asyncio.AbstractEventLoop | None = None
    cached: list[QueueStats] | None = None
    up: bool | None = None
    last_failure_log: float | None = None


async def _read_stats(provider: QueueProvider) -> list[QueueStats]:
    # A wrapper coroutine, so that provider.stats() itself is called on the loop's thread.
    return await provider.stats()


@dataclass
class _ProviderReading:
    name: str
    up: bool | None
    stats: list[QueueStats] = field(default_factory=list)


class QueueStatsCollector:
    """Collects depth, oldest-ready and provider-up gauges from providers at scrape time.

    There is one per registry. It keeps only weak references to its sources, so a dropped
    ``Metrics`` stops being scraped without an explicit unregister.
    """

    def __init__(self) -> None:
        self._sources: weakref.WeakSet[StatsSource] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, source: StatsSource) -> None:
        with self._lock:
            self._sources.add(source)

    def describe(self) -> Iterable[Metric]:
        """Return the families without samples, so registering never reads a provider."""
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        """Read every open provider's stats and return the scrape-time families.

        From another thread (the HTTP server's), this runs ``stats()`` on each provider's
        event loop and waits for all of them for at most :data:`STATS_TIMEOUT_S`.

        On the loop's own thread, as when ``generate_latest`` is called from async code,
        waiting would deadlock, so it serves the stats of the last scrape from another
        thread instead, and nothing for a provider not read that way yet.
        """
        with self._lock:
            sources = list(self._sources)
        return self._families(self._read_all(sources))

    def _read_all(self, sources: list[StatsSource]) -> list[_ProviderReading]:
        try:
            current_loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current_loop = None

        readings: list[_ProviderReading] = []
        pending: list[tuple[StatsSource, Future[list[QueueStats]]]] = []
        for source in sources:
            loop = source.loop
            if loop is None or loop.is_closed() or not loop.is_running():
                continue
            if loop is current_loop:
                with self._lock:
                    readings.append(_ProviderReading(source.name, source.up, source.cached or []))
                continue
            coroutine = _read_stats(source.provider)
            try:
                future = asyncio.run_coroutine_threadsafe(coroutine, loop)
            except RuntimeError:
                # The loop closed after the check above: the engine has just stopped.
                coroutine.close()
                continue
            pending.append((source, future))

        deadline = time.monotonic() + STATS_TIMEOUT_S
        for source, future in pending:
            readings.append(self._wait_for(source, future, deadline))
        return readings

    def _wait_for(
        self, source: StatsSource, future: Future[list[QueueStats]], deadline: float
    ) -> _ProviderReading:
        try:
            stats = future.result(timeout=max(deadline - time.monotonic(), 0.0))
        except Exception as error:  # any failure means the provider is down
            # A future still pending timed out here; a done one raised inside stats().
            timed_out = not future.done()
            future.cancel()
            self._record_failure(source, error, timed_out=timed_out)
            return _ProviderReading(source.name, up=False)

        with self._lock:
            source.cached = stats
            source.up = True
        return _ProviderReading(source.name, up=True, stats=stats)

    def _record_failure(self, source: StatsSource, error: Exception, *, timed_out: bool) -> None:
        now = _monotonic()
        with self._lock:
            source.cached = None
            source.up = False
            last = source.last_failure_log
            if last is not None and now - last < STATS_FAILURE_LOG_INTERVAL_S:
                return
            source.last_failure_log = now
        if timed_out:
            message = f"stats() timed out after {STATS_TIMEOUT_S:g}s"
        else:
            message = f"{type(error).__name__}: {error}"
        _log.error("metrics.stats_failed", provider=source.name, error=message)

    def _families(self, readings: list[_ProviderReading]) -> list[Metric]:
        depth = GaugeMetricFamily(
            "obsjobs_queue_depth",
            "Jobs in each state, read from the provider at scrape time.",
            labels=["queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "obsjobs_queue_oldest_ready_timestamp_seconds",
            "When the oldest ready job became ready; absent while no job is ready.",
            labels=["queue"],
        )
        provider_up = GaugeMetricFamily(
            "obsjobs_provider_up",
            "1 when the last stats read from the provider worked, else 0.",
            labels=["provider"],
        )

        merged = _merge_readings(readings)
        for queue, counts in merged.depths.items():
            for state, count in zip(_QUEUE_STATES, counts, strict=True):
                depth.add_metric([queue, state], float(count))
        for queue, ready_at in merged.oldest_ready.items():
            oldest.add_metric([queue], ready_at.timestamp())
        for name, up in merged.up_by_provider.items():
            provider_up.add_metric([name], 1.0 if up else 0.0)
        return [depth, oldest, provider_up]


@dataclass
class _MergedStats:
    depths: dict[str, list[int]] = field(default_factory=dict)
    oldest_ready: dict[str, datetime] = field(default_factory=dict)
    up_by_provider: dict[str, bool] = field(default_factory=dict)


def _merge_readings(readings: list[_ProviderReading]) -> _MergedStats:
    """Merge stats by queue and health by provider name.

    Providers that report the same queue (two engines on one database) are merged:
    depths add up and the earliest oldest-ready time wins. Providers with the same name
    are up only when all of them are.
    """
    merged = _MergedStats()
    for reading in readings:
        if reading.up is not None:
            previous = merged.up_by_provider.get(reading.name, True)
            merged.up_by_provider[reading.name] = previous and reading.up
        for stats in reading.stats:
            counts = merged.depths.setdefault(stats.queue, [0] * len(_QUEUE_STATES))
            for index, count in enumerate(
                (stats.ready, stats.scheduled, stats.running, stats.dead)
            ):
                counts[index] += count
            ready_at = stats.oldest_ready_at
            earliest = merged.oldest_ready.get(stats.queue)
            if ready_at is not None and (earliest is None or ready_at < earliest):
                merged.oldest_ready[stats.queue] = ready_at
    return merged
