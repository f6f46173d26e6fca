"""The queue manager: claims jobs, runs each as its own task, reports every attempt."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from opentelemetry.trace import Span

from obsjobs.context import _current
from obsjobs.errors import JobTimeoutError, ProviderError, ProviderUnavailableError, RetryJob
from obsjobs.jobs import JobRegistry
from obsjobs.leases import LeaseKeeper
from obsjobs.protocols import JobRecord, JobResult, Outcome, QueueProvider
from obsjobs.telemetry.tracing import JobTracer, record_failure

__all__ = ["Worker", "WorkerStatistics"]

_log = structlog.get_logger("obsjobs.worker")

POLL_INTERVAL_S = 5.0
"""How long the manager waits for a wake-up before claiming again anyway."""
CLAIM_BACKOFF_MAX_S = 30.0
"""The longest pause between claims after the provider keeps failing."""
REPORT_RETRY_FIRST_S = 0.1
"""The first pause before writing a result again after the backend was unreachable."""
REPORT_RETRY_MAX_DELAY_S = 5.0
"""The longest pause between two tries to write a result."""
REPORT_RETRY_MAX_S = 60.0
"""How long a worker keeps trying to write one result before it drops it."""
CANCEL_WAIT_S = 10.0
"""How long shutdown waits for cancelled jobs to report their result."""


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """A snapshot of one worker's counters since it started."""

    in_flight: int
    concurrency: int
    claimed: int
    succeeded: int
    failed: int
    retried: int
    cancelled: int


class Worker:
    """Claims jobs up to ``concurrency`` and performs each in its own task.

    Shutdown order (:meth:`stop`):

    1. Stop claiming. A claim already under way finishes; jobs it returns are given
       back unstarted (``RELEASED``).
    2. Let running jobs finish within ``grace_s``, or until :meth:`force` is called.
    3. Cancel the jobs still running and log their ids. Each one reports ``CANCELLED``
       to the provider (durable providers put it back without counting the attempt).
    4. Wait for results still being written (providers with leases write them after
       the job's slot is freed), each within its retry budget.
    5. Stop lease renewal and rescue.
    """

    def __init__(
        self,
        *,
        state: Any,
        provider: QueueProvider,
        registry: JobRegistry,
        tracer: JobTracer,
        queues: Sequence[str],
        concurrency: int,
        worker_id: str,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self._state = state
        self._provider = provider
        self._registry = registry
        self._tracer = tracer
        self.queues = tuple(queues)
        self.concurrency = concurrency
        self.worker_id = worker_id
        self._poll_interval_s = poll_interval_s
        self._tasks: dict[asyncio.Task[None], JobRecord] = {}
        # Results being written after their job's slot was freed (providers with
        # leases only, see _conclude).
        self._reporting: dict[asyncio.Task[None], JobRecord] = {}
        self._report_apart = provider.lease_s is not None
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._waiting = False
        self._forced = asyncio.Event()
        self._manager: asyncio.Task[None] | None = None
        self._leases: LeaseKeeper | None = None
        # A concrete logger bound once: calling the module's lazy proxy re-binds on every
        # call, which costs more than a no-op job. Built at start, after the application
        # has configured structlog.
        self._log: Any = _log.bind(worker_id=worker_id)
        is_enabled_for = getattr(self._log, "is_enabled_for", None)
        self._debug = is_enabled_for is None or bool(is_enabled_for(logging.DEBUG))
        self._counts = dict.fromkeys(("claimed", "succeeded", "failed", "retried", "cancelled"), 0)

    def statistics(self) -> WorkerStatistics:
        """Return the worker's counters."""
        return WorkerStatistics(
            in_flight=len(self._tasks), concurrency=self.concurrency, **self._counts
        )

    def start(self) -> None:
        """Start the manager task, and the lease tasks when the provider has leases."""
        self._manager = asyncio.create_task(self._manage(), name="obsjobs-queue-manager")
        lease_s = self._provider.lease_s
        if lease_s is not None:
            self._leases = LeaseKeeper(
                self._provider,
                lambda: [*self._tasks.values(), *self._reporting.values()],
                lease_s,
                self._log,
            )
            self._leases.start()

    def force(self) -> None:
        """End the grace period now: running jobs are cancelled at once."""
        self._forced.set()

    async def stop(self, grace_s: float) -> None:
        """Shut down in the order written in the class docstring; idempotent."""
        self._stopping = True
        self._slot_freed.set()
        manager = self._manager
        if manager is not None:
            if self._waiting:
                manager.cancel()
            await asyncio.gather(manager, return_exceptions=True)
            self._manager = None

        await self._drain(grace_s)
        await self._finish_reports()

        if self._leases is not None:
            await self._leases.stop()
            self._leases = None

    async def _finish_reports(self) -> None:
        # Results still being written belong to jobs that ran; give each write its own
        # retry budget before the lease upkeep stops.
        if not self._reporting:
            return
        _, pending = await asyncio.wait(list(self._reporting), timeout=REPORT_RETRY_MAX_S)
        for task in pending:
            task.cancel()
        if pending:
            _log.error(
                "worker.results_not_written",
                job_ids=[
                    self._reporting[task].job_id for task in pending if task in self._reporting
                ],
            )

    async def _drain(self, grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        forced = asyncio.create_task(self._forced.wait())
        try:
            while self._tasks and not forced.done() and loop.time() < deadline:
                await asyncio.wait(
                    [*self._tasks, forced],
                    timeout=deadline - loop.time(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            forced.cancel()
        if not self._tasks:
            return
        left = list(self._tasks.items())
        _log.warning(
            "worker.cancelling_jobs",
            count=len(left),
            job_ids=[job.job_id for _, job in left],
            grace_s=grace_s,
        )
        for task, _ in left:
            task.cancel()
        _, pending = await asyncio.wait([task for task, _ in left], timeout=CANCEL_WAIT_S)
        if pending:
            _log.error("worker.jobs_not_stopped", job_ids=[self._tasks[t].job_id for t in pending])

    # The manager loop ---------------------------------------------------------------

    async def _manage(self) -> None:
        failures = 0
        while not self._stopping:
            # Results waiting to be written count against a second allowance, so a stalled
            # backend slows claiming instead of piling up unwritten results.
            backlog = max(0, len(self._tasks) + len(self._reporting) - self.concurrency)
            free = self.concurrency - len(self._tasks) - backlog
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                jobs = await self._claim(free)
                if not jobs:
                    await self._wait_for_jobs()
                failures = 0
            except ProviderError as error:
                failures += 1
                await self._pause_after_failure(error, failures)

    async def _claim(self, limit: int) -> list[JobRecord]:
        start_ns = time.time_ns()
        jobs = await self._provider.claim(self.queues, limit, worker_id=self.worker_id)
        if not jobs:
            return jobs
        self._counts["claimed"] += len(jobs)
        if self._tracer.enabled:
            self._tracer.record_claim(jobs, start_ns)
        if self._stopping:
            # Claimed while shutdown began: these never started, so they go back.
            await asyncio.gather(*(self._release(job) for job in jobs))
            return jobs
        for job in jobs:
            task = asyncio.create_task(self._run(job))
            self._tasks[task] = job
            task.add_done_callback(self._job_done)
        return jobs

    async def _wait_for_jobs(self) -> None:
        # stop() cancels the manager only while it waits; if shutdown began during the
        # claim, waiting now would hold stop() for a whole poll interval.
        if self._stopping:
            return
        self._waiting = True
        try:
            await self._provider.wait(self.queues, self._poll_interval_s)
        except asyncio.CancelledError:
            # stop() cancels the manager only while it waits; that is a normal exit.
            if not self._stopping:
                raise
        finally:
            self._waiting = False

    async def _pause_after_failure(self, error: ProviderError, failures: int) -> None:
        delay = min(0.1 * 2 ** min(failures, 20), CLAIM_BACKOFF_MAX_S)
        _log.error("worker.claim_failed", error=repr(error), attempt=failures, retry_in_s=delay)
        if self._stopping:
            return
        self._waiting = True
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        finally:
            self._waiting = False

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._slot_freed.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.error("worker.job_task_failed", error=repr(error))

    async def _release(self, job: JobRecord) -> None:
        result = JobResult(Outcome.RELEASED, started_at=datetime.now(UTC))
        await self._report(job, result)

    # One job ------------------------------------------------------------------------

    async def _run(self, job: JobRecord) -> None:
        token = _current.set(job)
        try:
            if self._tracer.enabled:
                with self._tracer.process(job) as span:
                    result, cancelled = await self._perform(job, span)
                    await self._conclude(job, result, cancelled)
            else:
                result, cancelled = await self._perform(job, None)
                await self._conclude(job, result, cancelled)
        finally:
            _current.reset(token)

    async def _conclude(self, job: JobRecord, result: JobResult, cancelled: bool) -> None:
        if cancelled:
            # Shield the report: a second cancellation (forced shutdown) must not
            # lose the result, or the provider would never hear of this job.
            await asyncio.shield(self._report(job, result))
            raise asyncio.CancelledError
        if not self._report_apart:
            await self._report(job, result)
            return
        # On a provider with leases the write is a round trip to the server. Writing it
        # from its own task frees the slot now, so the next job runs while the server
        # works. The lease keeper renews the job until the write is done, and the task
        # inherits this context, so metrics still record the job's span.
        task = asyncio.create_task(self._report(job, result))
        self._reporting[task] = job
        task.add_done_callback(self._report_done)

    def _report_done(self, task: asyncio.Task[None]) -> None:
        self._reporting.pop(task, None)
        self._slot_freed.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.error("worker.report_task_failed", error=repr(error))

    async def _perform(self, job: JobRecord, span: Span | None) -> tuple[JobResult, bool]:
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        # Log keys are built only when something is logged: on the success path of a
        # no-op job they would cost more than the job itself.
        if self._debug:
            self._log.debug("job.started", **_log_keys(job, span))
        try:
            await self._invoke(job)
        except asyncio.CancelledError as error:
            task = asyncio.current_task()
            log_keys = _log_keys(job, span)
            if task is not None and task.cancelling():
                return self._cancelled(started_at, started, log_keys), True
            return self._failed(job, error, span, started_at, started, log_keys), False
        except RetryJob as request:
            log_keys = _log_keys(job, span)
            return self._retry_requested(job, request, started_at, started, log_keys), False
        except Exception as error:
            log_keys = _log_keys(job, span)
            return self._failed(job, error, span, started_at, started, log_keys), False

        duration = time.perf_counter() - started
        self._counts["succeeded"] += 1
        if self._debug:
            self._log.debug("job.succeeded", duration_s=duration, **_log_keys(job, span))
        return JobResult(Outcome.SUCCEEDED, started_at, duration), False

    def _invoke(self, job: JobRecord) -> Awaitable[object]:
        """Return the job's awaitable, wrapped in its timeout if it has one.

        A plain function rather than a coroutine, so that the common case (no timeout)
        costs no extra coroutine frame per job.
        """
        if job.function is not None:
            return job.function(self._state)
        registered = self._registry.get(job.name)
        call = registered.function(self._state, *job.args, **job.kwargs)
        if registered.timeout_s is None:
            return call
        return _with_timeout(call, registered.timeout_s, job)

    def _failed(
        self,
        job: JobRecord,
        error: BaseException,
        span: Span | None,
        started_at: datetime,
        started: float,
        log_keys: dict[str, Any],
    ) -> JobResult:
        duration = time.perf_counter() - started
        if span is not None:
            record_failure(span, error)
        self._counts["failed"] += 1
        error_text = f"{type(error).__name__}: {error}"
        registered = self._registry.find(job.name) if job.function is None else None
        policy = registered.retry if registered is not None else None
        if (
            policy is not None
            and job.attempt < job.max_attempts
            and policy.should_retry(error, job.attempt)
        ):
            delay = policy.delay_for(job.attempt)
            retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            self._counts["retried"] += 1
            self._log.warning(
                "job.retry_scheduled",
                error=error_text,
                delay_s=round(delay, 3),
                duration_s=duration,
                **log_keys,
            )
            return JobResult(
                Outcome.RETRY, started_at, duration, error_text, type(error).__name__, retry_at
            )
        self._log.error(
            "job.failed", error=error_text, duration_s=duration, exc_info=error, **log_keys
        )
        # A failure that is not retried is final: the job is kept as dead.
        self._log.error("job.dead", error=error_text, max_attempts=job.max_attempts, **log_keys)
        return JobResult(Outcome.DEAD, started_at, duration, error_text, type(error).__name__)

    def _retry_requested(
        self,
        job: JobRecord,
        request: RetryJob,
        started_at: datetime,
        started: float,
        log_keys: dict[str, Any],
    ) -> JobResult:
        duration = time.perf_counter() - started
        if job.attempt >= job.max_attempts:
            error_text = f"RetryJob after {job.attempt} of {job.max_attempts} attempts: {request}"
            self._log.error("job.dead", error=error_text, duration_s=duration, **log_keys)
            return JobResult(Outcome.DEAD, started_at, duration, error_text, None)
        retry_at = datetime.now(UTC) + timedelta(seconds=request.delay_seconds)
        self._counts["retried"] += 1
        self._log.info(
            "job.retry_scheduled",
            delay_s=request.delay_seconds,
            reason=request.reason,
            **log_keys,
        )
        return JobResult(Outcome.RETRY, started_at, duration, str(request), None, retry_at)

    def _cancelled(
        self, started_at: datetime, started: float, log_keys: dict[str, Any]
    ) -> JobResult:
        duration = time.perf_counter() - started
        self._counts["cancelled"] += 1
        self._log.warning("job.cancelled", duration_s=duration, **log_keys)
        return JobResult(
            Outcome.CANCELLED,
            started_at,
            duration,
            "cancelled while running (engine shutdown)",
            "CancelledError",
        )

    async def _report(self, job: JobRecord, result: JobResult) -> None:
        """Record the attempt's result, retrying while the backend is unreachable.

        The job's task stays alive meanwhile, so its lease keeps being renewed and no
        other worker rescues a job whose result is only waiting to be written. The
        retries stop after ``REPORT_RETRY_MAX_S``, or at once on any other provider
        error such as a lost lease. The result is then dropped and logged, and a
        durable provider runs the job again after its lease expires.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPORT_RETRY_MAX_S
        delay = REPORT_RETRY_FIRST_S
        while True:
            try:
                await self._provider.finish(job, result)
                return
            except ProviderUnavailableError as error:
                if loop.time() + delay > deadline:
                    self._report_failed(job, result, error)
                    return
                self._log.warning(
                    "job.finish_retrying",
                    job_id=job.job_id,
                    job=job.name,
                    queue=job.queue,
                    error=repr(error),
                    retry_in_s=delay,
                )
            except ProviderError as error:
                self._report_failed(job, result, error)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, REPORT_RETRY_MAX_DELAY_S)

    def _report_failed(self, job: JobRecord, result: JobResult, error: ProviderError) -> None:
        self._log.error(
            "job.finish_failed",
            job_id=job.job_id,
            job=job.name,
            queue=job.queue,
            outcome=result.outcome.value,
            error=repr(error),
        )


async def _with_timeout(call: Awaitable[object], timeout_s: float, job: JobRecord) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await call
    except TimeoutError as error:
        # asyncio.timeout raises TimeoutError only when its own deadline expired; a
        # cancellation from outside still arrives as CancelledError.
        raise JobTimeoutError(
            f"job {job.name!r} ran longer than its timeout of {timeout_s:g}s",
            job=job.name,
            job_id=job.job_id,
        ) from error


def _log_keys(job: JobRecord, span: Span | None) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "job_id": job.job_id,
        "job": job.name,
        "queue": job.queue,
        "attempt": job.attempt,
    }
    if span is not None:
        span_context = span.get_span_context()
        if span_context.is_valid:
            # Added here as well as by the optional log processor, so that job logs
            # carry trace ids even when the application configured structlog itself.
            keys["trace_id"] = format(span_context.trace_id, "032x")
            keys["span_id"] = format(span_context.span_id, "016x")
    return keys
