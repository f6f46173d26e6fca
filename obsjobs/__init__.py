"""obsjobs: asyncio background jobs that are traced, counted and timed.

The public API is what this module exports; submodules are implementation detail.
PostgreSQL support is imported lazily, so ``obsjobs.PostgresQueue`` needs the
``obsjobs[postgres]`` extra only when it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from obsjobs.backoff import Backoff, ExponentialBackoff, FixedBackoff
from obsjobs.clock import Clock, ManualClock, SystemClock
from obsjobs.context import JobContext, current_job
from obsjobs.cron import CronTrigger
from obsjobs.engine import Engine, EngineStatus
from obsjobs.errors import (
    ConfigurationError,
    EngineStateError,
    InvalidScheduleError,
    JobArgumentsError,
    JobError,
    JobTimeoutError,
    LeaseLostError,
    ObsJobsError,
    PayloadTooLargeError,
    ProviderError,
    ProviderUnavailableError,
    RetryJob,
    UnknownJobError,
)
from obsjobs.jobs import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, RegisteredJob
from obsjobs.middleware.base import Middleware, compose
from obsjobs.middleware.concurrency import ConcurrencyLimit, ConcurrencyStatistics
from obsjobs.middleware.metrics import Metrics
from obsjobs.protocols import (
    DeadJob,
    EngineObserver,
    EnqueueResult,
    Job,
    JobRecord,
    JobResult,
    JSONValue,
    NewJob,
    Outcome,
    ProviderMiddleware,
    QueueProvider,
    QueueStats,
    RescuedJob,
)
from obsjobs.providers.memory import MemoryQueue
from obsjobs.retry import RetryPolicy
from obsjobs.scheduler import Misfire, Overrun, Schedule
from obsjobs.telemetry.logging import add_trace_ids, configure_logging
from obsjobs.telemetry.otel import configure_tracing_from_env
from obsjobs.telemetry.server import MetricsServer, start_metrics_server
from obsjobs.triggers import IntervalTrigger, Trigger
from obsjobs.version import VERSION
from obsjobs.worker import WorkerStatistics

if TYPE_CHECKING:
    from obsjobs.providers.postgres import PostgresQueue

__version__ = VERSION

__all__ = [
    "Backoff",
    "Clock",
    "ConcurrencyLimit",
    "ConcurrencyStatistics",
    "ConfigurationError",
    "CronTrigger",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_QUEUE",
    "DeadJob",
    "Engine",
    "EngineObserver",
    "EngineStateError",
    "EngineStatus",
    "EnqueueResult",
    "ExponentialBackoff",
    "FixedBackoff",
    "IntervalTrigger",
    "InvalidScheduleError",
    "JSONValue",
    "Job",
    "JobArgumentsError",
    "JobContext",
    "JobError",
    "JobRecord",
    "JobResult",
    "JobTimeoutError",
    "LeaseLostError",
    "ManualClock",
    "MemoryQueue",
    "Metrics",
    "MetricsServer",
    "Middleware",
    "Misfire",
    "NewJob",
    "ObsJobsError",
    "Outcome",
    "Overrun",
    "PayloadTooLargeError",
    "PostgresQueue",
    "ProviderError",
    "ProviderMiddleware",
    "ProviderUnavailableError",
    "QueueProvider",
    "QueueStats",
    "RegisteredJob",
    "RescuedJob",
    "RetryJob",
    "RetryPolicy",
    "Schedule",
    "SystemClock",
    "Trigger",
    "UnknownJobError",
    "WorkerStatistics",
    "__version__",
    "add_trace_ids",
    "compose",
    "configure_logging",
    "configure_tracing_from_env",
    "current_job",
    "start_metrics_server",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresQueue":
        from obsjobs.providers.postgres import PostgresQueue

        return PostgresQueue
    raise AttributeError(f"module 'obsjobs' has no attribute {name!r}")
