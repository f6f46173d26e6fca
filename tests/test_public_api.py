"""Pins the public API, so that a change to it is a deliberate one."""

from __future__ import annotations

import obsjobs

EXPECTED = {
    "Backoff", "Clock", "ConcurrencyLimit", "ConcurrencyStatistics", "ConfigurationError",
    "CronTrigger", "DEFAULT_MAX_ATTEMPTS", "DEFAULT_QUEUE", "DeadJob", "Engine",
    "EngineObserver", "EngineStateError", "EngineStatus", "EnqueueResult",
    "ExponentialBackoff", "FixedBackoff", "IntervalTrigger", "InvalidScheduleError",
    "JSONValue", "Job", "JobArgumentsError", "JobContext", "JobError", "JobRecord",
    "JobResult", "JobTimeoutError", "LeaseLostError", "ManualClock", "MemoryQueue",
    "Metrics", "MetricsServer", "Middleware", "Misfire", "NewJob", "ObsJobsError",
    "Outcome", "Overrun", "PayloadTooLargeError", "PostgresQueue", "ProviderError",
    "ProviderMiddleware", "ProviderUnavailableError", "QueueProvider", "QueueStats",
    "RegisteredJob", "RescuedJob", "RetryJob", "RetryPolicy", "Schedule", "SystemClock",
    "Trigger", "UnknownJobError", "WorkerStatistics", "__version__", "add_trace_ids",
    "compose", "configure_logging", "configure_tracing_from_env", "current_job",
    "start_metrics_server",
}  # fmt: skip


def test_all_is_pinned() -> None:
    """__all__ lists exactly the documented public names."""
    assert set(obsjobs.__all__) == EXPECTED


def test_every_name_resolves() -> None:
    """Each public name, the lazily imported ones included, can be imported."""
    for name in obsjobs.__all__:
        assert getattr(obsjobs, name) is not None


def test_public_classes_are_documented() -> None:
    """Every public class and function has a docstring."""
    for name in obsjobs.__all__:
        value = getattr(obsjobs, name)
        if callable(value) and not isinstance(value, str):
            assert (value.__doc__ or "").strip(), name
