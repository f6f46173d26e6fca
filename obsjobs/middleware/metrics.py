"""Prometheus metrics for every job that passes through a provider chain.

:class:`Metrics` is provider middleware that counts and times jobs as the engine enqueues,
claims and finishes them, and an :class:`~obsjobs.protocols.EngineObserver` that records
worker and schedule events. Queue depth, the oldest ready job and provider health are read
from the provider when Prometheus scrapes, so they stay right across worker processes.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import final

import structlog
from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info

from obsjobs.middleware.base import Middleware
from obsjobs.middleware.queue_stats import (
    STATS_FAILURE_LOG_INTERVAL_S,
    STATS_TIMEOUT_S,
    QueueStatsCollector,
    StatsSource,
)
from obsjobs.protocols import (
    EnqueueResult,
    JobRecord,
    JobResult,
    NewJob,
    Outcome,
    QueueProvider,
    RescuedJob,
)
from obsjobs.version import VERSION

_log = structlog.get_logger("obsjobs.metrics")

__all__ = [
    "DEFAULT_DURATION_BUCKETS_S",
    "DEFAULT_LAG_BUCKETS_S",
    "DEFAULT_WAIT_BUCKETS_S",
    "STATS_FAILURE_LOG_INTERVAL_S",
    "STATS_TIMEOUT_S",
    "Metrics",
]

DEFAULT_DURATION_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
"""Perform-time buckets, 5 ms to one hour, because background jobs often run for minutes."""

DEFAULT_WAIT_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
)  # fmt: skip
"""Queue-wait buckets, 5 ms to six hours, so that a backlog shows in the upper buckets."""

DEFAULT_LAG_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
"""Cron-lag buckets, 10 ms to one hour."""


def _validate_buckets(parameter: str, buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = tuple(float(bound) for bound in buckets)
    if not bounds:
        raise ValueError(f"{parameter} must contain at least one bucket bound")
    if any(math.isnan(bound) for bound in bounds):
        raise ValueError(f"{parameter} must not contain NaN, got {bounds!r}")
    if any(low >= high for low, high in itertools.pairwise(bounds)):
        raise ValueError(f"{parameter} must be strictly increasing, got {bounds!r}")
    return bounds


def _trace_exemplar() -> dict[str, str] | None:
    """Return ``{"trace_id": ...}`` for the current span, or ``None`` outside a valid span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {"trace_id": trace.format_trace_id(context.trace_id)}


@dataclass(frozen=True, slots=True)
class _JobSeries:
    """The labelled children for one (queue, job) pair, looked up once and then reused."""

    enqueued: Counter
    runs: Counter
    retries: Counter
    dead: Counter
    duration: Histogram
    wait: Histogram


@dataclass(frozen=True, slots=True)
class _ScheduleSeries:
    lag: Histogram
    last_success: Gauge


class _RegistryMetrics:
    """Every obsjobs metric family on one registry, and caches of their labelled children.

    It must not reference the registry, which is the key of the weak cache that holds it.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        duration_buckets: tuple[float, ...],
        wait_buckets: tuple[float, ...],
        lag_buckets: tuple[float, ...],
    ) -> None:
        self.buckets = (duration_buckets, wait_buckets, lag_buckets)
        self._register_job_families(registry, duration_buckets, wait_buckets)
        self._register_worker_families(registry, lag_buckets)
        self.collector = QueueStatsCollector()
        registry.register(self.collector)

        self._jobs: dict[tuple[str, str], _JobSeries] = {}
        self._failures: dict[tuple[str, str, str], Counter] = {}
        self._in_flight: dict[str, Gauge] = {}
        self._rescued: dict[str, Counter] = {}
        self._schedules: dict[str, _ScheduleSeries] = {}

    def _register_job_families(
        self,
        registry: CollectorRegistry,
        duration_buckets: tuple[float, ...],
        wait_buckets: tuple[float, ...],
    ) -> None:
        labels = ("queue", "job")
        self.enqueued = Counter(
            "obsjobs_jobs_enqueued", "Jobs accepted by the provider.", labels, registry=registry
        )
        self.runs = Counter(
            "obsjobs_job_runs", "Attempts that finished, any outcome.", labels, registry=registry
        )
        self.failures = Counter(
            "obsjobs_job_failures",
            "Attempts that raised; error_type is the exception class name.",
            (*labels, "error_type"),
            registry=registry,
        )
        self.retries = Counter(
            "obsjobs_job_retries", "Retries scheduled.", labels, registry=registry
        )
        self.dead = Counter(
            "obsjobs_jobs_dead",
            "Jobs that exhausted their attempts or cannot run.",
            labels,
            registry=registry,
        )
        self.duration = Histogram(
            "obsjobs_job_duration_seconds",
            "Perform time.",
            labels,
            registry=registry,
            buckets=duration_buckets,
        )
        self.wait = Histogram(
            "obsjobs_job_queue_wait_seconds",
            "Time from the moment a job could run to the start of its perform.",
            labels,
            registry=registry,
            buckets=wait_buckets,
        )

    def _register_worker_families(
        self, registry: CollectorRegistry, lag_buckets: tuple[float, ...]
    ) -> None:
        queue = ("queue",)
        schedule = ("schedule",)
        self.rescued = Counter(
            "obsjobs_jobs_rescued",
            "Jobs returned to the queue after their lease expired.",
            queue,
            registry=registry,
        )
        self.in_flight = Gauge(
            "obsjobs_jobs_in_flight", "Attempts running in this process.", queue, registry=registry
        )
        self.concurrency = Gauge(
            "obsjobs_worker_concurrency",
            "This process's concurrency limit.",
            queue,
            registry=registry,
        )
        self.lag = Histogram(
            "obsjobs_schedule_lag_seconds",
            "Time from a tick's scheduled instant to the start of its perform.",
            schedule,
            registry=registry,
            buckets=lag_buckets,
        )
        self.next_run = Gauge(
            "obsjobs_schedule_next_run_timestamp_seconds",
            "The next tick's scheduled instant.",
            schedule,
            registry=registry,
        )
        self.last_success = Gauge(
            "obsjobs_schedule_last_success_timestamp_seconds",
            "When a tick's job last succeeded.",
            schedule,
            registry=registry,
        )
        self.missed = Counter(
            "obsjobs_schedule_missed_ticks",
            "Ticks skipped or coalesced by the misfire policy.",
            schedule,
            registry=registry,
        )
        self.build = Info(
            "obsjobs_build", "obsjobs version and provider.", ("provider",), registry=registry
        )

    def job(self, queue: str, name: str) -> _JobSeries:
        series = self._jobs.get((queue, name))
        if series is None:
            series = _JobSeries(
                enqueued=self.enqueued.labels(queue, name),
                runs=self.runs.labels(queue, name),
                retries=self.retries.labels(queue, name),
                dead=self.dead.labels(queue, name),
                duration=self.duration.labels(queue, name),
                wait=self.wait.labels(queue, name),
            )
            self._jobs[(queue, name)] = series
        return series

    def failure(self, queue: str, name: str, error_type: str) -> Counter:
        key = (queue, name, error_type)
        child = self._failures.get(key)
        if child is None:
            child = self._failures[key] = self.failures.labels(*key)
        return child

    def queue_in_flight(self, queue: str) -> Gauge:
        child = self._in_flight.get(queue)
        if child is None:
            child = self._in_flight[queue] = self.in_flight.labels(queue)
        return child

    def queue_rescued(self, queue: str) -> Counter:
        child = self._rescued.get(queue)
        if child is None:
            child = self._rescued[queue] = self.rescued.labels(queue)
        return child

    def schedule(self, name: str) -> _ScheduleSeries:
        series = self._schedules.get(name)
        if series is None:
            series = _ScheduleSeries(self.lag.labels(name), self.last_success.labels(name))
            self._schedules[name] = series
        return series


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, _RegistryMetrics] = (
    weakref.WeakKeyDictionary()
)
_BY_REGISTRY_LOCK = threading.Lock()


def _metrics_for(
    registry: CollectorRegistry, buckets: tuple[tuple[float, ...], ...]
) -> _RegistryMetrics:
    with _BY_REGISTRY_LOCK:
        metrics = _BY_REGISTRY.get(registry)
        if metrics is None:
            metrics = _RegistryMetrics(registry, *buckets)
            _BY_REGISTRY[registry] = metrics
            return metrics
    if metrics.buckets != buckets:
        _log.warning(
            "metrics.buckets_ignored",
            reason="the first Metrics on this registry fixed the histogram buckets",
        )
    return metrics


@final
class Metrics(Middleware):
    """Middleware that records the ``obsjobs_*`` Prometheus metrics of the jobs passing through.

    Put it first in :func:`obsjobs.compose` so that it also counts what the inner
    middleware does. The engine finds it in the chain and reports worker and schedule
    events to it as an :class:`~obsjobs.protocols.EngineObserver`.

    Every ``Metrics`` on one registry shares one set of metric families, so two engines in
    one process never raise a duplicate-timeseries error. The first ``Metrics`` created on
    a registry fixes the histogram buckets; later ones with other buckets log
    ``metrics.buckets_ignored`` and use the first ones.

    Queue depth, the oldest ready job and ``obsjobs_provider_up`` are read with
    ``stats()`` at scrape time, through the event loop captured in :meth:`open`, and
    only while the provider is open.

    Args:
        registry: where the metrics are registered; ``prometheus_client.REGISTRY`` by default.
        duration_buckets: bucket bounds of ``obsjobs_job_duration_seconds``.
        wait_buckets: bucket bounds of ``obsjobs_job_queue_wait_seconds``.
        lag_buckets: bucket bounds of ``obsjobs_schedule_lag_seconds``.

    Raises:
        ValueError: a bucket sequence is empty, contains NaN or is not strictly increasing.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        duration_buckets: Sequence[float] = DEFAULT_DURATION_BUCKETS_S,
        wait_buckets: Sequence[float] = DEFAULT_WAIT_BUCKETS_S,
        lag_buckets: Sequence[float] = DEFAULT_LAG_BUCKETS_S,
    ) -> None:
        buckets = (
            _validate_buckets("duration_buckets", duration_buckets),
            _validate_buckets("wait_buckets", wait_buckets),
            _validate_buckets("lag_buckets", lag_buckets),
        )
        self._registry = REGISTRY if registry is None else registry
        self._metrics = _metrics_for(self._registry, buckets)
        self._source: StatsSource | None = None

    @property
    def registry(self) -> CollectorRegistry:
        """The registry the metrics are recorded in, for serving it on ``/metrics``."""
        return self._registry

    def wrap(self, inner: QueueProvider) -> QueueProvider:
        """Wrap ``inner``, register it for scrape-time stats and set ``obsjobs_build_info``."""
        wrapped = super().wrap(inner)
        name = inner.name
        self._source = StatsSource(inner, name)
        self._metrics.collector.add(self._source)
        self._metrics.build.labels(name).info({"version": VERSION})
        return wrapped

    async def open(self) -> None:
        """Open the inner provider, then let scrapes read its stats through this loop."""
        await self.inner.open()
        if self._source is not None:
            self._source.loop = asyncio.get_running_loop()

    async def close(self) -> None:
        """Stop scrape-time stats reads, then close the inner provider."""
        if self._source is not None:
            self._source.loop = None
        await self.inner.close()

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        """Enqueue ``jobs`` and count those the provider created."""
        results = await self.inner.enqueue(jobs)
        metrics = self._metrics
        for job, result in zip(jobs, results, strict=False):
            if result.created:
                metrics.job(job.queue, job.name).enqueued.inc()
        return results

    async def claim(self, queues: Sequence[str], limit: int, *, worker_id: str) -> list[JobRecord]:
        """Claim jobs and count each one as in flight until its ``finish``."""
        jobs = await self.inner.claim(queues, limit, worker_id=worker_id)
        # One increment per queue rather than per job: the gauge takes a lock each time.
        per_queue = collections.Counter(job.queue for job in jobs)
        for queue, count in per_queue.items():
            self._metrics.queue_in_flight(queue).inc(count)
        return jobs

    async def finish(self, job: JobRecord, result: JobResult) -> None:
        """Finish the attempt in the inner provider, then record it.

        The attempt is recorded, and in-flight goes down, even when the inner ``finish``
        raises or is cancelled, because the attempt ran either way. A ``RELEASED`` job
        never started, so it only leaves in-flight. The duration and queue-wait
        observations carry the current span's trace id as an exemplar; the engine calls
        this inside the perform span.
        """
        try:
            await self.inner.finish(job, result)
        finally:
            self._metrics.queue_in_flight(job.queue).dec()
            if result.outcome is not Outcome.RELEASED:
                self._record_attempt(job, result)

    def _record_attempt(self, job: JobRecord, result: JobResult) -> None:
        metrics = self._metrics
        series = metrics.job(job.queue, job.name)
        exemplar = _trace_exemplar()
        series.runs.inc()
        series.duration.observe(result.duration_s, exemplar)
        # Clocks of the enqueuing and the performing host may differ slightly, and a
        # negative observation would corrupt the histogram's sum.
        wait_s = (result.started_at - job.available_at).total_seconds()
        series.wait.observe(max(wait_s, 0.0), exemplar)

        if result.error_type:
            metrics.failure(job.queue, job.name, result.error_type).inc()
        if result.outcome is Outcome.RETRY:
            series.retries.inc()
        elif result.outcome is Outcome.DEAD:
            series.dead.inc()

        if job.schedule is not None:
            schedule = metrics.schedule(job.schedule)
            if job.scheduled_time is not None:
                lag_s = (result.started_at - job.scheduled_time).total_seconds()
                schedule.lag.observe(max(lag_s, 0.0))
            if result.outcome is Outcome.SUCCEEDED:
                schedule.last_success.set(time.time())

    async def rescue(self) -> list[RescuedJob]:
        """Rescue expired leases and count the rescued jobs, and the dead ones among them."""
        rescued = await self.inner.rescue()
        metrics = self._metrics
        for job in rescued:
            metrics.queue_rescued(job.queue).inc()
            if job.dead:
                metrics.job(job.queue, job.name).dead.inc()
        return rescued

    def worker_started(self, queues: Sequence[str], concurrency: int) -> None:
        """Set ``obsjobs_worker_concurrency`` of each queue to ``concurrency``."""
        for queue in queues:
            self._metrics.concurrency.labels(queue).set(concurrency)

    def worker_stopped(self, queues: Sequence[str]) -> None:
        """Set ``obsjobs_worker_concurrency`` of each queue to 0."""
        for queue in queues:
            self._metrics.concurrency.labels(queue).set(0)

    def schedule_planned(self, schedule: str, next_run: datetime) -> None:
        """Set ``obsjobs_schedule_next_run_timestamp_seconds`` to ``next_run``."""
        self._metrics.next_run.labels(schedule).set(next_run.timestamp())

    def schedule_missed(self, schedule: str, count: int) -> None:
        """Add ``count`` to ``obsjobs_schedule_missed_ticks_total``, ignoring counts below 1."""
        if count > 0:
            self._metrics.missed.labels(schedule).inc(count)
