"""Contracts between the engine, the storage providers and provider middleware.

A provider stores jobs; the engine claims them, performs them and reports each attempt's
result back with :meth:`QueueProvider.finish`. Middleware is a provider that wraps a
provider (see :func:`obsjobs.compose`), so every call the engine makes passes through it.

Times are timezone-aware UTC ``datetime`` values, except durations, which are float seconds
with the unit in the name.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeAlias, runtime_checkable

__all__ = [
    "DeadJob",
    "EngineObserver",
    "EnqueueResult",
    "JSONValue",
    "Job",
    "JobRecord",
    "JobResult",
    "NewJob",
    "Outcome",
    "ProviderMiddleware",
    "QueueProvider",
    "QueueStats",
    "RescuedJob",
]

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""A value that survives a JSON round trip unchanged: the only kind a job argument may be."""


class Job(Protocol):
    """An async callable performed with the application state.

    A plain ``async def f(state)`` and a closure that captures its own variables both
    qualify. Only the in-memory queue can hold closures; a durable provider needs a
    registered job, which is stored as a name plus JSON arguments.
    """

    def __call__(self, state: Any, /) -> Awaitable[object]: ...


@dataclass(slots=True)
class NewJob:
    """A job to enqueue, as the engine hands it to a provider.

    ``args`` and ``kwargs`` have already been checked to survive a JSON round trip.
    ``headers`` carries the W3C trace context of the code that enqueued the job; it is
    never mixed into the arguments. ``function`` is set only for closures, which only
    the in-memory queue accepts.

    ``max_attempts`` defaults to 1, so a job built by hand runs once: on a durable
    provider it becomes dead, not run again, when its lease expires. Registered jobs
    set their own.

    Not frozen, because a frozen dataclass costs several times more to build and one is
    built per job; treat it as read-only once enqueued.
    """

    name: str
    queue: str
    args: list[JSONValue] = field(default_factory=list)
    kwargs: dict[str, JSONValue] = field(default_factory=dict)
    run_at: datetime | None = None
    priority: int = 0
    max_attempts: int = 1
    unique_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    schedule: str | None = None
    scheduled_time: datetime | None = None
    function: Job | None = None


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The id a provider gave a job, and whether this call added it.

    ``created`` is false in two cases. A job with the same unique key was already
    waiting or running: that job's id is returned and nothing is added. Or the schedule
    tick was already enqueued, by this or another scheduler: ``job_id`` is then empty.
    The tick check comes before the unique key check, and holds after the tick's job
    ended.
    """

    job_id: str
    created: bool = True


@dataclass(slots=True)
class JobRecord:
    """A claimed job, as a provider returns it to the engine.

    ``attempt`` is 1 for the first run and goes up by one with every claim.
    ``available_at`` is when the job could first run: its enqueue time or its
    ``run_at``, whichever is later; queue wait is measured from it.
    ``lease_token`` identifies this claim, so a provider can reject a result from a
    worker that lost the lease; providers without leases leave it empty.

    Not frozen, for the same per-job cost as :class:`NewJob`; treat it as read-only.
    """

    job_id: str
    name: str
    queue: str
    args: list[JSONValue]
    kwargs: dict[str, JSONValue]
    attempt: int
    max_attempts: int
    enqueued_at: datetime
    available_at: datetime
    priority: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    schedule: str | None = None
    scheduled_time: datetime | None = None
    function: Job | None = None
    lease_token: str = ""


class Outcome(enum.Enum):
    """The end state of one attempt, as the engine reports it to the provider."""

    SUCCEEDED = "succeeded"
    """The job returned."""
    RETRY = "retry"
    """The job failed or asked to run again; it goes back to the queue at ``retry_at``."""
    DEAD = "dead"
    """The job failed for good: no attempts left, unknown name or bad payload. It is kept."""
    CANCELLED = "cancelled"
    """The job was cancelled mid-run by engine shutdown. Durable providers put it back
    without counting the attempt; the in-memory queue keeps it as dead, because running
    it again would break its at-most-once promise."""
    RELEASED = "released"
    """The job was claimed but never started (shutdown); it goes back to the queue."""


@dataclass(slots=True)
class JobResult:
    """The result of one attempt.

    ``error_type`` is the exception's class name when the attempt raised, and ``None``
    for a success, a release and a retry the job asked for with ``RetryJob``.
    ``started_at`` is when perform started (UTC), ``duration_s`` how long it ran.
    """

    outcome: Outcome
    started_at: datetime
    duration_s: float = 0.0
    error: str | None = None
    error_type: str | None = None
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Jobs in one queue, by state, read from the provider.

    ``oldest_ready_at`` is when the oldest ready job became ready, ``None`` when no job
    is ready.
    """

    queue: str
    ready: int = 0
    scheduled: int = 0
    running: int = 0
    dead: int = 0
    oldest_ready_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeadJob:
    """A job that failed for good, kept for inspection and requeueing."""

    job_id: str
    name: str
    queue: str
    attempt: int
    error: str | None
    failed_at: datetime
    args: list[JSONValue] = field(default_factory=list)
    kwargs: dict[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RescuedJob:
    """A job whose lease expired and that a provider returned to the queue or to dead."""

    job_id: str
    name: str
    queue: str
    attempt: int
    dead: bool


@runtime_checkable
class QueueProvider(Protocol):
    """Storage for jobs.

    Contract:

    - ``enqueue`` stores every job of the batch or none of them.
    - ``claim`` returns at most ``limit`` jobs that are due, from the given queues,
      highest ``priority`` first, then earliest ``available_at``, then oldest. Each
      returned job belongs to the caller until it calls ``finish`` for it (or, on a
      durable provider, until its lease expires).
    - ``wait`` returns as soon as a claim may find a job, including one enqueued
      through another provider object on the same storage, and at the latest after
      ``timeout_s``. It never raises on timeout.
    - ``finish`` records one attempt's result. It must be called exactly once per claimed
      job, on every path (success, failure, cancellation, shutdown).
    - ``stats`` is read at scrape time, from another thread's request through the
      event loop; it must be cheap and bounded.
    - Methods other than ``stats`` and ``close`` are called only between ``open`` and
      ``close``. Driver errors are raised as :class:`obsjobs.errors.ProviderError`.

    ``durable`` is true for at-least-once providers (jobs survive a restart) and false
    for at-most-once ones. ``lease_s`` is the lease length for providers with leases,
    ``None`` otherwise; the engine renews leases every third of it.
    """

    @property
    def name(self) -> str: ...

    @property
    def durable(self) -> bool: ...

    @property
    def lease_s(self) -> float | None: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]: ...

    async def claim(
        self, queues: Sequence[str], limit: int, *, worker_id: str
    ) -> list[JobRecord]: ...

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None: ...

    async def finish(self, job: JobRecord, result: JobResult) -> None: ...

    async def renew(self, jobs: Sequence[JobRecord]) -> list[str]:
        """Extend the leases of running jobs; return the ids whose lease was lost."""
        ...

    async def rescue(self) -> list[RescuedJob]:
        """Return expired leases to the queue (or to dead when out of attempts)."""
        ...

    async def stats(self) -> list[QueueStats]: ...

    async def last_tick(self, schedule: str) -> datetime | None:
        """Return the nominal time of the schedule's last enqueued tick, if any."""
        ...

    async def dead_jobs(self, queue: str | None = None, limit: int = 100) -> list[DeadJob]: ...

    async def requeue(self, job_ids: Sequence[str]) -> int:
        """Move dead jobs back to ready with a fresh attempt count; return how many moved."""
        ...


@runtime_checkable
class ProviderMiddleware(Protocol):
    """Something that wraps a provider and returns the wrapped provider.

    ``compose(provider, a, b)`` returns ``a.wrap(b.wrap(provider))``: the first
    middleware sees each call first and each result last. A middleware instance wraps
    one provider; wrapping a second one raises :class:`obsjobs.errors.ConfigurationError`.
    """

    def wrap(self, inner: QueueProvider) -> QueueProvider: ...


@runtime_checkable
class EngineObserver(Protocol):
    """Receives engine and scheduler events that no provider call carries.

    The engine finds observers by walking its middleware chain (the metrics middleware
    is one), so a middleware can watch schedules and worker settings with no extra
    wiring. Methods are plain functions called on the event loop; they must not block.
    """

    def worker_started(self, queues: Sequence[str], concurrency: int) -> None:
        """Record that the worker starts serving ``queues`` with ``concurrency`` slots."""
        ...

    def worker_stopped(self, queues: Sequence[str]) -> None:
        """Record that the worker has stopped."""
        ...

    def schedule_planned(self, schedule: str, next_run: datetime) -> None:
        """Record that the schedule's next tick is due at ``next_run``."""
        ...

    def schedule_missed(self, schedule: str, count: int) -> None:
        """Record that the misfire or overrun policy skipped or coalesced ``count`` ticks."""
        ...
