"""Exceptions raised by obsjobs.

Every error that obsjobs raises on purpose derives from :class:`ObsJobsError`::

    ObsJobsError
    ├── ConfigurationError          bad settings given to the engine, a provider or the CLI
    │   └── InvalidScheduleError    a cron expression or interval that is invalid or never fires
    ├── JobError
    │   ├── UnknownJobError         a job name that no registered job has
    │   ├── JobArgumentsError       arguments that do not survive a JSON round trip
    │   ├── PayloadTooLargeError    an encoded job larger than the provider accepts
    │   └── JobTimeoutError         a job that ran past its own timeout
    ├── EngineStateError            start/stop/enqueue called in the wrong engine state
    └── ProviderError               the storage backend failed; the driver error is the cause
        ├── ProviderUnavailableError  the backend cannot be reached right now
        └── LeaseLostError          a result written by a worker that no longer holds the job

:class:`RetryJob` is not an error: a job raises it to ask to be run again later.

Misuse of an API (a wrong type, a negative delay) raises the built-in ``TypeError`` or
``ValueError`` naming the parameter, as Python code usually does.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = [
    "ConfigurationError",
    "EngineStateError",
    "InvalidScheduleError",
    "JobArgumentsError",
    "JobError",
    "JobTimeoutError",
    "LeaseLostError",
    "ObsJobsError",
    "PayloadTooLargeError",
    "ProviderError",
    "ProviderUnavailableError",
    "RetryJob",
    "UnknownJobError",
]


class ObsJobsError(Exception):
    """Root of every error obsjobs raises on purpose."""


class ConfigurationError(ObsJobsError, ValueError):
    """Settings given to the engine, a provider or the command line are invalid."""


class InvalidScheduleError(ConfigurationError):
    """A schedule's cron expression or interval is invalid, or can never fire.

    Attributes:
        schedule: the schedule's name, or the expression when no name is known yet.
    """

    def __init__(self, message: str, *, schedule: str) -> None:
        super().__init__(message)
        self.schedule = schedule


class JobError(ObsJobsError):
    """A problem with one job: its name, its arguments or its run.

    Attributes:
        job: the job's registered name, when known.
        job_id: the job's id, when it has one already.
    """

    def __init__(self, message: str, *, job: str | None = None, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job = job
        self.job_id = job_id


class UnknownJobError(JobError):
    """No job is registered under the given name, so a worker will not run it."""


class JobArgumentsError(JobError, TypeError):
    """A job's arguments would not come back from the queue exactly as given.

    Arguments travel as JSON. Values that JSON changes (tuples, sets, non-string dict
    keys, NaN, datetimes, custom objects) are rejected at enqueue and nothing is stored.

    Attributes:
        argument: the path of the offending value, such as ``kwargs['to'][2]``.
    """

    def __init__(self, message: str, *, job: str | None, argument: str) -> None:
        super().__init__(message, job=job)
        self.argument = argument


class PayloadTooLargeError(JobError):
    """An encoded job is larger than the provider's configured maximum.

    Attributes:
        size_bytes: the encoded size.
        max_bytes: the provider's limit.
    """

    def __init__(self, message: str, *, job: str | None, size_bytes: int, max_bytes: int) -> None:
        super().__init__(message, job=job)
        self.size_bytes = size_bytes
        self.max_bytes = max_bytes


class JobTimeoutError(JobError, TimeoutError):
    """A job ran longer than its own ``timeout`` and was cancelled.

    This differs from a cancellation that comes from outside the job (engine shutdown),
    which propagates as ``asyncio.CancelledError``.
    """


class EngineStateError(ObsJobsError, RuntimeError):
    """An engine method was called in a state that does not allow it.

    For example ``start()`` on an engine that is already running, or ``enqueue()`` on an
    engine whose provider has been closed.
    """


class ProviderError(ObsJobsError):
    """The storage backend failed. The driver's exception is chained as ``__cause__``.

    Attributes:
        provider: the provider's name (``memory``, ``postgres``, ``redis``).
    """

    def __init__(self, message: str, *, provider: str) -> None:
        super().__init__(message)
        self.provider = provider


class ProviderUnavailableError(ProviderError):
    """The backend cannot be reached right now; retrying later may work."""


class LeaseLostError(ProviderError):
    """A worker tried to record a result for a job whose lease it no longer holds.

    The job was rescued and claimed again by another attempt; the stale result is
    rejected so that it never overwrites the newer attempt.
    """


class RetryJob(Exception):  # noqa: N818 - a request to the engine, not an error
    """Raised by a running job to ask to be run again after ``delay``.

    The attempt count goes up by one. When the job has used its ``max_attempts``, it
    becomes a dead job instead, kept and inspectable. A retry is never immediate: a
    delay below :data:`MIN_RETRY_DELAY_SECONDS` is raised to it.

    Example::

        if not await service_ready():
            raise RetryJob(delay=timedelta(seconds=30), reason="service not ready")
    """

    def __init__(self, delay: timedelta | float, *, reason: str = "") -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds != seconds or seconds < 0:
            raise ValueError(f"RetryJob delay must be zero or positive seconds, got {delay!r}")
        super().__init__(reason or f"retry requested in {seconds:g}s")
        self.delay_seconds = max(seconds, MIN_RETRY_DELAY_SECONDS)
        self.reason = reason


MIN_RETRY_DELAY_SECONDS = 0.05
"""The shortest delay before a retry, so that a job can never loop without waiting."""
