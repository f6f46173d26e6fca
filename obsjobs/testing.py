"""Test support for obsjobs users and provider authors.

- :class:`ProviderContract`: the provider contract suite, a pytest class to subclass.
- :class:`MemoryQueue` and :class:`ManualClock`, re-exported for users' own tests.
- :func:`run_engine_until`: start an engine, wait for a condition, stop the engine.

This module imports pytest when it is imported, so import it only from test code.
pytest and pytest-asyncio come with the ``dev`` extra. The suite's tests are
``async def`` methods and carry the asyncio mark. Under pytest-asyncio's strict mode,
decorate the ``provider`` fixture with ``pytest_asyncio.fixture``; under
``asyncio_mode = "auto"``, ``pytest.fixture`` is enough.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import pytest

from obsjobs.clock import ManualClock
from obsjobs.context import current_job
from obsjobs.engine import Engine, EngineStatus
from obsjobs.errors import LeaseLostError
from obsjobs.protocols import (
    JobRecord,
    JobResult,
    NewJob,
    Outcome,
    QueueProvider,
    QueueStats,
    RescuedJob,
)
from obsjobs.providers.memory import MemoryQueue

__all__ = ["ManualClock", "MemoryQueue", "ProviderContract", "run_engine_until"]

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


async def run_engine_until(
    engine: Engine[Any],
    condition: asyncio.Event | Callable[[], bool],
    timeout_s: float,
    *,
    poll_interval_s: float = 0.01,
) -> None:
    """Start ``engine`` unless it runs already, wait for ``condition``, then stop it.

    ``condition`` is an event to wait for, or a predicate checked every
    ``poll_interval_s``. The engine is stopped on every path, with its own shutdown grace.

    Raises:
        TimeoutError: ``condition`` did not hold within ``timeout_s``; the engine has
            been stopped when it is raised.
        ValueError: ``timeout_s`` or ``poll_interval_s`` is not positive.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive seconds, got {timeout_s!r}")
    if not poll_interval_s > 0:
        raise ValueError(f"poll_interval_s must be positive seconds, got {poll_interval_s!r}")
    if engine.status is EngineStatus.CREATED:
        await engine.start()
    try:
        await asyncio.wait_for(_hold(condition, poll_interval_s), timeout_s)
    except TimeoutError as error:
        raise TimeoutError(
            f"condition not met within {timeout_s:g}s, and the engine was stopped"
        ) from error
    finally:
        await engine.stop()


async def _hold(condition: asyncio.Event | Callable[[], bool], poll_interval_s: float) -> None:
    if isinstance(condition, asyncio.Event):
        await condition.wait()
        return
    # A plain predicate gives nothing to await, so it is polled.
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(poll_interval_s)


def _fresh_name(kind: str) -> str:
    # Durable storage outlives a test, so every test uses its own queues, keys and
    # schedules and never claims another test's jobs.
    return f"obsjobs-contract-{kind}-{secrets.token_hex(6)}"


def _job(queue: str, **fields: Any) -> NewJob:
    return NewJob(name=PLAIN_JOB, queue=queue, **fields)


def _result(outcome: Outcome, **fields: Any) -> JobResult:
    return JobResult(outcome, started_at=datetime.now(UTC), **fields)


def _ids(records: Sequence[JobRecord]) -> list[str]:
    return [record.job_id for record in records]


async def _stats_for(provider: QueueProvider, queue: str) -> QueueStats:
    """Return the stats of ``queue``, or zeros when the provider omits the empty queue."""
    for stats in await provider.stats():
        if stats.queue == queue:
            return stats
    return QueueStats(queue)


async def _bury(provider: QueueProvider, queue: str, count: int) -> list[str]:
    """Enqueue ``count`` jobs, finish each as dead and return their ids."""
    await provider.enqueue([_job(queue, args=[index]) for index in range(count)])
    records = await provider.claim([queue], count, worker_id=WORKER)
    for record in records:
        await provider.finish(record, _result(Outcome.DEAD, error="ValueError: contract"))
    return _ids(records)


@dataclass
class _PerformLog:
    """Engine test state: how often each job index ran."""

    expected: int
    counts: Counter[int] = field(default_factory=Counter)
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def _record_index(state: _PerformLog, index: int) -> None:
    state.counts[index] += 1
    if len(state.counts) >= state.expected:
        state.done.set()


@dataclass
class _ShutdownLog:
    """Engine test state: the attempt number of every run of the hanging job."""

    attempts: list[int] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    rerun: asyncio.Event = field(default_factory=asyncio.Event)


async def _hang_first_run(state: _ShutdownLog) -> None:
    state.attempts.append(current_job().attempt)
    if len(state.attempts) == 1:
        state.started.set()
        # Blocks until engine shutdown cancels it.
        await asyncio.Event().wait()
    state.rerun.set()


class ProviderContract:
    """The behaviour every :class:`obsjobs.QueueProvider` must have, as pytest tests.

    Subclass it in a test module (the class name must start with ``Test``) and define
    a ``provider`` fixture that yields an opened provider and closes it afterwards::

        class TestMyQueue(ProviderContract):
            durable = True
            lease_s_for_tests = 0.5

            @pytest.fixture
            async def provider(self) -> AsyncIterator[QueueProvider]:
                queue = MyQueue(DSN, lease_s=self.lease_s_for_tests)
                await queue.open()
                yield queue
                await queue.close()

            async def sibling(self, provider: QueueProvider) -> QueueProvider:
                return MyQueue(DSN, lease_s=self.lease_s_for_tests)

    Every test works in queues, unique keys and schedules with fresh random names, so
    the fixture need not empty the storage between tests. Tests for guarantees the
    provider does not make are skipped with a reason that names the guarantee.

    Hooks a subclass may set or override:

    - ``durable``: true for an at-least-once provider. It must equal ``provider.durable``.
    - ``lease_s_for_tests``: the lease, in seconds, that the fixture must give a provider
      with leases. The lease tests wait up to three leases in real time, so keep it
      short, but well above a round trip to the backend (0.5 s by default).
    - ``delay_s``: how far ahead some tests schedule a job that they later see fall
      due. On the real clock such a test waits this long, and it fails with a request
      to raise ``delay_s`` when an enqueue or claim alone takes longer.
    - ``liveness_s``: the longest wait for something that must happen promptly (a
      wake-up, jobs run by engines). It bounds a hang and is never a timing measurement.
    - :meth:`sibling`: a provider on the same storage for one more engine.
    - :meth:`clock_now` and :meth:`advance_clock`: the provider's clock, for providers
      that can be driven by a test clock (as :class:`MemoryQueue` can).
    """

    pytestmark = pytest.mark.asyncio

    durable: ClassVar[bool] = False
    lease_s_for_tests: ClassVar[float] = 0.5
    delay_s: ClassVar[float] = 0.25
    liveness_s: ClassVar[float] = 20.0

    @pytest.fixture
    def provider(self) -> QueueProvider:
        """The provider under test. A subclass must override this fixture."""
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

    # Identity, enqueue and claim ----------------------------------------------------

    async def test_provider_reports_declared_durability(self, provider: QueueProvider) -> None:
        """The provider's durable flag equals the subclass's, and it has a name."""
        assert provider.durable is self.durable, "set `durable` on the subclass to match"
        assert isinstance(provider.name, str)
        assert provider.name != ""

    async def test_claim_returns_enqueued_fields(self, provider: QueueProvider) -> None:
        """A claimed record carries the job's fields unchanged, with attempt 1 and UTC times."""
        queue = _fresh_name("queue")
        job = _job(
            queue,
            args=[1, "two", [3.5, None], {"k": True}],
            kwargs={"text": 'é ☃ "quoted"\n', "n": -1},
            priority=3,
            max_attempts=4,
            headers={"traceparent": TRACEPARENT},
        )
        before = self.clock_now()
        [created] = await provider.enqueue([job])
        after = self.clock_now()

        [record] = await provider.claim([queue], 1, worker_id=WORKER)

        assert created.created
        assert record.job_id == created.job_id
        assert (record.name, record.queue) == (PLAIN_JOB, queue)
        assert record.args == job.args
        assert record.kwargs == job.kwargs
        assert dict(record.headers) == job.headers
        assert (record.priority, record.max_attempts, record.attempt) == (3, 4, 1)
        assert record.enqueued_at.utcoffset() == timedelta(0)
        assert before - CLOCK_TOLERANCE <= record.enqueued_at <= after + CLOCK_TOLERANCE
        assert record.available_at == record.enqueued_at
        await provider.finish(record, _result(Outcome.SUCCEEDED))

    async def test_bulk_enqueue_results_in_order(self, provider: QueueProvider) -> None:
        """A batch returns one created result per job, in the batch's order."""
        queue = _fresh_name("queue")

        results = await provider.enqueue([_job(queue, args=[index]) for index in range(5)])
        records = await provider.claim([queue], 10, worker_id=WORKER)

        assert len(results) == 5
        assert all(result.created for result in results)
        assert len({result.job_id for result in results}) == 5
        assert [record.args for record in records] == [[index] for index in range(5)]
        assert _ids(records) == [result.job_id for result in results]
        assert await provider.enqueue([]) == []

    async def test_claim_orders_priority_due_enqueue(self, provider: QueueProvider) -> None:
        """Claims go by priority, then due time, then enqueue order."""
        queue = _fresh_name("queue")
        now = self.clock_now()
        step = timedelta(seconds=self.delay_s)
        # Jobs without a delay go first, so each is due before every delayed job.
        plain = [_job(queue, kwargs={"label": f"plain-{index}"}) for index in range(3)]
        await provider.enqueue([*plain, _job(queue, kwargs={"label": "low"}, priority=-1)])
        await provider.enqueue(
            [
                _job(queue, kwargs={"label": "due-late"}, run_at=now + 2 * step),
                _job(queue, kwargs={"label": "due-early"}, run_at=now + step),
                _job(queue, kwargs={"label": "urgent"}, run_at=now + 2 * step, priority=5),
            ]
        )
        self._require_before(now + step, "enqueue")
        await self.advance_clock(2 * self.delay_s)

        records = await provider.claim([queue], 10, worker_id=WORKER)

        labels = [record.kwargs["label"] for record in records]
        expected = ["urgent", "plain-0", "plain-1", "plain-2", "due-early", "due-late", "low"]
        assert labels == expected

    async def test_claim_respects_limit(self, provider: QueueProvider) -> None:
        """A claim returns at most ``limit`` jobs, and each job only once."""
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue, args=[index]) for index in range(5)])

        first = await provider.claim([queue], 2, worker_id=WORKER)
        second = await provider.claim([queue], 10, worker_id=WORKER)
        third = await provider.claim([queue], 10, worker_id=WORKER)

        assert len(first) == 2
        assert len(second) == 3
        assert set(_ids(first)).isdisjoint(_ids(second))
        assert third == []

    async def test_claim_keeps_queues_isolated(self, provider: QueueProvider) -> None:
        """A claim returns jobs only from the queues it names."""
        mail, images = _fresh_name("mail"), _fresh_name("images")
        await provider.enqueue([_job(mail), _job(images), _job(mail)])

        from_mail = await provider.claim([mail], 10, worker_id=WORKER)
        from_images = await provider.claim([images], 10, worker_id=WORKER)
        await provider.enqueue([_job(mail), _job(images)])
        from_both = await provider.claim([mail, images], 10, worker_id=WORKER)

        assert [record.queue for record in from_mail] == [mail, mail]
        assert [record.queue for record in from_images] == [images]
        assert sorted(record.queue for record in from_both) == sorted([mail, images])

    async def test_delayed_job_waits_until_due(self, provider: QueueProvider) -> None:
        """A job with ``run_at`` is scheduled, not claimable, until it is due."""
        queue = _fresh_name("queue")
        due = self.clock_now() + timedelta(seconds=self.delay_s)
        near, far = await provider.enqueue(
            [_job(queue, run_at=due), _job(queue, run_at=self.clock_now() + FAR_FUTURE)]
        )

        early = await provider.claim([queue], 10, worker_id=WORKER)
        stats_early = await _stats_for(provider, queue)
        self._require_before(due, "enqueue, claim and stats")
        await self.advance_clock(self.delay_s)
        later = await provider.claim([queue], 10, worker_id=WORKER)

        assert early == []
        assert (stats_early.scheduled, stats_early.ready) == (2, 0)
        assert _ids(later) == [near.job_id]
        assert abs(later[0].available_at - due) <= TIME_PRECISION
        assert far.job_id not in _ids(later)

    # Unique keys --------------------------------------------------------------------

    async def test_unique_key_dedupes_waiting_running(self, provider: QueueProvider) -> None:
        """A duplicate of a waiting or running job returns its id and adds nothing."""
        queue, key = _fresh_name("queue"), _fresh_name("key")
        [first] = await provider.enqueue([_job(queue, unique_key=key)])

        [while_waiting] = await provider.enqueue([_job(queue, unique_key=key, args=[2])])
        ready = (await _stats_for(provider, queue)).ready
        [record] = await provider.claim([queue], 10, worker_id=WORKER)
        [while_running] = await provider.enqueue([_job(queue, unique_key=key, args=[3])])
        after_running = await _stats_for(provider, queue)

        assert (while_waiting.job_id, while_waiting.created) == (first.job_id, False)
        assert ready == 1
        assert record.args == []
        assert (while_running.job_id, while_running.created) == (first.job_id, False)
        assert (after_running.ready, after_running.running) == (0, 1)
        await provider.finish(record, _result(Outcome.SUCCEEDED))

    async def test_unique_key_holds_while_scheduled(self, provider: QueueProvider) -> None:
        """A delayed job keeps its unique key taken before it is due."""
        queue, key = _fresh_name("queue"), _fresh_name("key")
        later = self.clock_now() + FAR_FUTURE

        [first] = await provider.enqueue([_job(queue, unique_key=key, run_at=later)])
        [second] = await provider.enqueue([_job(queue, unique_key=key)])

        assert (second.job_id, second.created) == (first.job_id, False)
        assert (await _stats_for(provider, queue)).ready == 0

    async def test_unique_key_within_one_batch(self, provider: QueueProvider) -> None:
        """The second job of a batch with the same unique key is not added."""
        queue, key = _fresh_name("queue"), _fresh_name("key")

        first, second = await provider.enqueue(
            [_job(queue, unique_key=key, args=[1]), _job(queue, unique_key=key, args=[2])]
        )
        records = await provider.claim([queue], 10, worker_id=WORKER)

        assert first.created
        assert (second.job_id, second.created) == (first.job_id, False)
        assert [record.args for record in records] == [[1]]

    async def test_unique_key_free_after_finish(self, provider: QueueProvider) -> None:
        """Once its job succeeded or died, a unique key can be used again."""
        queue, key = _fresh_name("queue"), _fresh_name("key")
        for outcome in (Outcome.SUCCEEDED, Outcome.DEAD):
            [first] = await provider.enqueue([_job(queue, unique_key=key)])
            [record] = await provider.claim([queue], 10, worker_id=WORKER)
            await provider.finish(record, _result(outcome, error="contract"))

            [again] = await provider.enqueue([_job(queue, unique_key=key)])
            [record_again] = await provider.claim([queue], 10, worker_id=WORKER)
            await provider.finish(record_again, _result(Outcome.SUCCEEDED))

            assert again.created, f"key still taken after {outcome.value}"
            assert again.job_id != first.job_id

    # Finishing ----------------------------------------------------------------------

    async def test_finish_succeeded_removes_job(self, provider: QueueProvider) -> None:
        """A succeeded job is gone: not claimable, not counted, not dead."""
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue)])
        [record] = await provider.claim([queue], 1, worker_id=WORKER)

        await provider.finish(record, _result(Outcome.SUCCEEDED))

        assert await provider.claim([queue], 10, worker_id=WORKER) == []
        assert await _stats_for(provider, queue) == QueueStats(queue)
        assert await provider.dead_jobs(queue) == []

    async def test_finish_retry_reschedules_job(self, provider: QueueProvider) -> None:
        """A retried job comes back at ``retry_at`` with its attempt raised."""
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue, max_attempts=3)])
        [first] = await provider.claim([queue], 1, worker_id=WORKER)
        retry_at = self.clock_now() + timedelta(seconds=self.delay_s)

        await provider.finish(
            first,
            _result(Outcome.RETRY, error="boom", error_type="RuntimeError", retry_at=retry_at),
        )
        early = await provider.claim([queue], 10, worker_id=WORKER)
        scheduled = (await _stats_for(provider, queue)).scheduled
        self._require_before(retry_at, "finish, claim and stats")
        await self.advance_clock(self.delay_s)
        [second] = await provider.claim([queue], 10, worker_id=WORKER)

        assert early == []
        assert scheduled == 1
        assert second.job_id == first.job_id
        assert second.attempt == 2
        await provider.finish(second, _result(Outcome.SUCCEEDED))

    async def test_finish_dead_keeps_job(self, provider: QueueProvider) -> None:
        """A dead job is listed by dead_jobs with its error and counted as dead."""
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue, args=[7], kwargs={"to": "a@example.org"})])
        [record] = await provider.claim([queue], 1, worker_id=WORKER)

        await provider.finish(
            record, _result(Outcome.DEAD, error="ValueError: bad input", error_type="ValueError")
        )
        dead = await provider.dead_jobs(queue)

        assert [job.job_id for job in dead] == [record.job_id]
        assert dead[0].error == "ValueError: bad input"
        assert (dead[0].name, dead[0].queue, dead[0].attempt) == (PLAIN_JOB, queue, 1)
        assert (dead[0].args, dead[0].kwargs) == ([7], {"to": "a@example.org"})
        assert (await _stats_for(provider, queue)).dead == 1
        assert await provider.claim([queue], 10, worker_id=WORKER) == []

    async def test_requeue_revives_dead_job(self, provider: QueueProvider) -> None:
        """requeue() moves only dead jobs back to ready, with a fresh attempt count."""
        queue = _fresh_name("queue")
        [dead_id] = await _bury(provider, queue, 1)
        [waiting] = await provider.enqueue([_job(queue, priority=-1)])

        moved = await provider.requeue([dead_id, waiting.job_id])
        records = await provider.claim([queue], 10, worker_id=WORKER)

        assert moved == 1
        assert await provider.dead_jobs(queue) == []
        assert _ids(records) == [dead_id, waiting.job_id]
        assert records[0].attempt == 1

    async def test_finish_released_keeps_attempt(self, provider: QueueProvider) -> None:
        """A released job is claimable again and the attempt is not counted."""
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue)])
        [first] = await provider.claim([queue], 1, worker_id=WORKER)

        await provider.finish(first, _result(Outcome.RELEASED))
        [again] = await provider.claim([queue], 1, worker_id=WORKER)

        assert again.job_id == first.job_id
        assert again.attempt == 1

    async def test_finish_cancelled_requeues_job(self, provider: QueueProvider) -> None:
        """On a durable provider a cancelled job is put back without counting the attempt."""
        if not self.durable:
            pytest.skip("at-most-once provider: a cancelled job is not run again")
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue, max_attempts=2)])
        [first] = await provider.claim([queue], 1, worker_id=WORKER)

        await provider.finish(first, _result(Outcome.CANCELLED, error="cancelled"))
        [again] = await provider.claim([queue], 1, worker_id=WORKER)

        assert again.job_id == first.job_id
        assert again.attempt == 1

    async def test_finish_cancelled_buries_job(self, provider: QueueProvider) -> None:
        """On an at-most-once provider a cancelled job is kept as dead."""
        if self.durable:
            pytest.skip("at-least-once provider: a cancelled job is put back to run again")
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue)])
        [record] = await provider.claim([queue], 1, worker_id=WORKER)

        await provider.finish(record, _result(Outcome.CANCELLED, error="cancelled"))

        assert [job.job_id for job in await provider.dead_jobs(queue)] == [record.job_id]
        assert await provider.claim([queue], 10, worker_id=WORKER) == []

    async def test_dead_jobs_filters_and_limits(self, provider: QueueProvider) -> None:
        """dead_jobs() returns only the given queue's jobs, at most ``limit``."""
        mail, images = _fresh_name("mail"), _fresh_name("images")
        mail_ids = await _bury(provider, mail, 3)
        image_ids = await _bury(provider, images, 1)

        limited = await provider.dead_jobs(mail, limit=2)
        all_mail = await provider.dead_jobs(mail)
        all_images = await provider.dead_jobs(images)

        assert len(limited) == 2
        assert sorted(job.job_id for job in all_mail) == sorted(mail_ids)
        assert [job.job_id for job in all_images] == image_ids

    # Schedule ticks -----------------------------------------------------------------

    async def test_schedule_tick_enqueued_once(self, provider: QueueProvider) -> None:
        """A tick sent twice is added once, and the second result has an empty id."""
        queue, schedule = _fresh_name("queue"), _fresh_name("schedule")
        tick = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)
        job = _job(queue, schedule=schedule, scheduled_time=tick)

        [first] = await provider.enqueue([job])
        [second] = await provider.enqueue([job])

        assert first.created
        assert not second.created
        # The scheduler reads an empty id as "another scheduler took this tick". An id
        # would mean that the schedule's previous job is still running (an overrun).
        assert second.job_id == ""
        assert (await _stats_for(provider, queue)).ready == 1

    async def test_schedule_tick_dedup_outlives_job(self, provider: QueueProvider) -> None:
        """A tick sent again after its job succeeded is still not added."""
        queue, schedule = _fresh_name("queue"), _fresh_name("schedule")
        job = _job(queue, schedule=schedule, scheduled_time=datetime(2026, 3, 8, tzinfo=UTC))
        await provider.enqueue([job])
        [record] = await provider.claim([queue], 1, worker_id=WORKER)
        await provider.finish(record, _result(Outcome.SUCCEEDED))

        [again] = await provider.enqueue([job])

        assert not again.created
        assert await provider.claim([queue], 10, worker_id=WORKER) == []

    async def test_last_tick_returns_latest(self, provider: QueueProvider) -> None:
        """last_tick() returns the latest tick sent, whatever the sending order."""
        queue, schedule = _fresh_name("queue"), _fresh_name("schedule")
        ticks = [datetime(2026, 3, 8, hour, tzinfo=UTC) for hour in (6, 8, 7)]

        before = await provider.last_tick(schedule)
        for tick in ticks:
            await provider.enqueue([_job(queue, schedule=schedule, scheduled_time=tick)])
        latest = await provider.last_tick(schedule)

        assert before is None
        assert latest == max(ticks)

    # Stats --------------------------------------------------------------------------

    async def test_stats_count_jobs_by_state(self, provider: QueueProvider) -> None:
        """stats() counts a queue's ready, scheduled, running and dead jobs."""
        queue = _fresh_name("queue")
        later = self.clock_now() + FAR_FUTURE
        await provider.enqueue([_job(queue), _job(queue), _job(queue), _job(queue, run_at=later)])
        running, doomed = await provider.claim([queue], 2, worker_id=WORKER)

        await provider.finish(doomed, _result(Outcome.DEAD, error="contract"))
        stats = await _stats_for(provider, queue)

        assert (stats.ready, stats.scheduled, stats.running, stats.dead) == (1, 1, 1, 1)
        await provider.finish(running, _result(Outcome.SUCCEEDED))

    async def test_stats_track_oldest_ready_job(self, provider: QueueProvider) -> None:
        """oldest_ready_at is when the oldest ready job became ready, or None."""
        queue = _fresh_name("queue")
        empty = await _stats_for(provider, queue)
        before = self.clock_now()
        await provider.enqueue([_job(queue)])
        after = self.clock_now()
        await self.advance_clock(self.delay_s)
        await provider.enqueue([_job(queue)])

        both = await _stats_for(provider, queue)
        await provider.claim([queue], 1, worker_id=WORKER)
        newer = await _stats_for(provider, queue)
        await provider.claim([queue], 1, worker_id=WORKER)
        none_ready = await _stats_for(provider, queue)

        assert empty.oldest_ready_at is None
        assert both.oldest_ready_at is not None
        assert before - CLOCK_TOLERANCE <= both.oldest_ready_at <= after + CLOCK_TOLERANCE
        assert newer.oldest_ready_at is not None
        assert newer.oldest_ready_at > both.oldest_ready_at
        assert none_ready.oldest_ready_at is None

    # Waiting ------------------------------------------------------------------------

    async def test_wait_wakes_on_enqueue(self, provider: QueueProvider) -> None:
        """wait() returns soon after another provider on the storage enqueues a job."""
        queue = _fresh_name("queue")
        async with self._opened_sibling(provider) as watcher:
            waiter = asyncio.create_task(watcher.wait([queue], timeout_s=3 * self.liveness_s))
            for _ in range(20):
                await asyncio.sleep(0)  # let the waiter start waiting

            await provider.enqueue([_job(queue)])

            await self._within(waiter, "wait() returning after an enqueue")

    async def test_wait_returns_when_job_ready(self, provider: QueueProvider) -> None:
        """wait() returns at once when a job is ready already."""
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue)])

        await self._within(
            provider.wait([queue], timeout_s=3 * self.liveness_s), "wait() on a ready job"
        )

    async def test_wait_returns_after_timeout(self, provider: QueueProvider) -> None:
        """wait() on an empty queue returns after its timeout, without raising."""
        queue = _fresh_name("queue")

        await self._within(provider.wait([queue], timeout_s=0.05), "wait() timing out")

    # Leases -------------------------------------------------------------------------

    async def test_expired_lease_is_rescued(self, provider: QueueProvider) -> None:
        """A job whose lease expires is rescued and claimed again with attempt raised."""
        lease_s = self._lease_s(provider)
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue, max_attempts=3)])
        [first] = await provider.claim([queue], 1, worker_id=WORKER)

        rescued = await self._rescued(provider, first.job_id, lease_s)
        [second] = await provider.claim([queue], 1, worker_id=WORKER)

        assert not rescued.dead
        assert second.job_id == first.job_id
        assert second.attempt == 2
        await provider.finish(second, _result(Outcome.SUCCEEDED))

    async def test_stale_lease_finish_raises(self, provider: QueueProvider) -> None:
        """A worker that lost its lease cannot renew it or finish the job."""
        lease_s = self._lease_s(provider)
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue, max_attempts=3)])
        [stale] = await provider.claim([queue], 1, worker_id=WORKER)
        await self._rescued(provider, stale.job_id, lease_s)
        [current] = await provider.claim([queue], 1, worker_id=WORKER)

        lost = await provider.renew([stale])
        with pytest.raises(LeaseLostError):
            await provider.finish(stale, _result(Outcome.SUCCEEDED))
        await provider.finish(current, _result(Outcome.SUCCEEDED))

        assert lost == [stale.job_id]
        assert await _stats_for(provider, queue) == QueueStats(queue)

    async def test_renewed_lease_keeps_job(self, provider: QueueProvider) -> None:
        """A lease renewed every third of its length never expires."""
        lease_s = self._lease_s(provider)
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue)])
        [record] = await provider.claim([queue], 1, worker_id=WORKER)

        lost: list[str] = []
        rescued: list[str] = []
        for _ in range(6):
            await self.advance_clock(lease_s / 3)
            lost += await provider.renew([record])
            rescued += [job.job_id for job in await provider.rescue()]
        await provider.finish(record, _result(Outcome.SUCCEEDED))

        assert lost == []
        assert record.job_id not in rescued

    async def test_expired_lease_without_attempts_dies(self, provider: QueueProvider) -> None:
        """An expired lease on a job with no attempts left makes it dead."""
        lease_s = self._lease_s(provider)
        queue = _fresh_name("queue")
        await provider.enqueue([_job(queue, max_attempts=1)])
        [record] = await provider.claim([queue], 1, worker_id=WORKER)

        rescued = await self._rescued(provider, record.job_id, lease_s)

        assert rescued.dead
        assert [job.job_id for job in await provider.dead_jobs(queue)] == [record.job_id]
        assert await provider.claim([queue], 10, worker_id=WORKER) == []

    # Engines ------------------------------------------------------------------------

    async def test_shutdown_requeues_running_job(self, provider: QueueProvider) -> None:
        """A job cancelled by engine shutdown goes back and runs again, attempt uncounted."""
        if not self.durable:
            pytest.skip("at-most-once provider: a cancelled job is not run again")
        queue = _fresh_name("queue")
        state = _ShutdownLog()
        engine = await self._engine(provider, state, queue, _hang_first_run, HANG_JOB)
        await provider.enqueue([NewJob(name=HANG_JOB, queue=queue)])
        await engine.start()
        try:
            await self._within(state.started.wait(), "the job starting")
        finally:
            await engine.stop(grace_s=0)
        stats = await _stats_for(provider, queue)

        rerun = await self._engine(provider, state, queue, _hang_first_run, HANG_JOB)
        await run_engine_until(rerun, state.rerun, self.liveness_s)

        assert (stats.ready + stats.scheduled, stats.running) == (1, 0)
        assert state.attempts == [1, 1]

    async def test_shutdown_buries_running_job(self, provider: QueueProvider) -> None:
        """On an at-most-once provider a job cancelled by shutdown is dead, not run twice."""
        if self.durable:
            pytest.skip("at-least-once provider: a cancelled job is put back to run again")
        queue = _fresh_name("queue")
        state = _ShutdownLog()
        engine = await self._engine(provider, state, queue, _hang_first_run, HANG_JOB)
        [created] = await provider.enqueue([NewJob(name=HANG_JOB, queue=queue)])
        await engine.start()
        try:
            await self._within(state.started.wait(), "the job starting")
        finally:
            await engine.stop(grace_s=0)

        assert [job.job_id for job in await provider.dead_jobs(queue)] == [created.job_id]
        assert await provider.claim([queue], 10, worker_id=WORKER) == []
        assert state.attempts == [1]

    async def test_engines_perform_each_job_once(self, provider: QueueProvider) -> None:
        """Jobs shared by eight engines on one storage each run exactly once."""
        queue = _fresh_name("queue")
        state = _PerformLog(expected=ENGINE_JOBS)
        jobs = [NewJob(name=RECORD_JOB, queue=queue, args=[i]) for i in range(ENGINE_JOBS)]
        engines = [
            await self._engine(provider, state, queue, _record_index, RECORD_JOB)
            for _ in range(ENGINE_COUNT)
        ]
        # Half the jobs wait before the engines start; the rest arrive while they run.
        half = ENGINE_JOBS // 2
        await provider.enqueue(jobs[:half])
        try:
            await asyncio.gather(*(engine.start() for engine in engines))
            for start in range(half, ENGINE_JOBS, 100):
                await provider.enqueue(jobs[start : start + 100])
            await self._within(state.done.wait(), f"{ENGINE_JOBS} jobs running")
        finally:
            await asyncio.gather(*(engine.stop() for engine in engines))

        assert sorted(state.counts) == list(range(ENGINE_JOBS))
        assert [index for index, runs in state.counts.items() if runs > 1] == []
        assert await _stats_for(provider, queue) == QueueStats(queue)
