"""Inspection and upkeep for the PostgreSQL provider: stats, ticks, dead jobs, pruning."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Final

import structlog
from psycopg import sql

from obsjobs.protocols import DeadJob, QueueStats
from obsjobs.providers.postgres_jobs import dead_job_from_row, utc
from obsjobs.providers.postgres_sql import Statements

__all__ = ["PRUNE_BATCH", "Maintenance"]

PRUNE_BATCH: Final = 10_000
"""Rows deleted by one prune statement, so a prune never holds many row locks at once."""

_log = structlog.get_logger("obsjobs.postgres")

Fetch = Callable[[str, sql.Composed, dict[str, Any]], Awaitable[list[tuple[Any, ...]]]]
"""Runs one statement for an action ("read queue stats") and returns its rows."""


def parse_job_id(job_id: str) -> int | None:
    """Return ``job_id`` as the table's bigint id, or ``None`` if it cannot be one."""
    if not (isinstance(job_id, str) and job_id.isascii() and job_id.isdigit()):
        return None
    value = int(job_id)
    return value if 0 < value < 2**63 else None


class Maintenance:
    """The provider's read-mostly statements, apart from the claim and result path.

    ``known_queues`` is shared with the provider, which adds every queue it enqueues to
    or claims from, so that :meth:`stats` reports them even when they are empty.
    """

    def __init__(self, fetch: Fetch, statements: Statements, known_queues: set[str]) -> None:
        self._fetch = fetch
        self._sql = statements
        self._known_queues = known_queues

    async def stats(self) -> list[QueueStats]:
        """Count jobs per queue and state; known queues without jobs report zeros."""
        rows = await self._fetch("read queue stats", self._sql.stats, {})
        found = {
            queue: QueueStats(
                queue=queue,
                ready=ready,
                scheduled=scheduled,
                running=running,
                dead=dead,
                oldest_ready_at=utc(oldest) if oldest is not None else None,
            )
            for queue, ready, scheduled, running, dead, oldest in rows
        }
        for queue in self._known_queues:
            found.setdefault(queue, QueueStats(queue=queue))
        return [found[queue] for queue in sorted(found)]

    async def last_tick(self, schedule: str) -> datetime | None:
        """Return the last tick taken for ``schedule``, or ``None``."""
        rows = await self._fetch(
            "read a schedule's last tick", self._sql.last_tick, {"name": schedule}
        )
        return utc(rows[0][0]) if rows else None

    async def dead_jobs(self, queue: str | None, limit: int) -> list[DeadJob]:
        """Return up to ``limit`` dead jobs, newest first.

        Raises:
            ValueError: ``limit`` is not an int of zero or more.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an int of zero or more, got {limit!r}")
        if limit == 0:
            return []
        params: dict[str, Any] = {"limit": limit, "queue": queue}
        query = self._sql.dead_jobs_all if queue is None else self._sql.dead_jobs_in_queue
        rows = await self._fetch("list dead jobs", query, params)
        return [dead_job_from_row(row) for row in rows]

    async def requeue(self, job_ids: Sequence[str]) -> int:
        """Move the dead jobs among ``job_ids`` back to waiting; return how many moved."""
        ids = [job_id for job_id in map(parse_job_id, job_ids) if job_id is not None]
        if not ids:
            return 0
        rows = await self._fetch(
            "requeue dead jobs", self._sql.requeue, {"ids": ids, "channel": self._sql.channel}
        )
        return int(rows[0][0])

    async def prune(self, age_s: float, max_batches: int | None) -> int:
        """Delete succeeded jobs finished over ``age_s`` ago, batch by batch; return the count.

        Stops when a batch finds fewer than :data:`PRUNE_BATCH` rows, or after
        ``max_batches`` batches when it is given.
        """
        deleted = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            rows = await self._fetch(
                "prune finished jobs", self._sql.prune, {"age_s": age_s, "limit": PRUNE_BATCH}
            )
            count = int(rows[0][0])
            deleted += count
            batches += 1
            if count < PRUNE_BATCH:
                break
        if deleted:
            _log.info("postgres.pruned", deleted=deleted, schema=self._sql.schema)
        return deleted
