"""Contract tests for enqueue, claim order and unique keys."""

from __future__ import annotations

from datetime import timedelta

from obsjobs.protocols import (
    Outcome,
    QueueProvider,
)
from obsjobs.testing._support import (
    CLOCK_TOLERANCE,
    FAR_FUTURE,
    PLAIN_JOB,
    TIME_PRECISION,
    TRACEPARENT,
    WORKER,
    ContractBase,
    fresh_name,
    ids_of,
    job_result,
    new_job,
    stats_for,
)


class ClaimContract(ContractBase):
    """Contract tests for enqueue, claim order and unique keys."""

    # Identity, enqueue and claim ----------------------------------------------------

    async def test_provider_reports_declared_durability(self, provider: QueueProvider) -> None:
        """The provider's durable flag equals the subclass's, and it has a name."""
        assert provider.durable is self.durable, "set `durable` on the subclass to match"
        assert isinstance(provider.name, str)
        assert provider.name != ""

    async def test_claim_returns_enqueued_fields(self, provider: QueueProvider) -> None:
        """A claimed record carries the job's fields unchanged, with attempt 1 and UTC times."""
        queue = fresh_name("queue")
        job = new_job(
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
        await provider.finish(record, job_result(Outcome.SUCCEEDED))

    async def test_bulk_enqueue_results_in_order(self, provider: QueueProvider) -> None:
        """A batch returns one created result per job, in the batch's order."""
        queue = fresh_name("queue")

        results = await provider.enqueue([new_job(queue, args=[index]) for index in range(5)])
        records = await provider.claim([queue], 10, worker_id=WORKER)

        assert len(results) == 5
        assert all(result.created for result in results)
        assert len({result.job_id for result in results}) == 5
        assert [record.args for record in records] == [[index] for index in range(5)]
        assert ids_of(records) == [result.job_id for result in results]
        assert await provider.enqueue([]) == []

    async def test_claim_orders_priority_due_enqueue(self, provider: QueueProvider) -> None:
        """Claims go by priority, then due time, then enqueue order."""
        queue = fresh_name("queue")
        now = self.clock_now()
        step = timedelta(seconds=self.delay_s)
        # Jobs without a delay go first, so each is due before every delayed job.
        plain = [new_job(queue, kwargs={"label": f"plain-{index}"}) for index in range(3)]
        await provider.enqueue([*plain, new_job(queue, kwargs={"label": "low"}, priority=-1)])
        await provider.enqueue(
            [
                new_job(queue, kwargs={"label": "due-late"}, run_at=now + 2 * step),
                new_job(queue, kwargs={"label": "due-early"}, run_at=now + step),
                new_job(queue, kwargs={"label": "urgent"}, run_at=now + 2 * step, priority=5),
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
        queue = fresh_name("queue")
        await provider.enqueue([new_job(queue, args=[index]) for index in range(5)])

        first = await provider.claim([queue], 2, worker_id=WORKER)
        second = await provider.claim([queue], 10, worker_id=WORKER)
        third = await provider.claim([queue], 10, worker_id=WORKER)

        assert len(first) == 2
        assert len(second) == 3
        assert set(ids_of(first)).isdisjoint(ids_of(second))
        assert third == []

    async def test_claim_keeps_queues_isolated(self, provider: QueueProvider) -> None:
        """A claim returns jobs only from the queues it names."""
        mail, images = fresh_name("mail"), fresh_name("images")
        await provider.enqueue([new_job(mail), new_job(images), new_job(mail)])

        from_mail = await provider.claim([mail], 10, worker_id=WORKER)
        from_images = await provider.claim([images], 10, worker_id=WORKER)
        await provider.enqueue([new_job(mail), new_job(images)])
        from_both = await provider.claim([mail, images], 10, worker_id=WORKER)

        assert [record.queue for record in from_mail] == [mail, mail]
        assert [record.queue for record in from_images] == [images]
        assert sorted(record.queue for record in from_both) == sorted([mail, images])

    async def test_delayed_job_waits_until_due(self, provider: QueueProvider) -> None:
        """A job with ``run_at`` is scheduled, not claimable, until it is due."""
        queue = fresh_name("queue")
        due = self.clock_now() + timedelta(seconds=self.delay_s)
        near, far = await provider.enqueue(
            [new_job(queue, run_at=due), new_job(queue, run_at=self.clock_now() + FAR_FUTURE)]
        )

        early = await provider.claim([queue], 10, worker_id=WORKER)
        stats_early = await stats_for(provider, queue)
        self._require_before(due, "enqueue, claim and stats")
        await self.advance_clock(self.delay_s)
        later = await provider.claim([queue], 10, worker_id=WORKER)

        assert early == []
        assert (stats_early.scheduled, stats_early.ready) == (2, 0)
        assert ids_of(later) == [near.job_id]
        assert abs(later[0].available_at - due) <= TIME_PRECISION
        assert far.job_id not in ids_of(later)

    # Unique keys --------------------------------------------------------------------

    async def test_unique_key_dedupes_waiting_running(self, provider: QueueProvider) -> None:
        """A duplicate of a waiting or running job returns its id and adds nothing."""
        queue, key = fresh_name("queue"), fresh_name("key")
        [first] = await provider.enqueue([new_job(queue, unique_key=key)])

        [while_waiting] = await provider.enqueue([new_job(queue, unique_key=key, args=[2])])
        ready = (await stats_for(provider, queue)).ready
        [record] = await provider.claim([queue], 10, worker_id=WORKER)
        [while_running] = await provider.enqueue([new_job(queue, unique_key=key, args=[3])])
        after_running = await stats_for(provider, queue)

        assert (while_waiting.job_id, while_waiting.created) == (first.job_id, False)
        assert ready == 1
        assert record.args == []
        assert (while_running.job_id, while_running.created) == (first.job_id, False)
        assert (after_running.ready, after_running.running) == (0, 1)
        await provider.finish(record, job_result(Outcome.SUCCEEDED))

    async def test_unique_key_holds_while_scheduled(self, provider: QueueProvider) -> None:
        """A delayed job keeps its unique key taken before it is due."""
        queue, key = fresh_name("queue"), fresh_name("key")
        later = self.clock_now() + FAR_FUTURE

        [first] = await provider.enqueue([new_job(queue, unique_key=key, run_at=later)])
        [second] = await provider.enqueue([new_job(queue, unique_key=key)])

        assert (second.job_id, second.created) == (first.job_id, False)
        assert (await stats_for(provider, queue)).ready == 0

    async def test_unique_key_within_one_batch(self, provider: QueueProvider) -> None:
        """The second job of a batch with the same unique key is not added."""
        queue, key = fresh_name("queue"), fresh_name("key")

        first, second = await provider.enqueue(
            [new_job(queue, unique_key=key, args=[1]), new_job(queue, unique_key=key, args=[2])]
        )
        records = await provider.claim([queue], 10, worker_id=WORKER)

        assert first.created
        assert (second.job_id, second.created) == (first.job_id, False)
        assert [record.args for record in records] == [[1]]

    async def test_unique_key_free_after_finish(self, provider: QueueProvider) -> None:
        """Once its job succeeded or died, a unique key can be used again."""
        queue, key = fresh_name("queue"), fresh_name("key")
        for outcome in (Outcome.SUCCEEDED, Outcome.DEAD):
            [first] = await provider.enqueue([new_job(queue, unique_key=key)])
            [record] = await provider.claim([queue], 10, worker_id=WORKER)
            await provider.finish(record, job_result(outcome, error="contract"))

            [again] = await provider.enqueue([new_job(queue, unique_key=key)])
            [record_again] = await provider.claim([queue], 10, worker_id=WORKER)
            await provider.finish(record_again, job_result(Outcome.SUCCEEDED))

            assert again.created, f"key still taken after {outcome.value}"
            assert again.job_id != first.job_id
