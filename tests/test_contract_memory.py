"""The provider contract suite on the in-memory queue, and the other obsjobs.testing helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import obsjobs.testing
from obsjobs import Engine, EngineStatus, NewJob, QueueProvider
from obsjobs.testing import ManualClock, MemoryQueue, ProviderContract, run_engine_until

WAIT_S = 5.0
"""A liveness bound for awaiting an event: generous, never a timing assertion."""


class TestMemoryQueueContract(ProviderContract):
    """The contract suite on :class:`MemoryQueue`, driven by a manual clock."""

    durable = False
    clock: ManualClock

    @pytest.fixture
    async def provider(self) -> AsyncIterator[QueueProvider]:
        self.clock = ManualClock(datetime.now(UTC))
        queue = MemoryQueue(clock=lambda: self.clock.now().timestamp())
        await queue.open()
        yield queue
        await queue.close()

    def clock_now(self) -> datetime:
        return self.clock.now()

    async def advance_clock(self, seconds: float) -> None:
        await self.clock.advance(seconds)


# Claim order as a property ------------------------------------------------------------

_job_specs = st.lists(
    st.tuples(
        st.integers(min_value=-2, max_value=2),  # priority
        st.none() | st.integers(min_value=0, max_value=4),  # delay in seconds
        st.integers(min_value=0, max_value=2),  # seconds the clock moves before enqueue
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(specs=_job_specs)
def test_memory_claim_order_property(specs: list[tuple[int, int | None, int]]) -> None:
    """Claims follow priority, then due time, then enqueue order, for any job mix."""
    now = [1_700_000_000.0]
    queue = MemoryQueue(clock=lambda: now[0])
    due_keys: list[tuple[int, float, int]] = []
    for index, (priority, delay, step) in enumerate(specs):
        now[0] += step
        run_at = None if delay is None else datetime.fromtimestamp(now[0] + delay, UTC)
        job = NewJob(name="job", queue="q", args=[index], run_at=run_at, priority=priority)
        asyncio.run(queue.enqueue([job]))
        due_keys.append((-priority, now[0] + (delay or 0), index))
    now[0] += 10

    records = asyncio.run(queue.claim(["q"], len(specs), worker_id="w"))

    assert [record.args[0] for record in records] == [key[2] for key in sorted(due_keys)]


# run_engine_until ----------------------------------------------------------------------


@dataclass
class State:
    ran: list[int] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


def make_engine() -> tuple[Engine[State], MemoryQueue]:
    queue = MemoryQueue()
    engine = Engine(State(), queue, shutdown_grace_s=1.0)

    @engine.job(name="remember")
    async def remember(state: State, value: int) -> None:
        state.ran.append(value)
        state.done.set()

    return engine, queue


async def test_run_engine_until_event_set() -> None:
    """The helper starts the engine, returns once the event is set, and stops it."""
    engine, queue = make_engine()
    await queue.enqueue([NewJob(name="remember", queue="default", args=[1])])

    await run_engine_until(engine, engine.state.done, WAIT_S)

    assert engine.state.ran == [1]
    assert engine.status is EngineStatus.STOPPED


async def test_run_engine_until_predicate_met() -> None:
    """A predicate condition is polled until it returns true."""
    engine, queue = make_engine()
    await queue.enqueue([NewJob(name="remember", queue="default", args=[i]) for i in range(3)])

    await run_engine_until(engine, lambda: len(engine.state.ran) == 3, WAIT_S)

    assert sorted(engine.state.ran) == [0, 1, 2]
    assert engine.status is EngineStatus.STOPPED


async def test_run_engine_until_running_engine() -> None:
    """An engine that runs already is not started again, and is stopped at the end."""
    engine, queue = make_engine()
    await engine.start()
    await queue.enqueue([NewJob(name="remember", queue="default", args=[5])])

    await run_engine_until(engine, engine.state.done, WAIT_S)

    assert engine.state.ran == [5]
    assert engine.status is EngineStatus.STOPPED


async def test_run_engine_until_times_out() -> None:
    """A condition that is never met raises TimeoutError after stopping the engine."""
    engine, _ = make_engine()

    with pytest.raises(TimeoutError, match=r"^condition not met within 0\.05s"):
        await run_engine_until(engine, asyncio.Event(), 0.05)

    assert engine.status is EngineStatus.STOPPED


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, float("nan")])
async def test_run_engine_until_rejects_timeout(timeout_s: float) -> None:
    """A timeout that is not positive is rejected before the engine starts."""
    engine, _ = make_engine()

    with pytest.raises(ValueError, match=r"^timeout_s must be positive seconds"):
        await run_engine_until(engine, asyncio.Event(), timeout_s)

    assert engine.status is EngineStatus.CREATED


def test_testing_exports_public_names() -> None:
    """obsjobs.testing exports the suite, the helper and the two re-exports."""
    assert sorted(obsjobs.testing.__all__) == [
        "ManualClock",
        "MemoryQueue",
        "ProviderContract",
        "run_engine_until",
    ]
    assert obsjobs.testing.MemoryQueue is obsjobs.MemoryQueue
    assert obsjobs.testing.ManualClock is obsjobs.ManualClock


def test_manual_clock_drives_memory_queue() -> None:
    """A MemoryQueue fed by a ManualClock hands out a delayed job once the clock passes it."""

    async def scenario() -> tuple[int, int]:
        clock = ManualClock(datetime(2026, 3, 8, tzinfo=UTC))
        queue = MemoryQueue(clock=lambda: clock.now().timestamp())
        run_at = clock.now() + timedelta(minutes=5)
        await queue.enqueue([NewJob(name="job", queue="q", run_at=run_at)])
        early = await queue.claim(["q"], 10, worker_id="w")
        await clock.advance(timedelta(minutes=5))
        later = await queue.claim(["q"], 10, worker_id="w")
        return len(early), len(later)

    assert asyncio.run(scenario()) == (0, 1)
