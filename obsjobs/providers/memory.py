"""The in-memory queue: the default provider, for development, tests and one-process services.

Delivery is at most once: a job is handed to one worker once and never again, and every
job is lost when the process exits. Use a durable provider when losing jobs matters.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import secrets
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from obsjobs.protocols import (
    DeadJob,
    EnqueueResult,
    JobRecord,
    JobResult,
    NewJob,
    Outcome,
    QueueStats,
    RescuedJob,
)

__all__ = ["DEFAULT_MAX_DEAD_JOBS", "MemoryQueue"]

DEFAULT_MAX_DEAD_JOBS = 10_000
"""Dead jobs kept for inspection; the oldest are dropped past this count."""

_log = structlog.get_logger("obsjobs.memory")


@dataclass(slots=True)
class _Entry:
    job: NewJob
    job_id: str
    enqueued_ts: float
    available_ts: float
    enqueued_at: datetime
    available_at: datetime
    attempt: int = 0
    state: str = "ready"
    error: str | None = None
    failed_ts: float = 0.0
    seq: int = 0


@dataclass(slots=True)
class _Waiter:
    queues: frozenset[str]
    future: asyncio.Future[None] = field(repr=False)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class MemoryQueue:
    """Jobs held in this process: at most once, lost on restart, no server needed.

    - Ready jobs are claimed highest ``priority`` first, then earliest due, then in
      enqueue order. A worker waiting in :meth:`wait` wakes as soon as a job is
      enqueued, with no polling; delayed jobs wake it when they fall due.
    - A job cancelled mid-run by shutdown is kept as dead rather than run again, since
      running it twice would break the at-most-once promise. A job claimed but never
      started goes back to ready.
    - Dead jobs are kept up to ``max_dead_jobs``, oldest dropped first.
    - Closures (``NewJob.function``) are accepted, because nothing is serialized.
    - It is bound to the event loop it is first used on and is not thread-safe.

    Args:
        max_dead_jobs: how many dead jobs to keep.
        clock: wall-clock seconds since the epoch, injectable for tests.
    """

    def __init__(
        self,
        *,
        max_dead_jobs: int = DEFAULT_MAX_DEAD_JOBS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_dead_jobs < 0:
            raise ValueError(f"max_dead_jobs must be zero or more, got {max_dead_jobs}")
        self._clock = clock
        self._max_dead = max_dead_jobs
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._entries: dict[str, _Entry] = {}
        # Heaps of (-priority, available_ts, seq, job_id) per queue, so the smallest
        # tuple is the job to claim next.
        self._ready: defaultdict[str, list[tuple[int, float, int, str]]] = defaultdict(list)
        self._scheduled: list[tuple[float, int, str]] = []
        self._running: dict[str, _Entry] = {}
        self._dead: OrderedDict[str, _Entry] = OrderedDict()
        self._unique: dict[str, str] = {}
        self._last_ticks: dict[str, datetime] = {}
        self._waiters: list[_Waiter] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def durable(self) -> bool:
        return False

    @property
    def lease_s(self) -> float | None:
        return None

    async def open(self) -> None:
        """Do nothing: the queue needs no connection. Jobs survive close and reopen."""

    async def close(self) -> None:
        """Wake any waiter; jobs stay, so an engine can be started again on this queue."""
        self._wake_all()

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        """Store ``jobs``; a unique key or schedule tick seen before returns the old id."""
        now = self._clock()
        now_at = _utc(now)
        results: list[EnqueueResult] = []
        for job in jobs:
            results.append(self._add(job, now, now_at))
        self._wake(jobs)
        return results

    def _add(self, job: NewJob, now: float, now_at: datetime) -> EnqueueResult:
        # The tick check comes first: a tick that another scheduler already took is not
        # an overrun, even when that tick's job is still holding the unique key.
        tick_taken = False
        if job.schedule is not None and job.scheduled_time is not None:
            last = self._last_ticks.get(job.schedule)
            tick_taken = last is not None and job.scheduled_time <= last
        if tick_taken:
            return EnqueueResult("", created=False)
        if job.schedule is not None and job.scheduled_time is not None:
            # A tick skipped as an overrun below is still taken, as on durable
            # providers, so that a restart does not count it as missed again.
            self._last_ticks[job.schedule] = job.scheduled_time
        if job.unique_key is not None:
            existing = self._unique.get(job.unique_key)
            if existing is not None:
                return EnqueueResult(existing, created=False)

        job_id = f"{self._id_prefix}-{next(self._ids)}"
        available, available_at = now, now_at
        if job.run_at is not None and job.run_at.timestamp() > now:
            available, available_at = job.run_at.timestamp(), job.run_at
        entry = _Entry(job, job_id, now, available, now_at, available_at, seq=next(self._seq))
        self._entries[job_id] = entry
        if job.unique_key is not None:
            self._unique[job.unique_key] = job_id
        self._place(entry, now)
        return EnqueueResult(job_id)

    def _place(self, entry: _Entry, now: float) -> None:
        if entry.available_ts > now:
            entry.state = "scheduled"
            heapq.heappush(self._scheduled, (entry.available_ts, entry.seq, entry.job_id))
        else:
            entry.state = "ready"
            key = (-entry.job.priority, entry.available_ts, entry.seq, entry.job_id)
            heapq.heappush(self._ready[entry.job.queue], key)

    def _promote_due(self, now: float) -> None:
        scheduled = self._scheduled
        while scheduled and scheduled[0][0] <= now:
            _, _, job_id = heapq.heappop(scheduled)
            entry = self._entries.get(job_id)
            if entry is not None and entry.state == "scheduled":
                self._place(entry, now)

    async def claim(self, queues: Sequence[str], limit: int, *, worker_id: str) -> list[JobRecord]:
        """Hand out up to ``limit`` due jobs from ``queues``; each is handed out once."""
        self._promote_due(self._clock())
        heaps = [heap for queue in queues if (heap := self._ready.get(queue))]
        claimed: list[JobRecord] = []
        while heaps and len(claimed) < limit:
            heap = heaps[0] if len(heaps) == 1 else min(heaps, key=lambda h: h[0])
            *_, job_id = heapq.heappop(heap)
            if not heap:
                heaps.remove(heap)
            entry = self._entries[job_id]
            entry.attempt += 1
            entry.state = "running"
            self._running[job_id] = entry
            claimed.append(self._record(entry))
        return claimed

    def _record(self, entry: _Entry) -> JobRecord:
        job = entry.job
        return JobRecord(
            job_id=entry.job_id,
            name=job.name,
            queue=job.queue,
            args=job.args,
            kwargs=job.kwargs,
            attempt=entry.attempt,
            max_attempts=job.max_attempts,
            enqueued_at=entry.enqueued_at,
            available_at=entry.available_at,
            priority=job.priority,
            headers=job.headers,
            schedule=job.schedule,
            scheduled_time=job.scheduled_time,
            function=job.function,
        )

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        """Return when a job in ``queues`` is ready, or after ``timeout_s``."""
        now = self._clock()
        self._promote_due(now)
        if any(self._ready.get(queue) for queue in queues):
            return
        if self._scheduled:
            timeout_s = min(timeout_s, max(self._scheduled[0][0] - now, 0.0))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(frozenset(queues), future)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self, jobs: Sequence[NewJob]) -> None:
        if not self._waiters:
            return
        queues = {job.queue for job in jobs}
        for waiter in self._waiters:
            if not waiter.future.done() and not waiter.queues.isdisjoint(queues):
                waiter.future.set_result(None)

    def _wake_all(self) -> None:
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_result(None)

    async def finish(self, job: JobRecord, result: JobResult) -> None:
        """Record the attempt: remove, reschedule, keep as dead, or put back."""
        entry = self._running.pop(job.job_id, None)
        if entry is None:
            _log.warning("job.finish_unknown", job_id=job.job_id, job=job.name, queue=job.queue)
            return
        outcome = result.outcome
        if outcome is Outcome.SUCCEEDED:
            self._forget(entry)
        elif outcome is Outcome.RETRY:
            now = self._clock()
            retry_at = result.retry_at or _utc(now)
            entry.available_ts, entry.available_at = retry_at.timestamp(), retry_at
            entry.seq = next(self._seq)
            self._place(entry, now)
            self._wake([entry.job])
        elif outcome is Outcome.RELEASED:
            entry.attempt -= 1
            self._place(entry, self._clock())
            self._wake([entry.job])
        else:
            error = result.error
            if outcome is Outcome.CANCELLED:
                error = error or "cancelled while running (engine shutdown)"
            self._bury(entry, error)

    def _forget(self, entry: _Entry) -> None:
        del self._entries[entry.job_id]
        key = entry.job.unique_key
        if key is not None and self._unique.get(key) == entry.job_id:
            del self._unique[key]

    def _bury(self, entry: _Entry, error: str | None) -> None:
        self._forget(entry)
        if self._max_dead == 0:
            return
        entry.state = "dead"
        entry.error = error
        entry.failed_ts = self._clock()
        self._dead[entry.job_id] = entry
        while len(self._dead) > self._max_dead:
            self._dead.popitem(last=False)

    async def renew(self, jobs: Sequence[JobRecord]) -> list[str]:
        """Return no lost ids: in-memory jobs have no lease."""
        return []

    async def rescue(self) -> list[RescuedJob]:
        """Return nothing: in-memory jobs have no lease to expire."""
        return []

    async def stats(self) -> list[QueueStats]:
        """Count jobs per queue and state.

        NOTE: this walks every stored job, so a scrape costs time in proportion to the
        queue's size (about a millisecond per ten thousand jobs).
        """
        self._promote_due(self._clock())
        counts: defaultdict[str, dict[str, int]] = defaultdict(
            lambda: {"ready": 0, "scheduled": 0, "running": 0, "dead": 0}
        )
        oldest: dict[str, float] = {}
        for entry in itertools.chain(self._entries.values(), self._dead.values()):
            queue = entry.job.queue
            counts[queue][entry.state] += 1
            if entry.state == "ready" and entry.available_ts < oldest.get(queue, float("inf")):
                oldest[queue] = entry.available_ts
        for queue in self._ready:
            counts[queue]
        return [
            QueueStats(
                queue=queue,
                oldest_ready_at=_utc(oldest[queue]) if queue in oldest else None,
                **by_state,
            )
            for queue, by_state in sorted(counts.items())
        ]

    async def last_tick(self, schedule: str) -> datetime | None:
        return self._last_ticks.get(schedule)

    async def dead_jobs(self, queue: str | None = None, limit: int = 100) -> list[DeadJob]:
        """Return up to ``limit`` dead jobs, newest first."""
        found: list[DeadJob] = []
        if limit <= 0:
            return found
        for entry in reversed(self._dead.values()):
            if queue is not None and entry.job.queue != queue:
                continue
            found.append(
                DeadJob(
                    job_id=entry.job_id,
                    name=entry.job.name,
                    queue=entry.job.queue,
                    attempt=entry.attempt,
                    error=entry.error,
                    failed_at=_utc(entry.failed_ts),
                    args=entry.job.args,
                    kwargs=entry.job.kwargs,
                )
            )
            if len(found) >= limit:
                break
        return found

    async def requeue(self, job_ids: Sequence[str]) -> int:
        """Move dead jobs back to ready with their attempt count reset."""
        now = self._clock()
        moved: list[NewJob] = []
        for job_id in job_ids:
            entry = self._dead.pop(job_id, None)
            if entry is None:
                continue
            entry.attempt = 0
            entry.error = None
            entry.available_ts, entry.available_at = now, _utc(now)
            entry.seq = next(self._seq)
            self._entries[job_id] = entry
            key = entry.job.unique_key
            if key is not None:
                self._unique.setdefault(key, job_id)
            self._place(entry, now)
            moved.append(entry.job)
        self._wake(moved)
        return len(moved)
