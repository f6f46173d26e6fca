"""The engine: the application state, the job registry, the provider chain and two tasks."""

from __future__ import annotations

import asyncio
import enum
import inspect
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Concatenate, Generic, ParamSpec, TypeVar, final

import structlog
from opentelemetry.trace import TracerProvider

from obsjobs.clock import Clock, SystemClock
from obsjobs.cron import CronTrigger
from obsjobs.errors import ConfigurationError, EngineStateError
from obsjobs.jobs import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_QUEUE,
    JobRegistry,
    RegisteredJob,
    SendOptions,
    default_job_name,
    validate_name,
)
from obsjobs.middleware.base import iter_chain
from obsjobs.protocols import EngineObserver, EnqueueResult, Job, NewJob, QueueProvider
from obsjobs.providers.memory import MemoryQueue
from obsjobs.retry import RetryPolicy
from obsjobs.scheduler import (
    DEFAULT_MISFIRE_GRACE_S,
    Misfire,
    Overrun,
    Schedule,
    Scheduler,
    build_schedule,
)
from obsjobs.telemetry.tracing import JobTracer
from obsjobs.triggers import IntervalTrigger, Trigger
from obsjobs.worker import Worker, WorkerStatistics

__all__ = ["Engine", "EngineStatus"]

StateT = TypeVar("StateT")
P = ParamSpec("P")

DEFAULT_CONCURRENCY = 10
DEFAULT_SHUTDOWN_GRACE_S = 30.0

_log = structlog.get_logger("obsjobs.engine")


class EngineStatus(enum.Enum):
    """The life-cycle state of an engine."""

    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@final
class Engine(Generic[StateT]):
    """Runs registered jobs and schedules against one provider, with telemetry.

    The engine owns the application ``state`` (passed to every job), the job registry,
    the provider chain, and two tasks: a queue manager that claims and performs jobs, and
    a scheduler that enqueues cron and interval ticks through the provider.

    Args:
        state: passed to every job. Jobs must not rebind it; share mutable things
            through the objects it holds (a pool, a lock).
        provider: where jobs are stored; a new :class:`MemoryQueue` by default. Wrap it
            with :func:`obsjobs.compose` to add metrics or concurrency limits.
        queues: the queues this engine's worker claims from.
        concurrency: how many jobs this worker runs at once.
        tracer_provider: the OpenTelemetry provider for spans; the global one by default.
        shutdown_grace_s: how long :meth:`stop` lets running jobs finish.
        clock: the scheduler's clock; inject :class:`obsjobs.ManualClock` in tests.
        trace_link_only: start each perform span in a new trace linked to the producer,
            instead of continuing the producer's trace.
        worker_id: identifies this process's worker in the provider; unique per start
            by default (host name, process id and a random suffix).

    Example::

        engine = Engine(State(db=pool))

        @engine.job(queue="mail", timeout=30)
        async def send_email(state: State, to: str) -> None:
            ...

        async with engine:
            await send_email.enqueue(to="a@example.org")
    """

    def __init__(
        self,
        state: StateT,
        provider: QueueProvider | None = None,
        *,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        concurrency: int = DEFAULT_CONCURRENCY,
        tracer_provider: TracerProvider | None = None,
        shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S,
        clock: Clock | None = None,
        trace_link_only: bool = False,
        worker_id: str | None = None,
    ) -> None:
        self.state = state
        self.provider: QueueProvider = provider if provider is not None else MemoryQueue()
        self.registry = JobRegistry()
        self.queues = _check_queues(queues)
        self.concurrency = _check_positive_int("concurrency", concurrency)
        self.shutdown_grace_s = _check_non_negative("shutdown_grace_s", shutdown_grace_s)
        self.clock: Clock = clock or SystemClock()
        self.worker_id = worker_id or _new_worker_id()
        self._tracer = JobTracer(
            tracer_provider, provider_name=self.provider.name, link_only=trace_link_only
        )
        self._schedules: dict[str, Schedule] = {}
        self._status = EngineStatus.CREATED
        self._worker: Worker | None = None
        self._scheduler_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def status(self) -> EngineStatus:
        """The engine's current status."""
        return self._status

    # Registration -------------------------------------------------------------------

    def job(
        self,
        name: str | None = None,
        *,
        queue: str = DEFAULT_QUEUE,
        timeout: float | timedelta | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        priority: int = 0,
    ) -> Callable[[Callable[Concatenate[StateT, P], Awaitable[object]]], RegisteredJob[StateT, P]]:
        """Register an async function as a job; use as a decorator.

        Args:
            name: the stored name; ``module.qualname`` by default. Renaming a job
                strands jobs already stored under the old name, so pin it in production.
            queue: the default queue for this job.
            timeout: cancel an attempt after this many seconds (``JobTimeoutError``).
            max_attempts: attempts before the job is dead; ``retry.max_attempts`` when
                a policy is given, else ``DEFAULT_MAX_ATTEMPTS``. Without ``retry`` a
                failure is final and only ``RetryJob`` runs the job again.
            retry: retry failures that the policy accepts, after its backoff.
            priority: higher runs first among due jobs of one queue.
        """
        timeout_s = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
        attempts = max_attempts or (retry.max_attempts if retry else DEFAULT_MAX_ATTEMPTS)
        _check_positive_int("max_attempts", attempts)
        validate_name("queue", queue)

        def register(
            function: Callable[Concatenate[StateT, P], Awaitable[object]],
        ) -> RegisteredJob[StateT, P]:
            if not inspect.iscoroutinefunction(function):
                raise TypeError(f"job {default_job_name(function)} must be an async function")
            job_name = validate_name("job", name or default_job_name(function))
            registered = RegisteredJob(
                self,
                function,
                name=job_name,
                queue=queue,
                timeout_s=timeout_s,
                max_attempts=attempts,
                retry=retry,
                priority=priority,
            )
            self.registry.add(registered)
            return registered

        return register

    def cron(
        self,
        expression: str,
        job: RegisteredJob[StateT, ...] | Job,
        *,
        name: str,
        timezone: str = "UTC",
        kwargs: Mapping[str, object] | None = None,
        queue: str | None = None,
        misfire: Misfire = Misfire.COALESCE,
        misfire_grace_s: float = DEFAULT_MISFIRE_GRACE_S,
        overrun: Overrun = Overrun.SKIP,
    ) -> Schedule:
        """Enqueue ``job`` on each tick of a cron expression.

        Five fields, six with seconds first, or an alias such as ``@hourly``; read in
        ``timezone`` (IANA name) with the daylight-saving policy of
        :class:`obsjobs.CronTrigger`. An invalid expression, or one that can never fire,
        raises :class:`obsjobs.InvalidScheduleError` here.
        """
        trigger = CronTrigger(expression, timezone=timezone, name=name)
        return self._add_schedule(
            name, trigger, job, kwargs, queue, misfire, misfire_grace_s, overrun
        )

    def every(
        self,
        period: timedelta | float,
        job: RegisteredJob[StateT, ...] | Job,
        *,
        name: str,
        anchor: datetime | None = None,
        kwargs: Mapping[str, object] | None = None,
        queue: str | None = None,
        misfire: Misfire = Misfire.COALESCE,
        misfire_grace_s: float = DEFAULT_MISFIRE_GRACE_S,
        overrun: Overrun = Overrun.SKIP,
    ) -> Schedule:
        """Enqueue ``job`` every ``period``, on a fixed grid from ``anchor``.

        Ticks fall at ``anchor + k * period`` in real elapsed time, the Unix epoch by
        default, so the grid survives restarts and a slow run never shifts later ticks.
        """
        every = period if isinstance(period, timedelta) else timedelta(seconds=period)
        trigger = IntervalTrigger(every, anchor=anchor, name=name)
        return self._add_schedule(
            name, trigger, job, kwargs, queue, misfire, misfire_grace_s, overrun
        )

    def _add_schedule(
        self,
        name: str,
        trigger: Trigger,
        job: RegisteredJob[StateT, ...] | Job,
        kwargs: Mapping[str, object] | None,
        queue: str | None,
        misfire: Misfire,
        misfire_grace_s: float,
        overrun: Overrun,
    ) -> Schedule:
        if name in self._schedules:
            raise ConfigurationError(f"a schedule named {name!r} is already registered")
        if self._status is not EngineStatus.CREATED:
            raise EngineStateError("register schedules before the engine starts")
        schedule = build_schedule(
            name,
            trigger,
            job,
            kwargs=kwargs,
            queue=queue,
            misfire=misfire,
            misfire_grace_s=misfire_grace_s,
            overrun=overrun,
        )
        self._schedules[name] = schedule
        return schedule

    @property
    def schedules(self) -> Mapping[str, Schedule]:
        """Registered schedules by name."""
        return dict(self._schedules)

    # Enqueueing ---------------------------------------------------------------------

    async def enqueue(
        self,
        job: Job,
        *,
        queue: str = DEFAULT_QUEUE,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
    ) -> str:
        """Enqueue a closure or plain ``async def f(state)`` and return its id.

        Only providers that keep jobs in this process (the in-memory queue) accept
        closures; a durable provider rejects them. Use :meth:`job` for registered jobs.
        """
        options = SendOptions(queue=queue, delay=delay, run_at=run_at, priority=priority)
        message = NewJob(
            name=default_job_name(job),
            queue=queue,
            run_at=options.resolve_run_at(),
            priority=priority,
            max_attempts=1,
            function=job,
        )
        results = await self.send([message])
        return results[0].job_id

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[str]:
        """Enqueue jobs built with :meth:`RegisteredJob.message` in one provider call.

        The batch gets one producer span; every job carries that span's context.
        """
        if not jobs:
            return []
        results = await self.send(jobs)
        return [result.job_id for result in results]

    async def send(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        """Store already-built jobs inside a producer span; the low-level enqueue."""
        if not self._tracer.enabled:
            return await self.provider.enqueue(jobs)
        with self._tracer.send(jobs) as span:
            results = await self.provider.enqueue(jobs)
            if len(results) == 1 and span.is_recording():
                span.set_attribute("messaging.message.id", results[0].job_id)
            return results

    async def _send_tick(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        if not self._tracer.enabled:
            return await self.provider.enqueue(jobs)
        with self._tracer.send(jobs, new_trace=True):
            return await self.provider.enqueue(jobs)

    # Life cycle ---------------------------------------------------------------------

    async def start(self, *, worker: bool = True, scheduler: bool = True) -> None:
        """Open the provider and start the queue manager and the scheduler.

        ``worker=False`` makes a producer-only engine (it still enqueues);
        ``scheduler=False`` leaves the schedules to another process.
        """
        if self._status is not EngineStatus.CREATED:
            raise EngineStateError(f"start() needs a new engine, this one is {self._status.value}")
        self._status = EngineStatus.RUNNING
        await self.provider.open()
        observers = self._observers()
        if worker:
            self._worker = Worker(
                state=self.state,
                provider=self.provider,
                registry=self.registry,
                tracer=self._tracer,
                queues=self.queues,
                concurrency=self.concurrency,
                worker_id=self.worker_id,
            )
            self._worker.start()
            for observer in observers:
                observer.worker_started(self.queues, self.concurrency)
        if scheduler and self._schedules:
            runner = Scheduler(
                list(self._schedules.values()),
                provider=self.provider,
                send_tick=self._send_tick,
                clock=self.clock,
                observers=observers,
            )
            self._scheduler_task = asyncio.create_task(runner.run(), name="obsjobs-scheduler")
        # A producer-only engine (no worker) logs engine.started, so that worker.started
        # always means a worker is claiming jobs.
        _log.info(
            "worker.started" if worker else "engine.started",
            worker_id=self.worker_id,
            provider=self.provider.name,
            queues=list(self.queues) if worker else [],
            concurrency=self.concurrency if worker else 0,
            schedules=sorted(self._schedules) if scheduler else [],
        )

    def request_stop(self, *, force: bool = False) -> None:
        """Begin shutdown without waiting; a second call, or ``force``, skips the grace.

        Made for signal handlers: the first SIGTERM calls it, the second forces it.
        """
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self.stop(), name="obsjobs-stop")
            if not force:
                return
        if self._worker is not None:
            _log.warning("worker.stop_forced", worker_id=self.worker_id)
            self._worker.force()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming, let running jobs finish within the grace, then cancel the rest.

        The order is written in :class:`obsjobs.worker.Worker`. Idempotent: a second
        call waits for the first to finish.
        """
        if self._status in (EngineStatus.STOPPING, EngineStatus.STOPPED):
            await self._stopped.wait()
            return
        if self._status is EngineStatus.CREATED:
            self._status = EngineStatus.STOPPED
            self._stopped.set()
            return
        self._status = EngineStatus.STOPPING
        grace = self.shutdown_grace_s if grace_s is None else grace_s
        _log.info("worker.stopping", worker_id=self.worker_id, grace_s=grace)
        try:
            await self._stop_tasks(grace)
        finally:
            self._status = EngineStatus.STOPPED
            self._stopped.set()
        _log.info("worker.stopped", worker_id=self.worker_id)

    async def _stop_tasks(self, grace_s: float) -> None:
        if self._scheduler_task is not None:
            self._scheduler_task.cancel()
            await asyncio.gather(self._scheduler_task, return_exceptions=True)
        if self._worker is not None:
            await self._worker.stop(grace_s)
            for observer in self._observers():
                observer.worker_stopped(self.queues)
        await self.provider.close()

    async def wait_stopped(self) -> None:
        """Wait until the engine has stopped, for example after :meth:`request_stop`.

        Raises what the shutdown started by :meth:`request_stop` raised, such as a
        :class:`obsjobs.ProviderError` from closing the provider.
        """
        await self._stopped.wait()
        task = self._stop_task
        if task is not None and task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error

    def statistics(self) -> WorkerStatistics | None:
        """Return the worker's counters, or ``None`` when this engine runs no worker."""
        return self._worker.statistics() if self._worker is not None else None

    async def __aenter__(self) -> Engine[StateT]:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _observers(self) -> list[EngineObserver]:
        return [layer for layer in iter_chain(self.provider) if isinstance(layer, EngineObserver)]


def _new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _check_queues(queues: Sequence[str]) -> tuple[str, ...]:
    if isinstance(queues, str):
        raise TypeError("queues must be a sequence of names, not one str; use queues=[...]")
    if not queues:
        raise ValueError("queues must name at least one queue")
    return tuple(validate_name("queue", queue) for queue in queues)


def _check_positive_int(parameter: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{parameter} must be a positive int, got {value!r}")
    return value


def _check_non_negative(parameter: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{parameter} must be zero or more seconds, got {value!r}")
    return value
