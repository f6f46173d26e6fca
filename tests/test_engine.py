"""Tests for the engine on the in-memory queue: jobs, arguments, context, failures, shutdown."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from obsjobs import (
    ConcurrencyLimit,
    Engine,
    EngineStateError,
    EngineStatus,
    FixedBackoff,
    JobArgumentsError,
    JobContext,
    MemoryQueue,
    RetryJob,
    RetryPolicy,
    compose,
    current_job,
)
from obsjobs.errors import ConfigurationError, ProviderUnavailableError
from obsjobs.middleware.base import Middleware
from obsjobs.protocols import JobRecord, JobResult, Outcome

WAIT_S = 5.0
"""A liveness bound for awaiting an event: generous, never a timing assertion."""


@dataclass
class State:
    seen: list[object] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 1

    def record(self, value: object) -> None:
        self.seen.append(value)
        if len(self.seen) >= self.expected:
            self.done.set()


@pytest.fixture
async def engine() -> AsyncIterator[Engine[State]]:
    engine = Engine(State(), MemoryQueue(), shutdown_grace_s=1.0)
    yield engine
    await engine.stop()


async def wait_done(state: State) -> None:
    await asyncio.wait_for(state.done.wait(), WAIT_S)


async def test_plain_function_receives_state(engine: Engine[State]) -> None:
    """A plain async def taking the state runs without a wrapper."""

    async def remember(state: State) -> None:
        state.record("plain")

    await engine.start()
    await engine.enqueue(remember)
    await wait_done(engine.state)
    assert engine.state.seen == ["plain"]


async def test_closure_keeps_captured_variables(engine: Engine[State]) -> None:
    """A closure captures its own variables and still gets the state."""
    label = "captured"

    async def remember(state: State) -> None:
        state.record(label)

    await engine.start()
    await engine.enqueue(remember)
    await wait_done(engine.state)
    assert engine.state.seen == ["captured"]


async def test_registered_job_gets_arguments_back(engine: Engine[State]) -> None:
    """Arguments come back from the queue with the same types and values."""
    payload = {"ints": [1, 2, 3], "nested": {"flag": True, "none": None}, "ratio": 0.5}

    @engine.job(name="collect")
    async def collect(state: State, label: str, data: dict[str, object], *, count: int) -> None:
        state.record((label, data, count))

    await engine.start()
    await collect.enqueue("x", payload, count=7)
    await wait_done(engine.state)
    assert engine.state.seen == [("x", payload, 7)]
    assert type(engine.state.seen[0][2]) is int  # type: ignore[index]


async def test_mutating_arguments_after_enqueue_is_harmless(engine: Engine[State]) -> None:
    """The queue keeps a copy, so changing the caller's list later changes nothing."""

    @engine.job(name="keep")
    async def keep(state: State, items: list[int]) -> None:
        state.record(items)

    items = [1, 2]
    await keep.enqueue(items)
    items.append(3)
    await engine.start()
    await wait_done(engine.state)
    assert engine.state.seen == [[1, 2]]


@pytest.mark.parametrize(
    ("args", "kwargs", "path"),
    [
        (((1, 2),), {}, r"args\[0\]"),
        ((), {"when": datetime(2026, 1, 1, tzinfo=UTC)}, r"kwargs\['when'\]"),
        ((), {"data": {1: "a"}}, r"kwargs\['data'\]"),
        ((), {"data": [1, {"x": float("nan")}]}, r"kwargs\['data'\]\[1\]\['x'\]"),
        (({1, 2},), {}, r"args\[0\]"),
    ],
)
async def test_unsafe_arguments_rejected_by_name(
    engine: Engine[State], args: tuple[object, ...], kwargs: dict[str, object], path: str
) -> None:
    """Arguments that JSON would change fail at enqueue, naming the argument."""

    @engine.job(name="anything")
    async def anything(state: State, *args: object, **kwargs: object) -> None:
        pass

    with pytest.raises(JobArgumentsError, match=rf"^job 'anything': argument {path} cannot"):
        await anything.enqueue(*args, **kwargs)
    stats = await engine.provider.stats()
    assert sum(s.ready + s.scheduled for s in stats) == 0


async def test_job_reads_its_context(engine: Engine[State]) -> None:
    """A running job sees its id, name, queue, attempt and times."""

    @engine.job(name="introspect", queue="reports")
    async def introspect(state: State) -> None:
        state.record(current_job())

    engine.queues = ("reports",)
    before = datetime.now(UTC)
    job_id = await introspect.enqueue()
    await engine.start()
    await wait_done(engine.state)
    context = engine.state.seen[0]
    assert isinstance(context, JobContext)
    assert context.job_id == job_id
    assert context.name == "introspect"
    assert context.queue == "reports"
    assert context.attempt == 1
    assert context.enqueued_at >= before
    assert context.due_at == context.enqueued_at
    assert context.schedule is None


async def test_current_job_outside_job_raises() -> None:
    """current_job() outside a job is a LookupError, not a silent None."""
    with pytest.raises(LookupError, match=r"^current_job\(\) was called outside"):
        current_job()


async def test_worker_serves_only_its_queues(engine: Engine[State]) -> None:
    """A worker claims from the queues it serves and leaves the others."""
    engine.queues = ("a", "b")
    engine.state.expected = 2

    @engine.job(name="tag")
    async def tag(state: State, value: str) -> None:
        state.record(value)

    await tag.options(queue="a").enqueue("a")
    await tag.options(queue="b").enqueue("b")
    await tag.options(queue="c").enqueue("c")
    await engine.start()
    await wait_done(engine.state)
    assert sorted(engine.state.seen) == ["a", "b"]
    stats = {s.queue: s for s in await engine.provider.stats()}
    assert stats["c"].ready == 1


async def test_failing_job_does_not_stop_engine(engine: Engine[State]) -> None:
    """A job that raises is logged with its id and the engine keeps running."""

    @engine.job(name="boom")
    async def boom(state: State) -> None:
        raise ValueError("broken input")

    @engine.job(name="after")
    async def after(state: State) -> None:
        state.record("after")

    await engine.start()
    with capture_logs() as logs:
        failing_id = await boom.enqueue()
        await after.enqueue()
        await wait_done(engine.state)
    failed = [e for e in logs if e["event"] == "job.failed"]
    assert len(failed) == 1
    assert failed[0]["job_id"] == failing_id
    assert failed[0]["error"] == "ValueError: broken input"
    dead = await engine.provider.dead_jobs()
    assert [job.job_id for job in dead] == [failing_id]
    stats = engine.statistics()
    assert stats is not None
    assert stats.failed == 1


async def test_timeout_kills_slow_job(engine: Engine[State]) -> None:
    """A job past its timeout fails with JobTimeoutError and is kept as dead."""

    @engine.job(name="slow", timeout=0.05)
    async def slow(state: State) -> None:
        await asyncio.sleep(WAIT_S * 2)

    await engine.start()
    with capture_logs() as logs:
        job_id = await slow.enqueue()
        for _ in range(200):
            if await engine.provider.dead_jobs():
                break
            await asyncio.sleep(0.01)
    dead = await engine.provider.dead_jobs()
    assert [job.job_id for job in dead] == [job_id]
    assert dead[0].error is not None
    assert re.match(r"^JobTimeoutError: job 'slow' ran longer", dead[0].error)
    assert any(e["event"] == "job.dead" for e in logs)


async def test_retry_request_runs_again_then_dies(engine: Engine[State]) -> None:
    """RetryJob runs the job again with the attempt raised, and dead after the max."""
    engine.state.expected = 3

    @engine.job(name="again", max_attempts=3)
    async def again(state: State) -> None:
        state.record(current_job().attempt)
        raise RetryJob(delay=0)

    await engine.start()
    with capture_logs() as logs:
        job_id = await again.enqueue()
        await wait_done(engine.state)
        for _ in range(200):
            if await engine.provider.dead_jobs():
                break
            await asyncio.sleep(0.01)
    assert engine.state.seen == [1, 2, 3]
    dead = await engine.provider.dead_jobs()
    assert [job.job_id for job in dead] == [job_id]
    assert [e["event"] for e in logs if e["event"].startswith("job.")].count(
        "job.retry_scheduled"
    ) == 2


async def test_retry_policy_retries_listed_errors(engine: Engine[State]) -> None:
    """A job with a retry policy is retried on the listed errors until it succeeds."""
    engine.state.expected = 3
    policy = RetryPolicy(max_attempts=5, backoff=FixedBackoff(0.01), retry_on=(ConnectionError,))

    @engine.job(name="flaky", retry=policy)
    async def flaky(state: State) -> None:
        state.record(current_job().attempt)
        if current_job().attempt < 3:
            raise ConnectionError("try later")

    await engine.start()
    await flaky.enqueue()
    await wait_done(engine.state)
    assert engine.state.seen == [1, 2, 3]
    assert await engine.provider.dead_jobs() == []


async def test_retry_policy_skips_other_errors(engine: Engine[State]) -> None:
    """An error the policy does not list ends the job after one attempt."""
    policy = RetryPolicy(max_attempts=5, backoff=FixedBackoff(0.01), retry_on=(ConnectionError,))

    @engine.job(name="strict", retry=policy)
    async def strict(state: State) -> None:
        state.record(current_job().attempt)
        raise KeyError("missing")

    await engine.start()
    await strict.enqueue()
    await wait_done(engine.state)
    for _ in range(100):
        if await engine.provider.dead_jobs():
            break
        await asyncio.sleep(0.01)
    assert engine.state.seen == [1]
    assert len(await engine.provider.dead_jobs()) == 1


async def test_delayed_job_waits_until_due(engine: Engine[State]) -> None:
    """A delayed job is scheduled, not ready, until its time comes."""

    @engine.job(name="later")
    async def later(state: State) -> None:
        state.record("later")

    await engine.start()
    await later.options(delay=timedelta(seconds=0.2)).enqueue()
    stats = await engine.provider.stats()
    assert stats[0].scheduled == 1
    assert stats[0].ready == 0
    await wait_done(engine.state)
    assert engine.state.seen == ["later"]


async def test_enqueue_wakes_idle_worker() -> None:
    """An idle worker starts a new job on enqueue, without waiting for a poll."""
    engine = Engine(State(), MemoryQueue())

    @engine.job(name="quick")
    async def quick(state: State) -> None:
        state.record("quick")

    async with engine:
        worker = engine._worker
        assert worker is not None
        worker._poll_interval_s = 3600.0
        await asyncio.sleep(0.01)  # let the manager reach its wait
        await quick.enqueue()
        await wait_done(engine.state)
    assert engine.state.seen == ["quick"]


async def test_unique_key_deduplicates_waiting_job(engine: Engine[State]) -> None:
    """A unique key already waiting returns the same id and adds nothing."""

    @engine.job(name="once")
    async def once(state: State) -> None:
        state.record("once")

    first = await once.options(unique_key="k").enqueue()
    second = await once.options(unique_key="k").enqueue()
    assert first == second
    stats = await engine.provider.stats()
    assert stats[0].ready == 1


async def test_graceful_stop_lets_jobs_finish() -> None:
    """Stop waits for running jobs inside the grace period."""
    engine = Engine(State(), MemoryQueue(), shutdown_grace_s=WAIT_S)
    started = asyncio.Event()

    @engine.job(name="short")
    async def short(state: State) -> None:
        started.set()
        await asyncio.sleep(0.05)
        state.record("finished")

    await engine.start()
    await short.enqueue()
    await asyncio.wait_for(started.wait(), WAIT_S)
    await engine.stop()
    assert engine.state.seen == ["finished"]
    assert engine.status is EngineStatus.STOPPED


async def test_stop_cancels_jobs_past_grace() -> None:
    """Jobs still running after the grace period are cancelled and logged by id."""
    engine = Engine(State(), MemoryQueue(), shutdown_grace_s=0.05)
    started = asyncio.Event()

    @engine.job(name="endless")
    async def endless(state: State) -> None:
        started.set()
        await asyncio.sleep(3600)

    await engine.start()
    job_id = await endless.enqueue()
    await asyncio.wait_for(started.wait(), WAIT_S)
    with capture_logs() as logs:
        await engine.stop()
    cancelling = [e for e in logs if e["event"] == "worker.cancelling_jobs"]
    assert cancelling[0]["job_ids"] == [job_id]
    cancelled = [e for e in logs if e["event"] == "job.cancelled"]
    assert cancelled[0]["job_id"] == job_id
    dead = await engine.provider.dead_jobs()
    assert [job.job_id for job in dead] == [job_id]


async def test_request_stop_twice_forces() -> None:
    """A second stop request skips the rest of the grace period."""
    engine = Engine(State(), MemoryQueue(), shutdown_grace_s=3600)
    started = asyncio.Event()

    @engine.job(name="endless")
    async def endless(state: State) -> None:
        started.set()
        await asyncio.sleep(3600)

    await engine.start()
    await endless.enqueue()
    await asyncio.wait_for(started.wait(), WAIT_S)
    engine.request_stop()
    await asyncio.sleep(0.01)
    assert engine.status is EngineStatus.STOPPING
    engine.request_stop()
    await asyncio.wait_for(engine.wait_stopped(), WAIT_S)
    assert engine.status is EngineStatus.STOPPED


async def test_claimed_job_never_started_goes_back() -> None:
    """A job released unstarted at shutdown is ready again, not lost."""
    queue = MemoryQueue()
    records = await queue.claim(["default"], 10, worker_id="w")
    assert records == []
    engine = Engine(State(), queue)

    @engine.job(name="noop")
    async def noop(state: State) -> None:
        pass

    await noop.enqueue()
    claimed = await queue.claim(["default"], 10, worker_id="w")
    await queue.finish(claimed[0], JobResult(Outcome.RELEASED, datetime.now(UTC)))
    again = await queue.claim(["default"], 10, worker_id="w")
    assert [job.job_id for job in again] == [claimed[0].job_id]
    assert again[0].attempt == 1


async def test_start_twice_is_state_error(engine: Engine[State]) -> None:
    """Starting a running engine raises EngineStateError."""
    await engine.start()
    with pytest.raises(EngineStateError, match=r"^start\(\) needs a new engine"):
        await engine.start()


async def test_duplicate_job_name_rejected(engine: Engine[State]) -> None:
    """Two different functions cannot share a job name."""

    @engine.job(name="same")
    async def first(state: State) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"^a job named 'same' is already registered"):

        @engine.job(name="same")
        async def second(state: State) -> None:
            pass


async def test_sync_function_rejected(engine: Engine[State]) -> None:
    """Registering a plain def is a TypeError naming the function."""

    def not_async(state: State) -> None:
        pass

    with pytest.raises(TypeError, match=r"must be an async function$"):
        engine.job(name="sync")(not_async)  # type: ignore[arg-type]


async def test_bad_engine_settings_rejected() -> None:
    """Invalid queues and concurrency fail at construction, naming the parameter."""
    with pytest.raises(ValueError, match=r"^concurrency must be a positive int"):
        Engine(State(), concurrency=0)
    with pytest.raises(TypeError, match=r"^queues must be a sequence of names"):
        Engine(State(), queues="default")
    with pytest.raises(ValueError, match=r"^invalid queue name"):
        Engine(State(), queues=["bad\nname"])


async def test_concurrency_limit_caps_running_jobs() -> None:
    """With a per-job limit of one, jobs of that name never overlap, and permits return."""
    limit = ConcurrencyLimit(per_job={"serial": 1})
    engine = Engine(State(expected=6), compose(MemoryQueue(), limit), concurrency=4)
    running = 0
    peak = 0

    @engine.job(name="serial")
    async def serial(state: State, fail: bool) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        state.record(fail)
        if fail:
            raise RuntimeError("fails but gives its permit back")

    async with engine:
        for index in range(6):
            await serial.enqueue(index % 2 == 0)
        await wait_done(engine.state)
    assert peak == 1
    assert limit.statistics().in_use == 0
    assert limit.statistics().held == 0


async def test_enqueue_many_one_call(engine: Engine[State]) -> None:
    """enqueue_many stores a batch and returns one id per job."""
    engine.state.expected = 3

    @engine.job(name="item")
    async def item(state: State, number: int) -> None:
        state.record(number)

    ids = await engine.enqueue_many([item.message(n) for n in range(3)])
    assert len(set(ids)) == 3
    await engine.start()
    await wait_done(engine.state)
    assert sorted(engine.state.seen) == [0, 1, 2]  # type: ignore[type-var]


async def test_priority_orders_claims() -> None:
    """Higher priority is claimed first, then the older job."""
    queue = MemoryQueue()
    engine = Engine(State(), queue)

    @engine.job(name="p")
    async def p(state: State, label: str) -> None:
        pass

    await p.enqueue("low-old")
    await p.options(priority=5).enqueue("high")
    await p.enqueue("low-new")
    claimed = await queue.claim(["default"], 3, worker_id="w")
    assert [job.args[0] for job in claimed] == ["high", "low-old", "low-new"]


class FlakyFinish(Middleware):
    """Fails the first ``failures`` finish calls as if the backend were unreachable."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.finished: list[str] = []

    async def finish(self, job: JobRecord, result: JobResult) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ProviderUnavailableError("connection lost", provider="memory")
        self.finished.append(job.job_id)
        await self.inner.finish(job, result)


async def test_result_write_retried_when_unavailable() -> None:
    """A result the backend could not take is written again, not dropped."""
    flaky = FlakyFinish(failures=2)
    engine = Engine(State(), compose(MemoryQueue(), flaky))

    @engine.job(name="noop")
    async def noop(state: State) -> None:
        state.record("ran")

    with capture_logs() as logs:
        async with engine:
            job_id = await noop.enqueue()
            for _ in range(500):
                if flaky.finished:
                    break
                await asyncio.sleep(0.01)
    assert flaky.finished == [job_id]
    assert engine.state.seen == ["ran"]
    retries = [e for e in logs if e["event"] == "job.finish_retrying"]
    assert len(retries) == 2
    assert not [e for e in logs if e["event"] == "job.finish_failed"]
