"""Contract tests for leases and for engines sharing a provider."""

from __future__ import annotations

import asyncio

import pytest

from obsjobs.errors import LeaseLostError
from obsjobs.protocols import (
    NewJob,
    Outcome,
    QueueProvider,
    QueueStats,
)
from obsjobs.testing._engine_run import run_engine_until
from obsjobs.testing._support import (
    ENGINE_COUNT,
    ENGINE_JOBS,
    HANG_JOB,
    RECORD_JOB,
    WORKER,
    ContractBase,
    PerformLog,
    ShutdownLog,
    fresh_name,
    hang_first_run,
    job_result,
    new_job,
    record_index,
    stats_for,
)


class LeaseContract(ContractBase):
    """Contract tests for leases and for engines sharing a provider."""

    # Leases -------------------------------------------------------------------------

    async def test_expired_lease_is_rescued(self, provider: QueueProvider) -> None:
        """A job whose lease expires is rescued and claimed again with attempt raised."""
        lease_s = self._lease_s(provider)
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue, max_attempts=3)])
        [first] = await provider.claim([queue], 1, worker_id=WORKER)

        rescued = await self._rescued(provider, first.job_id, lease_s)
        [second] = await provider.claim([queue], 1, worker_id=WORKER)

        assert not rescued.dead
        assert second.job_id == first.job_id
        assert second.attempt == 2
        await provider.finish(second, job_result(Outcome.SUCCEEDED))

    async def test_stale_lease_finish_raises(self, provider: QueueProvider) -> None:
        """A worker that lost its lease cannot renew it or finish the job."""
        lease_s = self._lease_s(provider)
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue, max_attempts=3)])
        [stale] = await provider.claim([queue], 1, worker_id=WORKER)
        await self._rescued(provider, stale.job_id, lease_s)
        [current] = await provider.claim([queue], 1, worker_id=WORKER)

        lost = await provider.renew([stale])
        with pytest.raises(LeaseLostError):
            await provider.finish(stale, job_result(Outcome.SUCCEEDED))
        await provider.finish(current, job_result(Outcome.SUCCEEDED))

        assert lost == [stale.job_id]
        assert await stats_for(provider, queue) == QueueStats(queue)

    async def test_renewed_lease_keeps_job(self, provider: QueueProvider) -> None:
        """A lease renewed every third of its length never expires."""
        lease_s = self._lease_s(provider)
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue)])
        [record] = await provider.claim([queue], 1, worker_id=WORKER)

        lost: list[str] = []
        rescued: list[str] = []
        for _ in range(6):
            await self.advance_clock(lease_s / 3)
            lost += await provider.renew([record])
            rescued += [job.job_id for job in await provider.rescue()]
        await provider.finish(record, job_result(Outcome.SUCCEEDED))

        assert lost == []
        assert record.job_id not in rescued

    async def test_expired_lease_without_attempts_dies(self, provider: QueueProvider) -> None:
        """An expired lease on a job with no attempts left makes it dead."""
        lease_s = self._lease_s(provider)
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue, max_attempts=1)])
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
        queue = fresh_name("queue")
        state = ShutdownLog()
        engine = await self._engine(provider, state, queue, hang_first_run, HANG_JOB)
        await provider.enqueue([NewJob(name=HANG_JOB, queue=queue)])
        await engine.start()
        try:
            await self._within(state.started.wait(), "the job starting")
        finally:
            await engine.stop(grace_s=0)
        stats = await stats_for(provider, queue)

        rerun = await self._engine(provider, state, queue, hang_first_run, HANG_JOB)
        await run_engine_until(rerun, state.rerun, self.liveness_s)

        assert (stats.ready + stats.scheduled, stats.running) == (1, 0)
        assert state.attempts == [1, 1]

    async def test_shutdown_buries_running_job(self, provider: QueueProvider) -> None:
        """On an at-most-once provider a job cancelled by shutdown is dead, not run twice."""
        if self.durable:
            pytest.skip("at-least-once provider: a cancelled job is put back to run again")
        queue = fresh_name("queue")
        state = ShutdownLog()
        engine = await self._engine(provider, state, queue, hang_first_run, HANG_JOB)
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
        queue = fresh_name("queue")
        state = PerformLog(expected=ENGINE_JOBS)
        jobs = [NewJob(name=RECORD_JOB, queue=queue, args=[i]) for i in range(ENGINE_JOBS)]
        engines = [
            await self._engine(provider, state, queue, record_index, RECORD_JOB)
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
        assert await stats_for(provider, queue) == QueueStats(queue)
