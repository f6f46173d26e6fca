"""Explicit retry helpers: a retry policy for any awaitable call.

obsjobs never retries by default. A :class:`RetryPolicy` retries only where the code
uses it, either by wrapping a call (:meth:`RetryPolicy.call`) or around a block
(:meth:`RetryPolicy.attempts`). Every retry waits at least
:data:`~obsjobs.errors.MIN_RETRY_DELAY_SECONDS`, so a failing call never loops without a
pause.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from numbers import Real
from types import TracebackType
from typing import Literal, ParamSpec, TypeVar, final

import structlog

from obsjobs.backoff import Backoff, ExponentialBackoff, check_attempt
from obsjobs.errors import MIN_RETRY_DELAY_SECONDS, RetryJob

__all__ = ["Attempt", "RetryPolicy"]

P = ParamSpec("P")
T = TypeVar("T")

# RetryJob is a request to the engine to run the job later, so this helper never consumes it.
_NEVER_RETRIED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, RetryJob)

_logger = structlog.get_logger("obsjobs.retry")


@final
@dataclass(frozen=True)
class RetryPolicy:
    """How often and on which errors to retry an awaitable call, and how long to wait.

    ``max_attempts`` counts the first try, so ``max_attempts=3`` means at most two
    retries. An error is retried when it is an instance of a class in ``retry_on`` and
    attempts remain. ``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit``
    and :class:`~obsjobs.errors.RetryJob` are never retried and propagate at once
    (``RetryJob`` is a request to the engine, not to this helper, to run the job later). The
    wait before attempt ``n + 1`` is :meth:`delay_for` ``(n)``, awaited through
    ``sleep`` so tests can record it instead of waiting.

    Each retry logs ``retry.scheduled`` at warning level with the keys ``attempt`` (the
    attempt that failed), ``max_attempts``, ``delay_s`` and ``error`` (the exception's
    class and message; the call's arguments are not logged). When a retryable error arrives
    with no attempts left, ``retry.exhausted`` is logged with the same keys except
    ``delay_s``. An error that is not retryable propagates without a log event.

    Cancellation: a ``CancelledError`` raised by the call, or delivered while waiting
    between attempts, propagates unchanged and ends the retries.

    Example::

        import asyncio

        from obsjobs import FixedBackoff, RetryPolicy

        pending_errors = [ConnectionError("refused"), ConnectionError("refused")]

        async def fetch_report() -> str:
            if pending_errors:
                raise pending_errors.pop()
            return "report"

        policy = RetryPolicy(max_attempts=3, backoff=FixedBackoff(0.05), retry_on=(OSError,))
        assert asyncio.run(policy.call(fetch_report)) == "report"

        async def fetch_in_block() -> str:
            async for attempt in policy.attempts():
                with attempt:
                    return await fetch_report()
            raise AssertionError("unreachable: a final error propagates from the with block")

        pending_errors.append(ConnectionError("refused"))
        assert asyncio.run(fetch_in_block()) == "report"

    Raises:
        TypeError: a field has the wrong type.
        ValueError: ``max_attempts`` is below 1, or ``retry_on`` is empty or lists an
            exception that is never retried.
    """

    max_attempts: int = 3
    backoff: Backoff | Callable[[int], float] = field(default_factory=ExponentialBackoff)
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    sleep: Callable[[float], Awaitable[None]] = field(
        default=asyncio.sleep, compare=False, repr=False, kw_only=True
    )

    def __post_init__(self) -> None:
        """Validate every field and raise naming the first invalid one."""
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {type(self.max_attempts).__name__}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not callable(self.backoff):
            raise TypeError(
                f"backoff must be callable as backoff(attempt) -> seconds, got {self.backoff!r}"
            )
        _check_retry_on(self.retry_on)
        if not callable(self.sleep):
            raise TypeError(f"sleep must be an async callable, got {self.sleep!r}")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Return whether ``error``, raised by attempt number ``attempt``, is retried.

        True when ``attempt < max_attempts`` and ``error`` is an instance of a class in
        ``retry_on``. Always False for the never-retried exceptions listed on the class.
        """
        check_attempt(attempt)
        return attempt < self.max_attempts and self._is_retryable(error)

    def delay_for(self, attempt: int) -> float:
        """Return the seconds to wait after failed attempt number ``attempt``.

        The result is ``backoff(attempt)`` raised to at least
        :data:`~obsjobs.errors.MIN_RETRY_DELAY_SECONDS`.

        Raises:
            TypeError: the backoff returned something other than a number.
            ValueError: the backoff returned NaN, a negative number or infinity.
        """
        check_attempt(attempt)
        delay = self.backoff(attempt)
        if isinstance(delay, bool) or not isinstance(delay, Real):
            raise TypeError(
                f"backoff {self.backoff!r} returned {delay!r} for attempt {attempt}, "
                "but a backoff must return seconds as a float"
            )
        if not (math.isfinite(delay) and delay >= 0):
            raise ValueError(
                f"backoff {self.backoff!r} returned {delay!r} for attempt {attempt}, "
                "but a backoff must return finite seconds >= 0"
            )
        return max(float(delay), MIN_RETRY_DELAY_SECONDS)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying per this policy, and return its result.

        ``fn`` is called anew for each attempt with the same arguments.

        Raises:
            BaseException: the last attempt's error, unchanged, when attempts run out or
                the error is not retryable. A non-retryable error ends after one attempt.
        """
        attempt = 1
        while True:
            try:
                return await fn(*args, **kwargs)
            except BaseException as error:
                # BaseException is caught only to classify the error. CancelledError and
                # the other never-retried exceptions get None here and are re-raised at once.
                delay = self._delay_after_failure(error, attempt)
                if delay is None:
                    raise

            # Sleeping outside the except block keeps a cancellation during the wait
            # from being chained to the attempt's error.
            await self.sleep(delay)
            attempt += 1

    def attempts(self) -> AsyncIterator[Attempt]:
        """Return an async iterator of attempts for retrying a block of code.

        Use each attempt as a context manager around the block::

            async for attempt in policy.attempts():
                with attempt:
                    await flaky()

        A retryable error inside ``with attempt`` is suppressed, and the loop waits
        :meth:`delay_for` ``(n)`` before yielding attempt ``n + 1``. A block that
        finishes without an error ends the loop. A final or non-retryable error
        propagates out of the ``with`` block unchanged, with its original traceback.

        Raises:
            RuntimeError: from the loop, when an attempt was yielded but not used in a
                ``with`` block before the next one was requested.
        """
        return _AttemptIterator(self)

    def _is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, self.retry_on) and not isinstance(error, _NEVER_RETRIED)

    def _delay_after_failure(self, error: BaseException, attempt: int) -> float | None:
        """Log the outcome of a failed attempt and return the delay, or None to give up."""
        if not self.should_retry(error, attempt):
            if self._is_retryable(error):
                _logger.warning(
                    "retry.exhausted",
                    attempt=attempt,
                    max_attempts=self.max_attempts,
                    error=_describe_error(error),
                )
            return None

        delay = self.delay_for(attempt)
        _logger.warning(
            "retry.scheduled",
            attempt=attempt,
            max_attempts=self.max_attempts,
            delay_s=delay,
            error=_describe_error(error),
        )
        return delay


@final
class Attempt:
    """One try of a block retried by :meth:`RetryPolicy.attempts`, used as a context manager.

    ``number`` is 1-based. Leaving the ``with`` block reports the outcome to the
    policy, which decides whether the error, if any, is suppressed for a retry. An
    attempt can be entered only once.
    """

    __slots__ = ("_iterator", "_state", "number")

    def __init__(self, number: int, iterator: _AttemptIterator) -> None:
        """Create attempt ``number``. Only the iterator from ``attempts()`` creates attempts."""
        self.number = number
        self._iterator = iterator
        self._state: Literal["new", "running", "finished"] = "new"

    def __enter__(self) -> Attempt:
        """Start the attempt.

        Raises:
            RuntimeError: the attempt was entered before.
        """
        if self._state != "new":
            raise RuntimeError(
                f"attempt {self.number} was already entered, but an attempt runs only once"
            )
        self._state = "running"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        """Report the outcome and return True to suppress an error that will be retried."""
        self._state = "finished"
        return self._iterator.finish_attempt(self, exc)


@final
class _AttemptIterator:
    """Yields attempts until one succeeds, a final error propagates, or none remain."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._current: Attempt | None = None
        self._retry_delay: float | None = None
        self._done = False

    def __aiter__(self) -> _AttemptIterator:
        return self

    async def __anext__(self) -> Attempt:
        if self._done:
            raise StopAsyncIteration
        if self._current is None:
            self._current = Attempt(1, self)
            return self._current

        if self._retry_delay is None:
            raise RuntimeError(
                f"attempt {self._current.number} was not used in a with block. "
                "Write `with attempt:` around the code to retry"
            )
        delay, self._retry_delay = self._retry_delay, None
        await self._policy.sleep(delay)

        self._current = Attempt(self._current.number + 1, self)
        return self._current

    def finish_attempt(self, attempt: Attempt, error: BaseException | None) -> bool:
        """Record the outcome of ``attempt`` and return True when ``error`` is suppressed."""
        if error is None:
            self._done = True
            return False

        delay = self._policy._delay_after_failure(error, attempt.number)
        if delay is None:
            # The error propagates, so a loop that catches it outside the with block ends.
            self._done = True
            return False
        self._retry_delay = delay
        return True


def _describe_error(error: BaseException) -> str:
    """Return the exception's class and message, such as ``ConnectionError: refused``.

    The same form as the worker's ``error`` key, so one query matches both.
    """
    return f"{type(error).__qualname__}: {error}"


def _check_retry_on(retry_on: object) -> None:
    if not isinstance(retry_on, tuple):
        name = type(retry_on).__name__
        raise TypeError(f"retry_on must be a tuple of exception classes, got {name}")
    if not retry_on:
        raise ValueError(
            "retry_on must list at least one exception class (to never retry, set max_attempts=1)"
        )
    for entry in retry_on:
        if not (isinstance(entry, type) and issubclass(entry, BaseException)):
            raise TypeError(f"retry_on must contain only exception classes, got {entry!r}")
        if issubclass(entry, _NEVER_RETRIED):
            raise ValueError(
                f"retry_on must not contain {entry.__qualname__}, because it is never retried"
            )
