"""Contract tests for results, schedule ticks, stats and waiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from obsjobs.protocols import (
    Outcome,
    QueueProvider,
    QueueStats,
)
from obsjobs.testing._support import (
    CLOCK_TOLERANCE,
    FAR_FUTURE,
    PLAIN_JOB,
    WORKER,
    ContractBase,
    bury,
    fresh_name,
    ids_of,
    job_result,
    new_job,
    stats_for,
)


class FinishContract(ContractBase):
    """Contract tests for results, schedule ticks, stats and waiting."""

    # Finishing ----------------------------------------------------------------------

    async def test_finish_succeeded_removes_job(self, provider: QueueProvider) -> None:
        """A succeeded job is gone: not claimable, not counted, not dead."""
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue)])
        [record] = await provider.claim([queue], 1, worker_id=WORKER)

        await provider.finish(record, job_result(Outcome.SUCCEEDED))

        assert await provider.claim([queue], 10, worker_id=WORKER) == []
        assert await stats_for(provider, queue) == QueueStats(queue)
        assert await provider.dead_jobs(queue) == []

    async def test_finish_retry_reschedules_job(self, provider: QueueProvider) -> None:
        """A retried job comes back at ``retry_at`` with its attempt raised."""
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue, max_attempts=3)])
        [first] = await provider.claim([queue], 1, worker_id=WORKER)
        retry_at = self.clock_now() + timedelta(seconds=self.delay_s)

        await provider.finish(
            first,
            job_result(Outcome.RETRY, error="boom", error_type="RuntimeError", retry_at=retry_at),
        )
        early = await provider.claim([queue], 10, worker_id=WORKER)
        scheduled = (await stats_for(provider, queue)).scheduled
        self._require_before(retry_at, "finish, claim and stats")
        await self.advance_clock(self.delay_s)
        [second] = await provider.claim([queue], 10, worker_id=WORKER)

        assert early == []
        assert scheduled == 1
        assert second.job_id == first.job_id
        assert second.attempt == 2
        await provider.finish(second, job_result(Outcome.SUCCEEDED))

    async def test_finish_dead_keeps_job(self, provider: QueueProvider) -> None:
        """A dead job is listed by dead_jobs with its error and counted as dead."""
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue, args=[7], kwargs={"to": "a@example.org"})])
        [record] = await provider.claim([queue], 1, worker_id=WORKER)

        await provider.finish(
            record, job_result(Outcome.DEAD, error="ValueError: bad input", error_type="ValueError")
        )
        dead = await provider.dead_jobs(queue)

        assert [job.job_id for job in dead] == [record.job_id]
        assert dead[0].error == "ValueError: bad input"
        assert (dead[0].name, dead[0].queue, dead[0].attempt) == (PLAIN_JOB, queue, 1)
        assert (dead[0].args, dead[0].kwargs) == ([7], {"to": "a@example.org"})
        assert (await stats_for(provider, queue)).dead == 1
        assert await provider.claim([queue], 10, worker_id=WORKER) == []

    async def test_requeue_revives_dead_job(self, provider: QueueProvider) -> None:
        """requeue() moves only dead jobs back to ready, with a fresh attempt count."""
        queue = fresh_name("queue")
        [dead_id] = await bury(provider, queue, 1)
        [waiting] = await provider.enqueue([new_job(queue, priority=-1)])

        moved = await provider.requeue([dead_id, waiting.job_id])
        records = await provider.claim([queue], 10, worker_id=WORKER)

        assert moved == 1
        assert await provider.dead_jobs(queue) == []
        assert ids_of(records) == [dead_id, waiting.job_id]
        assert records[0].attempt == 1

    async def test_finish_released_keeps_attempt(self, provider: QueueProvider) -> None:
        """A released job is claimable again and the attempt is not counted."""
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue)])
        [first] = await provider.claim([queue], 1, worker_id=WORKER)

        await provider.finish(first, job_result(Outcome.RELEASED))
        [again] = await provider.claim([queue], 1, worker_id=WORKER)

        assert again.job_id == first.job_id
        assert again.attempt == 1

    async def test_finish_cancelled_requeues_job(self, provider: QueueProvider) -> None:
        """On a durable provider a cancelled job is put back without counting the attempt."""
        if not self.durable:
            pytest.skip("at-most-once provider: a cancelled job is not run again")
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue, max_attempts=2)])
        [first] = await provider.claim([queue], 1, worker_id=WORKER)

        await provider.finish(first, job_result(Outcome.CANCELLED, error="cancelled"))
        [again] = await provider.claim([queue], 1, worker_id=WORKER)

        assert again.job_id == first.job_id
        assert again.attempt == 1

    async def test_finish_cancelled_buries_job(self, provider: QueueProvider) -> None:
        """On an at-most-once provider a cancelled job is kept as dead."""
        if self.durable:
            pytest.skip("at-least-once provider: a cancelled job is put back to run again")
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue)])
        [record] = await provider.claim([queue], 1, worker_id=WORKER)

        await provider.finish(record, job_result(Outcome.CANCELLED, error="cancelled"))

        assert [job.job_id for job in await provider.dead_jobs(queue)] == [record.job_id]
        assert await provider.claim([queue], 10, worker_id=WORKER) == []

    async def test_dead_jobs_filters_and_limits(self, provider: QueueProvider) -> None:
        """dead_jobs() returns only the given queue's jobs, at most ``limit``."""
        mail, images = fresh_name("mail"), fresh_name("images")
        mail_ids = await bury(provider, mail, 3)
        image_ids = await bury(provider, images, 1)

        limited = await provider.dead_jobs(mail, limit=2)
        all_mail = await provider.dead_jobs(mail)
        all_images = await provider.dead_jobs(images)

        assert len(limited) == 2
        assert sorted(job.job_id for job in all_mail) == sorted(mail_ids)
        assert [job.job_id for job in all_images] == image_ids

    # Schedule ticks -----------------------------------------------------------------

    async def test_schedule_tick_enqueued_once(self, provider: QueueProvider) -> None:
        """A tick sent twice is added once, and the second result has an empty id."""
        queue, schedule = fresh_name("queue"), fresh_name("schedule")
        tick = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)
        job = new_job(queue, schedule=schedule, scheduled_time=tick)

        [first] = await provider.enqueue([job])
        [second] = await provider.enqueue([job])

        assert first.created
        assert not second.created
        # The scheduler reads an empty id as "another scheduler took this tick". An id
        # would mean that the schedule's previous job is still running (an overrun).
        assert second.job_id == ""
        assert (await stats_for(provider, queue)).ready == 1

    async def test_schedule_tick_dedup_outlives_job(self, provider: QueueProvider) -> None:
        """A tick sent again after its job succeeded is still not added."""
        queue, schedule = fresh_name("queue"), fresh_name("schedule")
        job = new_job(queue, schedule=schedule, scheduled_time=datetime(2026, 3, 8, tzinfo=UTC))
        await provider.enqueue([job])
        [record] = await provider.claim([queue], 1, worker_id=WORKER)
        await provider.finish(record, job_result(Outcome.SUCCEEDED))

        [again] = await provider.enqueue([job])

        assert not again.created
        assert await provider.claim([queue], 10, worker_id=WORKER) == []

    async def test_last_tick_returns_latest(self, provider: QueueProvider) -> None:
        """last_tick() returns the latest tick sent, whatever the sending order."""
        queue, schedule = fresh_name("queue"), fresh_name("schedule")
        ticks = [datetime(2026, 3, 8, hour, tzinfo=UTC) for hour in (6, 8, 7)]

        before = await provider.last_tick(schedule)
        for tick in ticks:
            await provider.enqueue([new_job(queue, schedule=schedule, scheduled_time=tick)])
        latest = await provider.last_tick(schedule)

        assert before is None
        assert latest == max(ticks)

    async def test_overrun_tick_still_taken(self, provider: QueueProvider) -> None:
        """A tick skipped because its unique key is busy still counts as the last tick."""
        queue, schedule, key = fresh_name("queue"), fresh_name("schedule"), fresh_name("key")
        first, second = (datetime(2026, 3, 8, hour, tzinfo=UTC) for hour in (6, 7))

        [running] = await provider.enqueue(
            [new_job(queue, schedule=schedule, scheduled_time=first, unique_key=key)]
        )
        [skipped] = await provider.enqueue(
            [new_job(queue, schedule=schedule, scheduled_time=second, unique_key=key)]
        )
        latest = await provider.last_tick(schedule)

        assert running.created
        assert not skipped.created
        assert skipped.job_id == running.job_id
        assert latest == second

    # Stats --------------------------------------------------------------------------

    async def test_stats_count_jobs_by_state(self, provider: QueueProvider) -> None:
        """stats() counts a queue's ready, scheduled, running and dead jobs."""
        queue = fresh_name("queue")
        later = self.clock_now() + FAR_FUTURE
        await provider.enqueue(
            [new_job(queue), new_job(queue), new_job(queue), new_job(queue, run_at=later)]
        )
        running, doomed = await provider.claim([queue], 2, worker_id=WORKER)

        await provider.finish(doomed, job_result(Outcome.DEAD, error="contract"))
        stats = await stats_for(provider, queue)

        assert (stats.ready, stats.scheduled, stats.running, stats.dead) == (1, 1, 1, 1)
        await provider.finish(running, job_result(Outcome.SUCCEEDED))

    async def test_stats_track_oldest_ready_job(self, provider: QueueProvider) -> None:
        """oldest_ready_at is when the oldest ready job became ready, or None."""
        queue = fresh_name("queue")
        empty = await stats_for(provider, queue)
        before = self.clock_now()
        await provider.enqueue([new_job(queue)])
        after = self.clock_now()
        await self.advance_clock(self.delay_s)
        await provider.enqueue([new_job(queue)])

        both = await stats_for(provider, queue)
        await provider.claim([queue], 1, worker_id=WORKER)
        newer = await stats_for(provider, queue)
        await provider.claim([queue], 1, worker_id=WORKER)
        none_ready = await stats_for(provider, queue)

        assert empty.oldest_ready_at is None
        assert both.oldest_ready_at is not None
        assert before - CLOCK_TOLERANCE <= both.oldest_ready_at <= after + CLOCK_TOLERANCE
        assert newer.oldest_ready_at is not None
        assert newer.oldest_ready_at > both.oldest_ready_at
        assert none_ready.oldest_ready_at is None

    # Waiting ------------------------------------------------------------------------

    async def test_wait_wakes_on_enqueue(self, provider: QueueProvider) -> None:
        """wait() returns soon after another provider on the storage enqueues a job."""
        queue = fresh_name("queue")
        async with self._opened_sibling(provider) as watcher:
            waiter = asyncio.create_task(watcher.wait([queue], timeout_s=3 * self.liveness_s))
            for _ in range(20):
                await asyncio.sleep(0)  # let the waiter start waiting

            await provider.enqueue([new_job(queue)])

            await self._within(waiter, "wait() returning after an enqueue")

    async def test_wait_returns_when_job_ready(self, provider: QueueProvider) -> None:
        """wait() returns at once when a job is ready already."""
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue)])

        await self._within(
            provider.wait([queue], timeout_s=3 * self.liveness_s), "wait() on a ready job"
        )

    async def test_wait_returns_after_timeout(self, provider: QueueProvider) -> None:
        """wait() on an empty queue returns after its timeout, without raising."""
        queue = fresh_name("queue")

        await self._within(provider.wait([queue], timeout_s=0.05), "wait() timing out")
