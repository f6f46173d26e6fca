"""The obsjobs side of the PostgreSQL benchmark: PostgresQueue with metrics and tracing.

As benchmarked, every engine here is ``Engine(counter, compose(PostgresQueue(...),
Metrics(registry=CollectorRegistry())), tracer_provider=...)`` with the SDK tracer
provider of :class:`memory_throughput.Telemetry`: a ``BatchSpanProcessor`` with room
for every span of a run, and an exporter that counts spans and drops them. ``bench/pg_what_if.py``
also turns metrics or tracing off.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from memory_throughput import Telemetry
from opentelemetry.trace import NoOpTracerProvider, TracerProvider
from pg_common import (
    DrainHook,
    JobCounter,
    Stopwatch,
    ThroughputRun,
    Timing,
    analyze,
    check_count,
    sample_latency,
    scratch_schema,
    wait_for_count,
    wait_for_rows,
)
from prometheus_client import CollectorRegistry
from psycopg import sql

from obsjobs import Engine, Metrics, PostgresQueue, compose
from obsjobs.jobs import RegisteredJob
from obsjobs.providers.postgres import migrate

JOB_NAME = "bench.noop"
QUEUE = "default"
BULK_BATCH = 1_000
"""Jobs per ``enqueue_many`` call when seeding a throughput run."""
POOL_MAX_SIZE = 10
"""Pooled connections for job statements. The LISTEN connection is one more."""


async def noop(counter: JobCounter) -> None:
    """Count the run and do nothing else (the benchmark's job body)."""
    counter.hit()


@dataclass(slots=True)
class ObsjobsContender:
    """obsjobs on PostgresQueue, with Prometheus metrics and OpenTelemetry tracing.

    ``telemetry=None`` turns tracing off (a no-op tracer provider) and
    ``metrics=False`` leaves out the ``Metrics`` middleware. The benchmark uses neither.
    """

    telemetry: Telemetry | None
    concurrency: int
    drain_hook: DrainHook = contextlib.nullcontext
    metrics: bool = True
    key: str = "obsjobs"
    label: str = "obsjobs"

    def _engine(
        self, counter: JobCounter, conninfo: str, schema: str
    ) -> tuple[Engine[JobCounter], RegisteredJob[JobCounter, []], CollectorRegistry | None]:
        queue = PostgresQueue(conninfo, schema=schema, pool_max_size=POOL_MAX_SIZE)
        registry = CollectorRegistry() if self.metrics else None
        tracer_provider: TracerProvider = (
            self.telemetry.provider if self.telemetry is not None else NoOpTracerProvider()
        )
        engine = Engine(
            counter,
            compose(queue, Metrics(registry=registry)) if registry is not None else queue,
            tracer_provider=tracer_provider,
            concurrency=self.concurrency,
        )
        job = engine.job(name=JOB_NAME)(noop)
        return engine, job, registry

    async def throughput(self, conninfo: str, jobs: int) -> ThroughputRun:
        """Seed ``jobs`` jobs with ``enqueue_many``, then time a worker draining them.

        A producer-only engine seeds the queue in batches of :data:`BULK_BATCH` and is
        stopped, and the table is analyzed. Then the worker engine's provider is opened,
        the clock starts,
        ``engine.start()`` starts the worker, and the clock stops when the last job
        body has run. The worker is stopped once every job is stored as succeeded.
        """
        async with scratch_schema(conninfo, "obsjobs") as scratch:
            await migrate(conninfo, scratch.schema)
            counter = JobCounter(jobs)
            producer, producer_job, _ = self._engine(counter, conninfo, scratch.schema)
            await producer.start(worker=False, scheduler=False)
            watch = Stopwatch()
            for first in range(0, jobs, BULK_BATCH):
                size = min(BULK_BATCH, jobs - first)
                await producer.enqueue_many([producer_job.message() for _ in range(size)])
            seeded = watch.timing(jobs)
            await producer.stop()
            await analyze(conninfo, sql.Identifier(scratch.schema, "jobs"))

            engine, _, registry = self._engine(counter, conninfo, scratch.schema)
            await engine.provider.open()
            with self.drain_hook():
                watch.start()
                await engine.start(scheduler=False)
                await wait_for_count(counter, "obsjobs throughput")
                drained = watch.timing(jobs)
            succeeded = sql.SQL("SELECT count(*) FROM {} WHERE state = 'succeeded'").format(
                sql.Identifier(scratch.schema, "jobs")
            )
            ack_lag_s = await wait_for_rows(conninfo, succeeded, jobs)
            statistics = engine.statistics()
            await engine.stop()
        check_count("obsjobs job bodies", jobs, counter.count)
        check_count("obsjobs worker succeeded", jobs, getattr(statistics, "succeeded", None))
        if registry is not None:
            labels = {"queue": QUEUE, "job": JOB_NAME}
            runs = registry.get_sample_value("obsjobs_job_runs_total", labels)
            check_count("obsjobs_job_runs_total", float(jobs), runs)
        return ThroughputRun(seeded, drained, ack_lag_s)

    async def latency(self, conninfo: str, samples: int) -> list[float]:
        """Sample enqueue-to-start latency: ``await job.enqueue()`` on the worker's engine."""
        async with scratch_schema(conninfo, "obsjobs") as scratch:
            await migrate(conninfo, scratch.schema)
            counter = JobCounter(1)
            engine, job, _ = self._engine(counter, conninfo, scratch.schema)
            async with engine:
                return await sample_latency(samples, counter, job.enqueue)

    async def single_enqueue(self, conninfo: str, jobs: int) -> Timing:
        """Time ``jobs`` calls of ``await job.enqueue()`` on a producer-only engine."""
        async with scratch_schema(conninfo, "obsjobs") as scratch:
            await migrate(conninfo, scratch.schema)
            engine, job, _ = self._engine(JobCounter(jobs), conninfo, scratch.schema)
            await engine.start(worker=False, scheduler=False)
            watch = Stopwatch()
            for _ in range(jobs):
                await job.enqueue()
            timing = watch.timing(jobs)
            await engine.stop()
            return timing
