"""Tests for obsjobs.backoff and obsjobs.retry: backoffs, call() and the attempts block."""

from __future__ import annotations

import asyncio
import math
import random
import re
import traceback
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from obsjobs.backoff import Backoff, ExponentialBackoff, FixedBackoff
from obsjobs.errors import MIN_RETRY_DELAY_SECONDS, RetryJob
from obsjobs.retry import Attempt, RetryPolicy


class RecordingSleep:
    """Fake sleep that records each requested delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class BlockingSleep:
    """Fake sleep whose first call sets `started` and waits until cancelled.

    Later calls return at once, so code that swallowed the cancellation fails the test
    instead of hanging it.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.started = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if not self.started.is_set():
            self.started.set()
            await asyncio.Event().wait()


class FlakyCall:
    """Async callable that raises the given errors in order, then returns `result`."""

    def __init__(self, *errors: BaseException, result: str = "ok") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    async def __call__(self, *args: object, **kwargs: object) -> str:
        self.calls.append((args, kwargs))
        if self.errors:
            raise self.errors.pop(0)
        return self.result


class ZeroRandom(random.Random):
    """Random generator whose every draw is 0.0, the low end of any uniform range."""

    def random(self) -> float:
        return 0.0


class TopRandom(random.Random):
    """Random generator whose every draw is just below 1.0, the top of any uniform range."""

    def random(self) -> float:
        return math.nextafter(1.0, 0.0)


async def cancel_when_sleeping(task: asyncio.Task[Any], sleep: BlockingSleep) -> None:
    """Cancel `task` once it waits in `sleep`, or right away if it finished first."""
    sleeping = asyncio.create_task(sleep.started.wait())
    await asyncio.wait({task, sleeping}, return_when=asyncio.FIRST_COMPLETED)
    sleeping.cancel()
    task.cancel()


def connection_refused() -> ConnectionError:
    return ConnectionError("refused")


def policy_with(
    sleep: RecordingSleep | BlockingSleep, *, max_attempts: int = 3, seconds: float = 0.5
) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, backoff=FixedBackoff(seconds), sleep=sleep)


def frame_names(error: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(error.__traceback__)]


# Backoff strategies


def test_exponential_backoff_grows_by_factor() -> None:
    """Without jitter, each delay is base_seconds times factor to the power attempt - 1."""
    backoff = ExponentialBackoff(base_seconds=0.5, factor=2.0, jitter="none")

    assert [backoff(attempt) for attempt in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


def test_exponential_backoff_caps_at_max() -> None:
    """Delays stop growing at max_seconds, including attempts whose power overflows a float."""
    backoff = ExponentialBackoff(base_seconds=1.0, factor=2.0, max_seconds=10.0, jitter="none")

    assert backoff(4) == 8.0
    assert backoff(5) == 10.0
    assert backoff(10_000) == 10.0


def test_exponential_backoff_int_factor_huge_attempt() -> None:
    """An int factor with a huge attempt number returns the cap instead of building a huge int."""
    backoff = ExponentialBackoff(base_seconds=1, factor=3, max_seconds=60, jitter="none")

    assert backoff(10**9) == 60.0


def test_exponential_backoff_zero_base() -> None:
    """A zero base_seconds gives zero delay, which delay_for raises to the minimum."""
    backoff = ExponentialBackoff(base_seconds=0.0, jitter="none")

    assert backoff(50) == 0.0
    assert RetryPolicy(backoff=backoff).delay_for(50) == MIN_RETRY_DELAY_SECONDS


def test_full_jitter_within_bounds() -> None:
    """Full jitter stays between the minimum retry delay and the capped delay."""
    backoff = ExponentialBackoff(
        base_seconds=0.1, factor=2.0, max_seconds=30.0, rng=random.Random(3)
    )

    for attempt in range(1, 200):
        capped = min(0.1 * 2.0 ** (attempt - 1), 30.0)
        delay = backoff(attempt)
        assert delay >= MIN_RETRY_DELAY_SECONDS, attempt
        assert delay <= max(capped, MIN_RETRY_DELAY_SECONDS), attempt


def test_full_jitter_floor_at_minimum() -> None:
    """A full-jitter draw of zero is raised to MIN_RETRY_DELAY_SECONDS."""
    backoff = ExponentialBackoff(base_seconds=4.0, rng=ZeroRandom())

    assert backoff(1) == MIN_RETRY_DELAY_SECONDS


def test_equal_jitter_within_bounds() -> None:
    """Equal jitter stays between half the capped delay and the capped delay."""
    backoff = ExponentialBackoff(
        base_seconds=1.0, max_seconds=60.0, jitter="equal", rng=random.Random(5)
    )

    for attempt in range(1, 200):
        capped = min(2.0 ** (attempt - 1), 60.0)
        delay = backoff(attempt)
        assert delay >= capped / 2, attempt
        assert delay <= capped, attempt


def test_equal_jitter_extremes() -> None:
    """Equal jitter gives half the delay for a zero draw and at most the delay for the top draw."""
    low = ExponentialBackoff(base_seconds=8.0, jitter="equal", rng=ZeroRandom())
    high = ExponentialBackoff(base_seconds=8.0, jitter="equal", rng=TopRandom())

    assert low(1) == 4.0
    assert 7.99 < high(1) <= 8.0


def test_seeded_rng_reproduces_delays() -> None:
    """Two backoffs with equally seeded generators return the same delays."""
    first = ExponentialBackoff(rng=random.Random(42))
    second = ExponentialBackoff(rng=random.Random(42))

    assert [first(n) for n in range(1, 20)] == [second(n) for n in range(1, 20)]


def test_fixed_backoff_same_every_attempt() -> None:
    """FixedBackoff returns its seconds for every attempt number."""
    backoff = FixedBackoff(2.5)

    assert [backoff(n) for n in (1, 2, 100)] == [2.5, 2.5, 2.5]


def test_backoff_protocol_accepts_callables() -> None:
    """Built-in backoffs and a plain function all satisfy the Backoff protocol."""

    def linear(attempt: int) -> float:
        return attempt * 1.5

    assert isinstance(ExponentialBackoff(), Backoff)
    assert isinstance(FixedBackoff(1.0), Backoff)
    assert isinstance(linear, Backoff)
    assert RetryPolicy(backoff=linear).delay_for(2) == 3.0


@pytest.mark.parametrize("backoff", [ExponentialBackoff(), FixedBackoff(1.0)])
def test_backoff_rejects_attempt_zero(backoff: Backoff) -> None:
    """Attempt numbers start at 1, so a backoff rejects 0."""
    pattern = r"^attempt must be >= 1 \(attempts count from 1\), got 0$"

    with pytest.raises(ValueError, match=pattern):
        backoff(0)


def test_backoff_equality_ignores_rng() -> None:
    """The rng field takes no part in equality or hashing."""
    first = ExponentialBackoff(rng=random.Random(1))
    second = ExponentialBackoff(rng=random.Random(2))

    assert first == second
    assert hash(first) == hash(second)


@given(
    base_seconds=st.floats(min_value=0.0, max_value=1e6),
    factor=st.floats(min_value=1.0, max_value=100.0),
    max_seconds=st.floats(min_value=MIN_RETRY_DELAY_SECONDS, max_value=1e6),
    jitter=st.sampled_from(["full", "equal", "none"]),
    attempt=st.integers(min_value=1, max_value=100_000),
    rng=st.randoms(use_true_random=False),
)
def test_policy_delay_bounded_property(
    base_seconds: float,
    factor: float,
    max_seconds: float,
    jitter: Any,
    attempt: int,
    rng: random.Random,
) -> None:
    """Every delay is finite and within [MIN_RETRY_DELAY_SECONDS, max_seconds]."""
    backoff = ExponentialBackoff(base_seconds, factor, max_seconds, jitter, rng=rng)

    delay = RetryPolicy(backoff=backoff).delay_for(attempt)

    assert math.isfinite(delay)
    assert delay >= MIN_RETRY_DELAY_SECONDS
    assert delay <= max_seconds


@given(
    base_seconds=st.floats(min_value=0.0, max_value=1e6),
    factor=st.floats(min_value=1.0, max_value=100.0),
    max_seconds=st.floats(min_value=0.0, max_value=1e6),
    attempt=st.integers(min_value=1, max_value=100_000),
)
def test_unjittered_backoff_monotonic_property(
    base_seconds: float, factor: float, max_seconds: float, attempt: int
) -> None:
    """Without jitter, a later attempt never gets a shorter delay."""
    backoff = ExponentialBackoff(base_seconds, factor, max_seconds, "none")

    assert backoff(attempt) <= backoff(attempt + 1)


# RetryPolicy.should_retry and delay_for


def test_should_retry_until_max_attempts() -> None:
    """A listed error is retried while attempt < max_attempts."""
    policy = RetryPolicy(max_attempts=3)

    assert policy.should_retry(connection_refused(), 1) is True
    assert policy.should_retry(connection_refused(), 2) is True
    assert policy.should_retry(connection_refused(), 3) is False


def test_should_retry_unlisted_error() -> None:
    """An error outside retry_on is not retried."""
    policy = RetryPolicy(retry_on=(ConnectionError,))

    assert policy.should_retry(KeyError("x"), 1) is False


@pytest.mark.parametrize(
    "error",
    [asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(1), RetryJob(delay=1.0)],
    ids=["CancelledError", "KeyboardInterrupt", "SystemExit", "RetryJob"],
)
def test_should_retry_never_control_flow(error: BaseException) -> None:
    """Cancellation, interpreter exits and RetryJob are never retried, even under BaseException."""
    policy = RetryPolicy(max_attempts=10, retry_on=(BaseException,))

    assert policy.should_retry(error, 1) is False


def test_delay_for_clamps_to_minimum() -> None:
    """A backoff below MIN_RETRY_DELAY_SECONDS is raised to it."""
    policy = RetryPolicy(backoff=FixedBackoff(0.0))

    assert policy.delay_for(1) == MIN_RETRY_DELAY_SECONDS


@pytest.mark.parametrize("value", [math.nan, -1.0, math.inf], ids=["nan", "negative", "inf"])
def test_delay_for_rejects_invalid_delay(value: float) -> None:
    """A backoff returning NaN, a negative number or infinity raises ValueError naming it."""

    def broken_backoff(attempt: int) -> float:
        return value

    policy = RetryPolicy(backoff=broken_backoff)
    pattern = (
        rf"^backoff <function .*broken_backoff at 0x[0-9a-f]+> returned {re.escape(repr(value))} "
        r"for attempt 1, but a backoff must return finite seconds >= 0$"
    )

    with pytest.raises(ValueError, match=pattern):
        policy.delay_for(1)


def test_delay_for_rejects_non_number() -> None:
    """A backoff returning a string raises TypeError naming the backoff and the value."""

    def text_backoff(attempt: int) -> Any:
        return "1"

    policy = RetryPolicy(backoff=text_backoff)

    with pytest.raises(TypeError, match=r"^backoff <function .*text_backoff at .+> returned '1' "):
        policy.delay_for(1)


def test_policy_equality_ignores_sleep() -> None:
    """Policies that differ only in their sleep function compare equal."""
    assert RetryPolicy(sleep=RecordingSleep()) == RetryPolicy(sleep=RecordingSleep())


# RetryPolicy.call


async def test_call_succeeds_after_transient_failures() -> None:
    """call retries listed errors, sleeping delay_for(n) after attempt n, and returns the result."""
    sleep = RecordingSleep()
    flaky = FlakyCall(connection_refused(), connection_refused(), result="report")

    result = await policy_with(sleep).call(flaky)

    assert result == "report"
    assert len(flaky.calls) == 3
    assert sleep.delays == [0.5, 0.5]


async def test_call_uses_backoff_per_attempt() -> None:
    """The delay after attempt n is the backoff's value for n."""
    sleep = RecordingSleep()
    backoff = ExponentialBackoff(base_seconds=1.0, jitter="none")
    flaky = FlakyCall(connection_refused(), connection_refused(), connection_refused())

    await RetryPolicy(max_attempts=4, backoff=backoff, sleep=sleep).call(flaky)

    assert sleep.delays == [1.0, 2.0, 4.0]


async def test_call_passes_same_arguments() -> None:
    """Every attempt receives the positional and keyword arguments given to call."""
    flaky = FlakyCall(connection_refused())

    await policy_with(RecordingSleep()).call(flaky, "invoice-7", copies=2)

    assert flaky.calls == [(("invoice-7",), {"copies": 2}), (("invoice-7",), {"copies": 2})]


async def test_call_raises_last_error_exhausted() -> None:
    """After max_attempts failures, call raises the last attempt's error object."""
    sleep = RecordingSleep()
    errors = [ConnectionError("first"), ConnectionError("second"), ConnectionError("third")]
    flaky = FlakyCall(*errors)

    with pytest.raises(ConnectionError) as raised:
        await policy_with(sleep).call(flaky)

    assert raised.value is errors[2]
    assert len(flaky.calls) == 3
    assert sleep.delays == [0.5, 0.5]
    assert "__call__" in frame_names(raised.value)


async def test_call_non_retryable_error_once() -> None:
    """An error outside retry_on propagates after one attempt, without sleeping."""
    sleep = RecordingSleep()
    flaky = FlakyCall(KeyError("missing"))
    policy = RetryPolicy(retry_on=(ConnectionError,), sleep=sleep)

    with pytest.raises(KeyError):
        await policy.call(flaky)

    assert len(flaky.calls) == 1
    assert sleep.delays == []


async def test_call_retry_job_not_retried() -> None:
    """RetryJob raised by the call propagates for the engine to handle."""
    flaky = FlakyCall(RetryJob(delay=5.0))

    with pytest.raises(RetryJob):
        await RetryPolicy(retry_on=(Exception,), sleep=RecordingSleep()).call(flaky)

    assert len(flaky.calls) == 1


async def test_call_cancellation_not_retried() -> None:
    """A task cancelled while its call runs ends with CancelledError after one attempt."""
    sleep = RecordingSleep()
    started = asyncio.Event()
    calls = 0

    async def wait_until_cancelled() -> None:
        # Only the first call blocks, so a retry after the cancellation fails the test.
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await asyncio.Event().wait()

    policy = RetryPolicy(max_attempts=5, retry_on=(BaseException,), sleep=sleep)
    task = asyncio.create_task(policy.call(wait_until_cancelled))
    await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task

    assert calls == 1
    assert sleep.delays == []


async def test_call_cancel_during_backoff_sleep() -> None:
    """A cancellation delivered during the backoff sleep propagates and stops the retries."""
    sleep = BlockingSleep()
    flaky = FlakyCall(connection_refused(), connection_refused())
    task = asyncio.create_task(policy_with(sleep).call(flaky))
    await cancel_when_sleeping(task, sleep)

    with pytest.raises(asyncio.CancelledError):
        await task

    assert len(flaky.calls) == 1
    assert sleep.delays == [0.5]


async def test_call_invalid_backoff_chains_error() -> None:
    """A backoff returning NaN raises ValueError, with the attempt's error as its context."""

    def nan_backoff(attempt: int) -> float:
        return math.nan

    error = connection_refused()
    policy = RetryPolicy(backoff=nan_backoff, sleep=RecordingSleep())

    with pytest.raises(ValueError, match=r"^backoff .*nan_backoff.* returned nan") as raised:
        await policy.call(FlakyCall(error))

    assert raised.value.__context__ is error


# RetryPolicy.attempts


async def test_attempts_succeed_after_transient_failures() -> None:
    """The block is retried after listed errors and the loop ends on the first success."""
    sleep = RecordingSleep()
    flaky = FlakyCall(connection_refused(), connection_refused(), result="report")
    numbers: list[int] = []
    results: list[str] = []

    async for attempt in policy_with(sleep).attempts():
        numbers.append(attempt.number)
        with attempt:
            results.append(await flaky())

    assert numbers == [1, 2, 3]
    assert results == ["report"]
    assert sleep.delays == [0.5, 0.5]


async def test_attempts_first_success_one_attempt() -> None:
    """A block that succeeds at once runs exactly once without sleeping."""
    sleep = RecordingSleep()
    numbers: list[int] = []

    async for attempt in policy_with(sleep).attempts():
        with attempt:
            numbers.append(attempt.number)

    assert numbers == [1]
    assert sleep.delays == []


async def test_attempts_raise_last_error_exhausted() -> None:
    """After max_attempts failures, the last error leaves the with block with its traceback."""
    sleep = RecordingSleep()
    errors = [ConnectionError("first"), ConnectionError("second"), ConnectionError("third")]
    flaky = FlakyCall(*errors)
    numbers: list[int] = []

    with pytest.raises(ConnectionError) as raised:
        async for attempt in policy_with(sleep).attempts():
            numbers.append(attempt.number)
            with attempt:
                await flaky()

    assert raised.value is errors[2]
    assert numbers == [1, 2, 3]
    assert sleep.delays == [0.5, 0.5]
    assert "__call__" in frame_names(raised.value)


async def test_attempts_non_retryable_error_once() -> None:
    """An error outside retry_on leaves the with block after one attempt, without sleeping."""
    sleep = RecordingSleep()
    policy = RetryPolicy(retry_on=(ConnectionError,), sleep=sleep)
    numbers: list[int] = []

    with pytest.raises(KeyError):
        async for attempt in policy.attempts():
            numbers.append(attempt.number)
            with attempt:
                raise KeyError("missing")

    assert numbers == [1]
    assert sleep.delays == []


async def test_attempts_cancellation_not_retried() -> None:
    """CancelledError inside the with block propagates after one attempt."""
    sleep = RecordingSleep()
    policy = RetryPolicy(max_attempts=5, retry_on=(BaseException,), sleep=sleep)
    numbers: list[int] = []

    with pytest.raises(asyncio.CancelledError):
        async for attempt in policy.attempts():
            numbers.append(attempt.number)
            with attempt:
                raise asyncio.CancelledError

    assert numbers == [1]
    assert sleep.delays == []


async def test_attempts_cancel_during_backoff_sleep() -> None:
    """A cancellation delivered during the sleep between attempts propagates from the loop."""
    sleep = BlockingSleep()
    numbers: list[int] = []

    async def retry_block() -> None:
        async for attempt in policy_with(sleep).attempts():
            numbers.append(attempt.number)
            with attempt:
                raise connection_refused()

    task = asyncio.create_task(retry_block())
    await cancel_when_sleeping(task, sleep)

    with pytest.raises(asyncio.CancelledError):
        await task

    assert numbers == [1]
    assert sleep.delays == [0.5]


async def test_attempts_end_after_caught_error() -> None:
    """A loop that catches the final error outside the with block yields no further attempt."""
    policy = RetryPolicy(max_attempts=2, retry_on=(ConnectionError,), sleep=RecordingSleep())
    numbers: list[int] = []
    caught: list[BaseException] = []

    async for attempt in policy.attempts():
        numbers.append(attempt.number)
        try:
            with attempt:
                raise KeyError("missing")
        except KeyError as error:
            caught.append(error)

    assert numbers == [1]
    assert len(caught) == 1


async def test_attempts_require_with_block() -> None:
    """Requesting another attempt before using the current one in a with block raises."""
    policy = RetryPolicy(sleep=RecordingSleep())

    with pytest.raises(RuntimeError, match=r"^attempt 1 was not used in a with block\. "):
        async for _attempt in policy.attempts():
            pass


async def test_attempt_entered_twice_rejected() -> None:
    """An attempt can be used in only one with block."""
    policy = RetryPolicy(sleep=RecordingSleep())
    entered: list[Attempt] = []

    pattern = r"^attempt 1 was already entered, but an attempt runs only once$"

    with pytest.raises(RuntimeError, match=pattern):
        async for attempt in policy.attempts():
            with attempt:
                entered.append(attempt)
            with attempt:
                entered.append(attempt)

    assert len(entered) == 1


# Settings validation

INVALID_SETTINGS = [
    pytest.param(
        RetryPolicy,
        {"max_attempts": 0},
        ValueError,
        r"^max_attempts must be >= 1, got 0$",
        id="max_attempts-zero",
    ),
    pytest.param(
        RetryPolicy,
        {"max_attempts": 2.5},
        TypeError,
        r"^max_attempts must be an int, got float$",
        id="max_attempts-float",
    ),
    pytest.param(
        RetryPolicy,
        {"max_attempts": True},
        TypeError,
        r"^max_attempts must be an int, got bool$",
        id="max_attempts-bool",
    ),
    pytest.param(
        RetryPolicy,
        {"backoff": 2.0},
        TypeError,
        r"^backoff must be callable as backoff\(attempt\) -> seconds, got 2\.0$",
        id="backoff-not-callable",
    ),
    pytest.param(
        RetryPolicy,
        {"retry_on": ValueError},
        TypeError,
        r"^retry_on must be a tuple of exception classes, got type$",
        id="retry_on-class",
    ),
    pytest.param(
        RetryPolicy,
        {"retry_on": [ValueError]},
        TypeError,
        r"^retry_on must be a tuple of exception classes, got list$",
        id="retry_on-list",
    ),
    pytest.param(
        RetryPolicy,
        {"retry_on": ()},
        ValueError,
        r"^retry_on must list at least one exception class \(to never retry, set max_attempts=1\)$",
        id="retry_on-empty",
    ),
    pytest.param(
        RetryPolicy,
        {"retry_on": (ValueError, "OSError")},
        TypeError,
        r"^retry_on must contain only exception classes, got 'OSError'$",
        id="retry_on-string-entry",
    ),
    pytest.param(
        RetryPolicy,
        {"retry_on": (asyncio.CancelledError,)},
        ValueError,
        r"^retry_on must not contain CancelledError, because it is never retried$",
        id="retry_on-cancelled",
    ),
    pytest.param(
        RetryPolicy,
        {"retry_on": (OSError, RetryJob)},
        ValueError,
        r"^retry_on must not contain RetryJob, because it is never retried$",
        id="retry_on-retry-job",
    ),
    pytest.param(
        RetryPolicy,
        {"sleep": 0.5},
        TypeError,
        r"^sleep must be an async callable, got 0\.5$",
        id="sleep-not-callable",
    ),
    pytest.param(
        ExponentialBackoff,
        {"base_seconds": -1},
        ValueError,
        r"^base_seconds must be finite and >= 0, got -1$",
        id="base_seconds-negative",
    ),
    pytest.param(
        ExponentialBackoff,
        {"base_seconds": math.nan},
        ValueError,
        r"^base_seconds must be finite and >= 0, got nan$",
        id="base_seconds-nan",
    ),
    pytest.param(
        ExponentialBackoff,
        {"base_seconds": "1"},
        TypeError,
        r"^base_seconds must be a number, got str$",
        id="base_seconds-str",
    ),
    pytest.param(
        ExponentialBackoff,
        {"factor": 0.5},
        ValueError,
        r"^factor must be finite and >= 1, got 0\.5$",
        id="factor-below-one",
    ),
    pytest.param(
        ExponentialBackoff,
        {"factor": math.inf},
        ValueError,
        r"^factor must be finite and >= 1, got inf$",
        id="factor-inf",
    ),
    pytest.param(
        ExponentialBackoff,
        {"factor": None},
        TypeError,
        r"^factor must be a number, got NoneType$",
        id="factor-none",
    ),
    pytest.param(
        ExponentialBackoff,
        {"max_seconds": math.inf},
        ValueError,
        r"^max_seconds must be finite and >= 0, got inf$",
        id="max_seconds-inf",
    ),
    pytest.param(
        ExponentialBackoff,
        {"max_seconds": -0.5},
        ValueError,
        r"^max_seconds must be finite and >= 0, got -0\.5$",
        id="max_seconds-negative",
    ),
    pytest.param(
        ExponentialBackoff,
        {"jitter": "half"},
        ValueError,
        r"^jitter must be 'full', 'equal' or 'none', got 'half'$",
        id="jitter-unknown",
    ),
    pytest.param(
        ExponentialBackoff,
        {"rng": 42},
        TypeError,
        r"^rng must be a random\.Random or None, got int$",
        id="rng-int",
    ),
    pytest.param(
        FixedBackoff,
        {"seconds": -1.0},
        ValueError,
        r"^seconds must be finite and >= 0, got -1\.0$",
        id="seconds-negative",
    ),
    pytest.param(
        FixedBackoff,
        {"seconds": math.inf},
        ValueError,
        r"^seconds must be finite and >= 0, got inf$",
        id="seconds-inf",
    ),
    pytest.param(
        FixedBackoff,
        {"seconds": True},
        TypeError,
        r"^seconds must be a number, got bool$",
        id="seconds-bool",
    ),
]


@pytest.mark.parametrize(("cls", "kwargs", "error", "pattern"), INVALID_SETTINGS)
def test_invalid_settings_rejected(
    cls: type[object], kwargs: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    """Each invalid setting raises ValueError or TypeError whose message names the field."""
    with pytest.raises(error, match=pattern):
        cls(**kwargs)


@pytest.mark.parametrize("method", ["should_retry", "delay_for"])
def test_policy_rejects_attempt_zero(method: str) -> None:
    """should_retry and delay_for reject attempt numbers below 1."""
    policy = RetryPolicy()
    call: Any = getattr(policy, method)
    arguments = (connection_refused(), 0) if method == "should_retry" else (0,)

    with pytest.raises(ValueError, match=r"^attempt must be >= 1"):
        call(*arguments)


# Log events


async def test_call_logs_retry_scheduled() -> None:
    """Each retry logs retry.scheduled at warning level with attempt, limits, delay and error."""
    flaky = FlakyCall(connection_refused(), TimeoutError("read timed out"))

    with capture_logs() as logs:
        await policy_with(RecordingSleep()).call(flaky)

    assert logs == [
        {
            "event": "retry.scheduled",
            "log_level": "warning",
            "attempt": 1,
            "max_attempts": 3,
            "delay_s": 0.5,
            "error": "ConnectionError: refused",
        },
        {
            "event": "retry.scheduled",
            "log_level": "warning",
            "attempt": 2,
            "max_attempts": 3,
            "delay_s": 0.5,
            "error": "TimeoutError: read timed out",
        },
    ]


async def test_call_logs_retry_exhausted() -> None:
    """Giving up logs retry.exhausted with the last attempt and its error."""
    flaky = FlakyCall(connection_refused(), ConnectionError("reset"))

    with capture_logs() as logs, pytest.raises(ConnectionError):
        await policy_with(RecordingSleep(), max_attempts=2).call(flaky)

    assert [entry["event"] for entry in logs] == ["retry.scheduled", "retry.exhausted"]
    assert logs[1] == {
        "event": "retry.exhausted",
        "log_level": "warning",
        "attempt": 2,
        "max_attempts": 2,
        "error": "ConnectionError: reset",
    }


async def test_non_retryable_error_logs_nothing() -> None:
    """An error outside retry_on propagates without a retry log event."""
    policy = RetryPolicy(retry_on=(ConnectionError,), sleep=RecordingSleep())

    with capture_logs() as logs, pytest.raises(KeyError):
        await policy.call(FlakyCall(KeyError("missing")))

    assert logs == []


async def test_logs_omit_call_arguments() -> None:
    """Log events never contain the arguments passed to the retried call."""
    flaky = FlakyCall(connection_refused(), connection_refused(), connection_refused())

    with capture_logs() as logs, pytest.raises(ConnectionError):
        await policy_with(RecordingSleep()).call(flaky, "account-4411", password="hunter2")

    assert len(logs) == 3
    assert "account-4411" not in repr(logs)
    assert "hunter2" not in repr(logs)


async def test_attempts_log_same_events() -> None:
    """The block form logs retry.scheduled and retry.exhausted like call does."""
    policy = policy_with(RecordingSleep(), max_attempts=2)

    with capture_logs() as logs, pytest.raises(ConnectionError):
        async for attempt in policy.attempts():
            with attempt:
                raise connection_refused()

    assert [entry["event"] for entry in logs] == ["retry.scheduled", "retry.exhausted"]
    assert logs[0] == {
        "event": "retry.scheduled",
        "log_level": "warning",
        "attempt": 1,
        "max_attempts": 2,
        "delay_s": 0.5,
        "error": "ConnectionError: refused",
    }
