"""The peer libraries of the PostgreSQL benchmark: procrastinate and SAQ.

Both are driven through their documented APIs: procrastinate's ``App`` with a
``PsycopgConnector`` and ``run_worker_async``, and SAQ's ``PostgresQueue`` with a
``Worker``. Their tables are created unqualified, so each run connects with a
``search_path`` that points at its scratch schema. The peers are installed only in
the benchmark's virtual environment (``bench/requirements-peers.txt``), never as
obsjobs dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pg_common import (
    DrainHook,
    JobCounter,
    Scratch,
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
from procrastinate import App, PsycopgConnector
from saq import Worker as SaqWorker
from saq.queue.postgres import PostgresQueue as SaqQueue

BULK_BATCH = 1_000
"""Jobs per ``batch_defer_async`` call when seeding procrastinate."""
POOL_MAX_SIZE = 10
"""Pooled connections for job statements, as for obsjobs."""
STOP_TIMEOUT_S = 30.0


# procrastinate ---------------------------------------------------------------------------


def _procrastinate_app(conninfo: str, counter: JobCounter) -> tuple[App, Any]:
    # A new App per run: the task closes over this run's counter.
    app = App(connector=PsycopgConnector(conninfo=conninfo, min_size=2, max_size=POOL_MAX_SIZE))

    @app.task(name="bench.noop")
    async def noop() -> None:
        counter.hit()

    return app, noop


@contextlib.asynccontextmanager
async def _procrastinate_worker(app: App, concurrency: int) -> AsyncIterator[None]:
    """Run ``app``'s worker in this process until the block ends, then stop it gracefully.

    The worker task starts running at the block's first ``await``.
    """
    task = asyncio.create_task(
        app.run_worker_async(
            concurrency=concurrency, wait=True, install_signal_handlers=False, listen_notify=True
        )
    )
    try:
        yield
    finally:
        # Cancelling run_worker_async is procrastinate's graceful stop: running jobs
        # finish and the worker unregisters.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, STOP_TIMEOUT_S)


@dataclass(slots=True)
class ProcrastinateContender:
    """procrastinate: one fetch statement per job, one finish statement per job."""

    concurrency: int
    drain_hook: DrainHook = contextlib.nullcontext
    key: str = "procrastinate"
    label: str = "procrastinate"

    @staticmethod
    async def _apply_schema(app: App) -> None:
        await app.schema_manager.apply_schema_async()

    async def throughput(self, conninfo: str, jobs: int) -> ThroughputRun:
        """Seed with ``batch_defer_async`` in batches, then time ``run_worker_async``.

        The table is analyzed and the app's pool is open before the clock starts. The
        clock covers the worker's start (it registers itself in the database) and stops
        when the last job body has run. The worker is stopped once every job is stored
        as succeeded.
        """
        async with scratch_schema(conninfo, "procrastinate") as scratch:
            counter = JobCounter(jobs)
            app, task = _procrastinate_app(scratch.conninfo, counter)
            async with app.open_async():
                await self._apply_schema(app)
                watch = Stopwatch()
                for first in range(0, jobs, BULK_BATCH):
                    size = min(BULK_BATCH, jobs - first)
                    await task.batch_defer_async(*({} for _ in range(size)))
                seeded = watch.timing(jobs)
                await analyze(scratch.conninfo, "procrastinate_jobs")

                async with _procrastinate_worker(app, self.concurrency):
                    with self.drain_hook():
                        watch.start()
                        await wait_for_count(counter, "procrastinate throughput")
                        drained = watch.timing(jobs)
                    ack_lag_s = await wait_for_rows(
                        scratch.conninfo,
                        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
                        jobs,
                    )
        check_count("procrastinate job bodies", jobs, counter.count)
        return ThroughputRun(seeded, drained, ack_lag_s)

    async def latency(self, conninfo: str, samples: int) -> list[float]:
        """Sample enqueue-to-start latency: ``await task.defer_async()`` beside the worker."""
        async with scratch_schema(conninfo, "procrastinate") as scratch:
            counter = JobCounter(1)
            app, task = _procrastinate_app(scratch.conninfo, counter)
            async with app.open_async():
                await self._apply_schema(app)
                async with _procrastinate_worker(app, self.concurrency):
                    # Let the worker register and start listening before the first sample.
                    await asyncio.sleep(0.5)
                    return await sample_latency(samples, counter, task.defer_async)

    async def single_enqueue(self, conninfo: str, jobs: int) -> Timing:
        """Time ``jobs`` calls of ``await task.defer_async()``."""
        async with scratch_schema(conninfo, "procrastinate") as scratch:
            app, task = _procrastinate_app(scratch.conninfo, JobCounter(jobs))
            async with app.open_async():
                await self._apply_schema(app)
                watch = Stopwatch()
                for _ in range(jobs):
                    await task.defer_async()
                return watch.timing(jobs)


# SAQ ------------------------------------------------------------------------------------


def _saq_queue(scratch: Scratch) -> SaqQueue:
    # SAQ's LISTEN multiplexer keeps one pooled connection for itself, so the pool gets
    # one more connection than the others for the same number of statement connections.
    return SaqQueue(url=scratch.conninfo, min_size=2, max_size=POOL_MAX_SIZE + 1)


def _saq_worker(queue: SaqQueue, counter: JobCounter, concurrency: int) -> SaqWorker[Any]:
    async def noop(ctx: Any) -> None:
        counter.hit()

    return SaqWorker(queue, functions=[("bench.noop", noop)], concurrency=concurrency)


@contextlib.asynccontextmanager
async def _saq_running(worker: SaqWorker[Any]) -> AsyncIterator[None]:
    """Run ``worker`` in this process until the block ends, then stop it.

    The worker task starts running at the block's first ``await``.
    """
    task = asyncio.create_task(worker.start())
    try:
        yield
    finally:
        await asyncio.wait_for(worker.stop(), STOP_TIMEOUT_S)
        await asyncio.wait_for(task, STOP_TIMEOUT_S)


@dataclass(slots=True)
class SaqContender:
    """SAQ on PostgreSQL, which has no batch enqueue, so seeding is one job at a time."""

    concurrency: int
    drain_hook: DrainHook = contextlib.nullcontext
    key: str = "saq"
    label: str = "SAQ"

    async def throughput(self, conninfo: str, jobs: int) -> ThroughputRun:
        """Seed with ``queue.enqueue`` one by one, then time a ``Worker`` draining them.

        The queue is connected (pool opened, tables created) and its table analyzed
        before the clock starts. The clock covers ``worker.start()`` and stops when the
        last job body has run. The worker is stopped once every job is stored as complete.
        """
        async with scratch_schema(conninfo, "saq") as scratch:
            counter = JobCounter(jobs)
            queue = _saq_queue(scratch)
            await queue.connect()
            try:
                watch = Stopwatch()
                for _ in range(jobs):
                    await queue.enqueue("bench.noop")
                seeded = watch.timing(jobs)
                await analyze(scratch.conninfo, "saq_jobs")

                worker = _saq_worker(queue, counter, self.concurrency)
                async with _saq_running(worker):
                    with self.drain_hook():
                        watch.start()
                        await wait_for_count(counter, "SAQ throughput")
                        drained = watch.timing(jobs)
                    ack_lag_s = await wait_for_rows(
                        scratch.conninfo,
                        "SELECT count(*) FROM saq_jobs WHERE status = 'complete'",
                        jobs,
                    )
            finally:
                await queue.disconnect()
        check_count("SAQ job bodies", jobs, counter.count)
        return ThroughputRun(seeded, drained, ack_lag_s)

    async def latency(self, conninfo: str, samples: int) -> list[float]:
        """Sample enqueue-to-start latency: ``await queue.enqueue(...)`` beside the worker."""
        async with scratch_schema(conninfo, "saq") as scratch:
            counter = JobCounter(1)
            queue = _saq_queue(scratch)
            await queue.connect()
            try:
                async with _saq_running(_saq_worker(queue, counter, self.concurrency)):
                    await asyncio.sleep(0.5)
                    return await sample_latency(
                        samples, counter, lambda: queue.enqueue("bench.noop")
                    )
            finally:
                await queue.disconnect()

    async def single_enqueue(self, conninfo: str, jobs: int) -> Timing:
        """Time ``jobs`` calls of ``await queue.enqueue("bench.noop")``."""
        async with scratch_schema(conninfo, "saq") as scratch:
            queue = _saq_queue(scratch)
            await queue.connect()
            try:
                watch = Stopwatch()
                for _ in range(jobs):
                    await queue.enqueue("bench.noop")
                return watch.timing(jobs)
            finally:
                await queue.disconnect()
