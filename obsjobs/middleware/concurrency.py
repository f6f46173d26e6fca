"""A concurrency limit as provider middleware: global, per queue and per job name."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import final

from obsjobs.middleware.base import Middleware
from obsjobs.protocols import JobRecord, JobResult, Outcome

__all__ = ["ConcurrencyLimit", "ConcurrencyStatistics"]


@dataclass(frozen=True, slots=True)
class ConcurrencyStatistics:
    """Permits in use, and jobs claimed but held back for a job-name permit."""

    in_use: int
    by_queue: Mapping[str, int]
    by_job: Mapping[str, int]
    held: int


@final
class ConcurrencyLimit(Middleware):
    """Caps how many jobs run at once in this process.

    A job takes a permit of each limit that applies to it when it is claimed: the
    global one, its queue's and its job name's. Permits come back when the engine
    reports the attempt's result, whatever it is (success, failure, retry, cancellation,
    release), because the engine reports every claimed job exactly once.

    Queue and global limits shrink the claim itself, so the provider hands out no more
    than can run. A job-name limit can only be checked after the claim; a job over it
    is held here, still claimed (its lease is renewed with the running jobs), and handed
    to the engine as soon as a permit of its name frees up. Held jobs are given back to
    the provider on close.

    The limits are per process; for a limit across many workers, size each worker's
    limit as a share of it.

    Example::

        provider = compose(MemoryQueue(), ConcurrencyLimit(global_limit=8, per_job={"report": 1}))
    """

    def __init__(
        self,
        *,
        global_limit: int | None = None,
        per_queue: Mapping[str, int] | None = None,
        per_job: Mapping[str, int] | None = None,
    ) -> None:
        self._global_limit = _check_limit("global_limit", global_limit)
        self._queue_limits = {
            q: _check_limit(f"per_queue[{q!r}]", n) for q, n in (per_queue or {}).items()
        }
        self._job_limits = {
            j: _check_limit(f"per_job[{j!r}]", n) for j, n in (per_job or {}).items()
        }
        self._in_use = 0
        self._by_queue: dict[str, int] = {}
        self._by_job: dict[str, int] = {}
        self._holding: dict[str, JobRecord] = {}
        self._permitted: set[str] = set()
        self._freed = asyncio.Event()

    def statistics(self) -> ConcurrencyStatistics:
        """Return the permits in use now."""
        return ConcurrencyStatistics(
            in_use=self._in_use,
            by_queue=dict(self._by_queue),
            by_job=dict(self._by_job),
            held=len(self._holding),
        )

    async def claim(self, queues: Sequence[str], limit: int, *, worker_id: str) -> list[JobRecord]:
        granted = self._grant_held(limit)
        budget = self._global_free(limit - len(granted))
        # One claim across all queues keeps the provider's priority order. Queues with
        # their own limit are claimed one by one, so that each claim fits its room.
        groups = [list(queues)] if not self._queue_limits else [[queue] for queue in queues]
        for group in groups:
            room = min(budget, *(self._queue_free(queue) for queue in group))
            if room <= 0:
                continue
            for job in await self.inner.claim(group, room, worker_id=worker_id):
                if self._job_free(job.name) > 0:
                    self._take(job)
                    granted.append(job)
                    budget -= 1
                else:
                    self._holding[job.job_id] = job
        return granted

    def _grant_held(self, limit: int) -> list[JobRecord]:
        granted: list[JobRecord] = []
        for job_id, job in list(self._holding.items()):
            if len(granted) >= limit or self._global_free(1) < 1:
                break
            if self._queue_free(job.queue) > 0 and self._job_free(job.name) > 0:
                del self._holding[job_id]
                self._take(job)
                granted.append(job)
        return granted

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        if any(self._eligible(job) for job in self._holding.values()):
            return
        self._freed.clear()
        has_room = self._global_free(1) > 0 and any(self._queue_free(q) > 0 for q in queues)
        if not has_room:
            # Every permit is taken: new jobs could not be claimed anyway, so wait for
            # a permit instead of returning at once and spinning on empty claims.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), timeout_s)
            return
        inner_wait = asyncio.ensure_future(self.inner.wait(queues, timeout_s))
        freed_wait = asyncio.ensure_future(self._freed.wait())
        try:
            await asyncio.wait([inner_wait, freed_wait], return_when=asyncio.FIRST_COMPLETED)
        finally:
            inner_wait.cancel()
            freed_wait.cancel()
            await asyncio.gather(inner_wait, freed_wait, return_exceptions=True)

    async def finish(self, job: JobRecord, result: JobResult) -> None:
        try:
            await self.inner.finish(job, result)
        finally:
            self._give_back(job)

    async def renew(self, jobs: Sequence[JobRecord]) -> list[str]:
        return await self.inner.renew([*jobs, *self._holding.values()])

    async def close(self) -> None:
        held = list(self._holding.values())
        self._holding.clear()
        now = datetime.now(UTC)
        try:
            for job in held:
                await self.inner.finish(job, JobResult(Outcome.RELEASED, started_at=now))
        finally:
            await self.inner.close()

    def _eligible(self, job: JobRecord) -> bool:
        return (
            self._global_free(1) > 0
            and self._queue_free(job.queue) > 0
            and self._job_free(job.name) > 0
        )

    def _global_free(self, wanted: int) -> int:
        if self._global_limit is None:
            return wanted
        return max(0, min(wanted, self._global_limit - self._in_use))

    def _queue_free(self, queue: str) -> int:
        limit = self._queue_limits.get(queue)
        return 1 << 30 if limit is None else limit - self._by_queue.get(queue, 0)

    def _job_free(self, name: str) -> int:
        limit = self._job_limits.get(name)
        return 1 << 30 if limit is None else limit - self._by_job.get(name, 0)

    def _take(self, job: JobRecord) -> None:
        self._in_use += 1
        self._by_queue[job.queue] = self._by_queue.get(job.queue, 0) + 1
        self._by_job[job.name] = self._by_job.get(job.name, 0) + 1
        self._permitted.add(job.job_id)

    def _give_back(self, job: JobRecord) -> None:
        if job.job_id not in self._permitted:
            return
        self._permitted.discard(job.job_id)
        self._in_use -= 1
        self._by_queue[job.queue] -= 1
        self._by_job[job.name] -= 1
        self._freed.set()


def _check_limit(parameter: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{parameter} must be a positive int or None, got {value!r}")
    return value
