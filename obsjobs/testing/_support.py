"""Settings, helpers and the hooks shared by the provider contract tests."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import pytest

from obsjobs.context import current_job
from obsjobs.engine import Engine
from obsjobs.protocols import (
    JobRecord,
    JobResult,
    NewJob,
    Outcome,
    QueueProvider,
    QueueStats,
    RescuedJob,
)

T = TypeVar("T")

CLOCK_TOLERANCE = timedelta(seconds=1)
"""How far a stored time may be from the test's clock, since a provider may read the
time on its own server."""
TIME_PRECISION = timedelta(milliseconds=1)
"""How far a stored time may be from the value given, since storage may round it."""
FAR_FUTURE = timedelta(hours=1)
ENGINE_COUNT = 8
ENGINE_JOBS = 1_000
ENGINE_CONCURRENCY = 8
RESCUE_STEPS = 12
"""Quarter-lease steps the lease tests wait for a rescue: three leases in all."""
WORKER = "obsjobs-contract"
PLAIN_JOB = "obsjobs.contract.plain"
RECORD_JOB = "obsjobs.contract.record_index"
HANG_JOB = "obsjobs.contract.hang_first_run"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def fresh_name(kind: str) -> str:
    # Durable storage outlives a test, so every test uses its own queues, keys and
    # schedules and never claims another test's jobs.
    return f"obsjobs-contract-{kind}-{secrets.token_hex(6)}"


def new_job(queue: str, **fields: Any) -> NewJob:
    return NewJob(name=PLAIN_JOB, queue=queue, **fields)


def job_result(outcome: Outcome, **fields: Any) -> JobResult:
    return JobResult(outcome, started_at=datetime.now(UTC), **fields)


def ids_of(records: Sequence[JobRecord]) -> list[str]:
    return [record.job_id for record in records]


async def stats_for(provider: QueueProvider, queue: str) -> QueueStats:
    """Return the stats of ``queue``, or zeros when the provider omits the empty queue."""
    for stats in await provider.stats():
        if stats.queue == queue:
            return stats
    return QueueStats(queue)


async def bury(provider: QueueProvider, queue: str, count: int) -> list[str]:
    """Enqueue ``count`` jobs, finish each as dead and return their ids."""
    await provider.enqueue([new_job(queue, args=[index]) for index in range(count)])
    records = await provider.claim([queue], count, worker_id=WORKER)
    for record in records:
        await provider.finish(record, job_result(Outcome.DEAD, error="ValueError: contract"))
    return ids_of(records)


@dataclass
class PerformLog:
    """Engine test state: how often each job index ran."""

    expected: int
    counts: Counter[int] = field(default_factory=Counter)
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def record_index(state: PerformLog, index: int) -> None:
    state.counts[index] += 1
    if len(state.counts) >= state.expected:
        state.done.set()


@dataclass
class ShutdownLog:
    """Engine test state: the attempt number of every run of the hanging job."""

    attempts: list[int] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    rerun: asyncio.Event = field(default_factory=asyncio.Event)


async def hang_first_run(state: ShutdownLog) -> None:
    state.attempts.append(current_job().attempt)
    if len(state.attempts) == 1:
        state.started.set()
        # Blocks until engine shutdown cancels it.
        await asyncio.Event().wait()
    state.rerun.set()


class ContractBase:
    """Settings, hooks and helpers that every part of the contract suite uses."""

    pytestmark = pytest.mark.asyncio

    durable: ClassVar[bool] = False
    lease_s_for_tests: ClassVar[float] = 0.5
    delay_s: ClassVar[float] = 0.25
    liveness_s: ClassVar[float] = 20.0

    @pytest.fixture
    def provider(self) -> QueueProvider:
        """Provide the provider under test; this base version raises until overridden."""
        raise NotImplementedError(
            "define a `provider` fixture in your ProviderContract subclass that yields "
            "an opened provider and closes it afterwards"
        )

    async def sibling(self, provider: QueueProvider) -> QueueProvider:
        """Return a provider on the same storage as ``provider``, not yet opened.

        Each engine in the engine tests gets its own sibling, which it opens and
        closes. The wake-up test waits on a sibling that the suite opens and closes.
        The default returns ``provider`` itself, which suits only a provider whose
        ``close`` leaves it usable (:class:`MemoryQueue`). A provider with a connection
        pool must return a new instance.
        """
        return provider

    def clock_now(self) -> datetime:
        """Return the provider's current time, read from the system clock unless overridden."""
        return datetime.now(UTC)

    async def advance_clock(self, seconds: float) -> None:
        """Let ``seconds`` pass on the provider's clock. The default waits in real time."""
        target = self.clock_now() + timedelta(seconds=seconds)
        # asyncio sleeps on the monotonic clock, so the wall clock that a provider reads
        # is checked again after each sleep.
        while (left := (target - self.clock_now()).total_seconds()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)

    # Helpers ------------------------------------------------------------------------

    async def _within(self, awaitable: Awaitable[T], expected: str) -> T:
        try:
            return await asyncio.wait_for(awaitable, self.liveness_s)
        except TimeoutError:
            pytest.fail(f"{expected} did not happen within liveness_s = {self.liveness_s:g}s")

    def _require_before(self, due: datetime, step: str) -> None:
        # A check that a job is not claimable yet means nothing once the job is due,
        # which a slow backend on the real clock can cause.
        if self.clock_now() >= due:
            pytest.fail(
                f"{step} returned only after the job was due, so the test cannot check "
                f"that the job waited. Raise delay_s (now {self.delay_s:g}s)."
            )

    @asynccontextmanager
    async def _opened_sibling(self, provider: QueueProvider) -> AsyncIterator[QueueProvider]:
        sibling = await self.sibling(provider)
        if sibling is provider:
            yield provider
            return
        await sibling.open()
        try:
            yield sibling
        finally:
            await sibling.close()

    async def _engine(
        self, provider: QueueProvider, state: Any, queue: str, function: Any, name: str
    ) -> Engine[Any]:
        sibling = await self.sibling(provider)
        engine: Engine[Any] = Engine(
            state,
            sibling,
            queues=[queue],
            concurrency=ENGINE_CONCURRENCY,
            shutdown_grace_s=self.liveness_s,
        )
        engine.job(name=name, queue=queue)(function)
        return engine

    def _lease_s(self, provider: QueueProvider) -> float:
        if not self.durable:
            pytest.skip("at-most-once provider: no leases, a claimed job is never handed out again")
        lease_s = provider.lease_s
        if lease_s is None:
            pytest.skip("provider without leases: a claimed job stays claimed until finish")
        if lease_s > self.lease_s_for_tests:
            pytest.fail(
                f"provider.lease_s is {lease_s:g}s, but the fixture must build the provider "
                f"with lease_s=self.lease_s_for_tests ({self.lease_s_for_tests:g}s)"
            )
        return lease_s

    async def _rescued(self, provider: QueueProvider, job_id: str, lease_s: float) -> RescuedJob:
        for _ in range(RESCUE_STEPS):
            await self.advance_clock(lease_s / 4)
            for rescued in await provider.rescue():
                if rescued.job_id == job_id:
                    return rescued
        pytest.fail(f"rescue() did not return job {job_id} within three leases of {lease_s:g}s")
