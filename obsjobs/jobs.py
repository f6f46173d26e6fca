"""Registered jobs: a name, a typed signature and the options a worker needs to run them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, final

from obsjobs.arguments import check_arguments
from obsjobs.errors import ConfigurationError, UnknownJobError
from obsjobs.protocols import EnqueueResult, NewJob

if TYPE_CHECKING:
    from obsjobs.retry import RetryPolicy

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_QUEUE",
    "JobRegistry",
    "JobSender",
    "RegisteredJob",
    "SendOptions",
    "validate_name",
]

StateT = TypeVar("StateT")
P = ParamSpec("P")

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3
"""Attempts a job gets when it asks to be retried (``RetryJob``) or has a retry policy
without its own maximum. A job that raises without a retry policy is never retried."""

MAX_NAME_LENGTH = 200
_NAME_PATTERN = re.compile(r"[^\x00-\x1f\x7f]+")


def validate_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a usable job, queue or schedule name, else raise.

    Names may hold any printable text (they are escaped wherever they are shown) but no
    control characters, and at most ``MAX_NAME_LENGTH`` characters.
    """
    if not isinstance(value, str):
        raise TypeError(f"{kind} name must be a str, got {type(value).__name__}")
    if not value or len(value) > MAX_NAME_LENGTH or not _NAME_PATTERN.fullmatch(value):
        raise ConfigurationError(
            f"invalid {kind} name {value!r}: use 1 to {MAX_NAME_LENGTH} printable characters"
        )
    return value


class JobSender(Protocol):
    """The part of the engine that a registered job calls to enqueue itself."""

    async def send(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]: ...


@final
@dataclass(frozen=True, slots=True)
class SendOptions:
    """Per-enqueue options: when the job may run, where, and how it is deduplicated.

    ``delay`` and ``run_at`` are exclusive. ``unique_key``: while a job with the same key
    is waiting or running, enqueueing returns that job's id and adds nothing.
    """

    queue: str | None = None
    delay: timedelta | None = None
    run_at: datetime | None = None
    priority: int | None = None
    unique_key: str | None = None

    def __post_init__(self) -> None:
        if self.delay is not None and self.run_at is not None:
            raise ValueError("pass either delay or run_at, not both")
        if self.delay is not None and self.delay < timedelta(0):
            raise ValueError(f"delay must not be negative, got {self.delay}")
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise ValueError(f"run_at must be timezone-aware, got naive {self.run_at.isoformat()}")
        if self.queue is not None:
            validate_name("queue", self.queue)

    def resolve_run_at(self, now: datetime | None = None) -> datetime | None:
        """Return the absolute time the job may run, or ``None`` for now."""
        if self.run_at is not None:
            return self.run_at.astimezone(UTC)
        if self.delay:
            return (now or datetime.now(UTC)) + self.delay
        return None


_NO_OPTIONS = SendOptions()


@final
class RegisteredJob(Generic[StateT, P]):
    """A job known to the engine by name, with a type-checked ``enqueue``.

    Created by :meth:`obsjobs.Engine.job`. Calling the object runs the function directly
    (useful in tests); ``enqueue`` stores it for a worker, checking the arguments both
    statically (the signature after the state parameter) and at run time (they must
    survive JSON unchanged).
    """

    __slots__ = (
        "_options",
        "_sender",
        "function",
        "max_attempts",
        "name",
        "priority",
        "queue",
        "retry",
        "timeout_s",
    )

    def __init__(
        self,
        sender: JobSender,
        function: Callable[Concatenate[StateT, P], Awaitable[object]],
        *,
        name: str,
        queue: str,
        timeout_s: float | None,
        max_attempts: int,
        retry: RetryPolicy | None,
        priority: int,
        options: SendOptions = _NO_OPTIONS,
    ) -> None:
        self._sender = sender
        self.function = function
        self.name = name
        self.queue = queue
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.retry = retry
        self.priority = priority
        self._options = options

    def __repr__(self) -> str:
        return f"<RegisteredJob {self.name!r} queue={self.queue!r}>"

    async def __call__(self, state: StateT, /, *args: P.args, **kwargs: P.kwargs) -> object:
        """Run the job's function now, in this task, without the queue."""
        return await self.function(state, *args, **kwargs)

    def options(
        self,
        *,
        queue: str | None = None,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
    ) -> RegisteredJob[StateT, P]:
        """Return this job with options for the next ``enqueue``; the original is unchanged.

        Example::

            await send_email.options(delay=timedelta(minutes=5)).enqueue(to="a@example.org")
        """
        options = SendOptions(
            queue=queue, delay=delay, run_at=run_at, priority=priority, unique_key=unique_key
        )
        return RegisteredJob(
            self._sender,
            self.function,
            name=self.name,
            queue=self.queue,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            retry=self.retry,
            priority=self.priority,
            options=options,
        )

    def message(self, *args: P.args, **kwargs: P.kwargs) -> NewJob:
        """Build the job without sending it, for :meth:`obsjobs.Engine.enqueue_many`.

        Raises:
            JobArgumentsError: an argument would not survive JSON unchanged.
        """
        checked_args, checked_kwargs = check_arguments(self.name, args, kwargs)
        options = self._options
        return NewJob(
            name=self.name,
            queue=options.queue or self.queue,
            args=checked_args,
            kwargs=checked_kwargs,
            run_at=options.resolve_run_at(),
            priority=self.priority if options.priority is None else options.priority,
            max_attempts=self.max_attempts,
            unique_key=options.unique_key,
        )

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Store the job for a worker and return its id.

        With a ``unique_key`` option that matches a waiting or running job, returns that
        job's id and adds nothing.

        Raises:
            JobArgumentsError: an argument would not survive JSON unchanged; nothing is
                stored.
            ProviderError: the storage backend failed.
        """
        results = await self._sender.send([self.message(*args, **kwargs)])
        return results[0].job_id


class JobRegistry:
    """Registered jobs by name; a worker runs only the names found here."""

    def __init__(self) -> None:
        self._jobs: dict[str, RegisteredJob[Any, ...]] = {}

    def add(self, job: RegisteredJob[Any, ...]) -> None:
        """Register ``job``; a second job with the same name is a configuration error."""
        existing = self._jobs.get(job.name)
        if existing is not None and existing.function is not job.function:
            raise ConfigurationError(
                f"a job named {job.name!r} is already registered "
                f"({_describe(existing.function)}); pass name=... to register another"
            )
        self._jobs[job.name] = job

    def get(self, name: str) -> RegisteredJob[Any, ...]:
        """Return the job registered as ``name``.

        Raises:
            UnknownJobError: no job has that name.
        """
        job = self._jobs.get(name)
        if job is None:
            raise UnknownJobError(f"no job is registered as {name!r}", job=name)
        return job

    def find(self, name: str) -> RegisteredJob[Any, ...] | None:
        """Return the job registered as ``name``, or ``None``."""
        return self._jobs.get(name)

    def __iter__(self) -> Iterator[RegisteredJob[Any, ...]]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)


def default_job_name(function: Callable[..., object]) -> str:
    """Return ``module.qualname``, the name a job gets when none is given."""
    return _describe(function)


def _describe(function: Callable[..., object]) -> str:
    module = getattr(function, "__module__", None) or "<unknown>"
    qualname = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{qualname}"
